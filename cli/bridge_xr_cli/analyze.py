"""``bridge normalize | mask | extract | extract-study | stats | plot | report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge_xr.errors import InvalidInputError
from bridge_xr_cli._common import (
    Live,
    MethodChoice,
    MethodOpt,
    Overwrite,
    StoreArg,
    StudyArg,
    Via,
    console,
    handle_errors,
    out,
)


def parse_thresholds(items: list[str] | None) -> dict[str, float]:
    """``["glioma=600", "angiogram=1000"]`` or ``["0.5"]`` (all channels) -> {name: value}."""
    result: dict[str, float] = {}
    for item in items or []:
        name, _, value = item.rpartition("=")
        try:
            result[name or "*"] = float(value)
        except ValueError:
            raise InvalidInputError(
                f"--threshold takes NAME=VALUE or VALUE (e.g. glioma=600); got {item!r}"
            ) from None
    return result


def parse_bins(text: str | None) -> list[float] | None:
    """``0,0.05,0.25`` -> [0, 0.05, 0.25] (increasing)."""
    if text is None:
        return None
    try:
        bins = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidInputError(f"--bins takes comma-separated numbers; got {text!r}") from None
    if len(bins) < 2 or any(b <= a for a, b in zip(bins, bins[1:], strict=False)):
        raise InvalidInputError(f"--bins must be at least two increasing numbers; got {text!r}")
    return bins


@handle_errors
def normalize(
    store: StoreArg,
    image: Annotated[str, typer.Option("--image", help="MRI image to normalise")],
    reference_mask: Annotated[
        str, typer.Option("--reference-mask", help="normal-appearing grey matter mask (MRI grid)")
    ],
    image_out: Annotated[str, typer.Option("--image-out", help="where to write the z image")],
    label: Annotated[
        int | None, typer.Option(help="use only this label of the mask (default: any > 0)")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """z-normalise an MRI image to the normal-appearing grey matter (Shinohara et al. 2014)."""
    from bridge_xr.extract.masks import zscore_normalize

    stats = zscore_normalize(
        store,
        image=image,
        reference_mask=reference_mask,
        image_out=image_out,
        label=label,
        overwrite=overwrite,
    )
    out.print(
        f"{image_out}: z = (I - {stats['mean']:.6g}) / {stats['sd']:.6g} "
        f"over {stats['n_voxels']} reference voxels"
    )


@handle_errors
def mask(
    store: StoreArg,
    mri: Annotated[str, typer.Option("--mri", help="MRI image whose grid the mask is on")],
    output: Annotated[
        str, typer.Option("--output", help="mask image path, e.g. masks/d060/analysis")
    ],
    vessels: Annotated[
        str | None, typer.Option(help="vessel microscopy (angiogram or mask)")
    ] = None,
    vessel_threshold: Annotated[float | None, typer.Option(help="binarise vessels above")] = None,
    vessel_max: Annotated[
        float, typer.Option(help="exclude voxels with more vessel volume fraction than this")
    ] = 0.05,
    tumour: Annotated[str | None, typer.Option(help="tumour microscopy (channel or mask)")] = None,
    tumour_threshold: Annotated[float | None, typer.Option(help="binarise tumour above")] = None,
    artefact: Annotated[
        list[str] | None, typer.Option(help="artefact label image(s) to exclude (repeatable)")
    ] = None,
    min_coverage: Annotated[
        float, typer.Option(help="keep voxels at least this much covered by microscopy")
    ] = 0.999,
    nagm_output: Annotated[
        str | None, typer.Option(help="also write the normal-appearing grey matter mask here")
    ] = None,
    method: MethodOpt = MethodChoice.exact,
    overwrite: Overwrite = False,
    via: Via = None,
) -> None:
    """Analysis mask on the MRI grid from microscopy: 0 excluded, 1 NAGM (w/o glioma), 2 glioma."""
    from bridge_xr.extract.masks import analysis_mask

    counts = analysis_mask(
        store,
        mri=mri,
        output=output,
        vessels=vessels,
        vessel_threshold=vessel_threshold,
        vessel_max=vessel_max,
        tumour=tumour,
        tumour_threshold=tumour_threshold,
        artefacts=artefact or [],
        min_coverage=min_coverage,
        nagm_output=nagm_output,
        overwrite=overwrite,
        method=method.value,
        via=via,
    )
    out.print(
        f"{output}: {counts['nagm']} NAGM, {counts['glioma']} glioma, "
        f"{counts['excluded']} excluded voxels"
    )


@handle_errors
def extract(
    store: StoreArg,
    mri: Annotated[str, typer.Option("--mri", help="MRI image (one row per voxel)")],
    microscopy: Annotated[
        list[str],
        typer.Option(
            "--microscopy",
            help="microscopy image(s) registered to the MRI; IMAGE#CHANNEL for one channel",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", help="tables folder (Parquet)")],
    mask: Annotated[str | None, typer.Option(help="keep voxels where this mask > 0")] = None,
    mri_z: Annotated[str | None, typer.Option("--mri-z", help="normalised MRI image")] = None,
    reference_mask: Annotated[
        str | None, typer.Option("--reference-mask", help="z-normalise on the fly to this mask")
    ] = None,
    threshold: Annotated[
        list[str] | None, typer.Option(help="binarise: NAME=VALUE per channel, or VALUE for all")
    ] = None,
    method: MethodOpt = MethodChoice.exact,
    bins: Annotated[str, typer.Option(help="density category edges")] = "0,0.05,0.25,0.5,0.75,1",
    subject: Annotated[str | None, typer.Option(help="subject name (default: store name)")] = None,
    session: Annotated[str | None, typer.Option(help="session (default: the MRI's)")] = None,
    overwrite: Overwrite = False,
    via: Via = None,
) -> None:
    """Per-voxel table: MRI, normalised MRI, microscopy density per MRI voxel (Parquet)."""
    from bridge_xr.extract.tables import extract_table, write_table
    from bridge_xr.scene.chains import using

    with using(via) as used:
        table = extract_table(
            store,
            mri=mri,
            microscopy=microscopy,
            mask=mask,
            mri_z=mri_z,
            reference_mask=reference_mask,
            thresholds=parse_thresholds(threshold),
            method=method.value,
            subject=subject,
            session=session,
            bins=parse_bins(bins) or [],
            via=via,
        )
        from bridge_xr.scene.chains import chain_error
        from bridge_xr.scene.mapping import path_between

        errors = {
            p: chain_error(path_between(store, mri, p.partition("#")[0], via=via))
            for p in microscopy
        }
    prov = {
        "mri": mri,
        "microscopy": list(microscopy),
        "registrations": list(used),
        "registration_errors": errors,
    }
    with console.status("extracting voxels"):
        written = write_table(table, output, overwrite=overwrite, provenance=prov)
    import pyarrow.parquet as pq

    n = sum(pq.ParquetFile(p).metadata.num_rows for p in written)  # footers only
    out.print(f"{n} voxels -> {', '.join(str(p.parent) for p in written)}")


@handle_errors
def extract_study(
    study: StudyArg,
    output: Annotated[
        str, typer.Option("--output", help="tables folder or s3:// prefix (Parquet)")
    ],
    threshold: Annotated[
        list[str] | None, typer.Option(help="binarise: NAME=VALUE per channel, or VALUE for all")
    ] = None,
    method: MethodOpt = MethodChoice.exact,
    bins: Annotated[str, typer.Option(help="density category edges")] = "0,0.05,0.25,0.5,0.75,1",
    workers: Annotated[
        int, typer.Option(help="start a local dask-distributed cluster with this many processes")
    ] = 0,
    overwrite: Overwrite = False,
    via: Via = None,
    live: Live = False,
) -> None:
    """Every subject and session of a study into one partitioned table (dask, or a cluster)."""
    from bridge_xr.extract.study import extract_study as run

    cluster = client = None
    if workers > 0:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
        client = Client(cluster)
    try:
        with console.status("extracting the study"):
            plans, written = run(
                study,
                output,
                thresholds=parse_thresholds(threshold),
                method=method.value,
                bins=parse_bins(bins) or [],
                overwrite=overwrite,
                via=via,
                live=live,
            )
    finally:
        if client is not None:
            client.close()
            cluster.close()  # type: ignore[union-attr]
    for p in plans:
        out.print(f"{p.subject}/{p.session}: {p.mri} x {', '.join(p.microscopy)}")
    out.print(f"{len(written)} partitions -> {output}")


def _days(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out_days: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            out_days[name.strip()] = float(value)
        except ValueError:
            raise InvalidInputError(
                f"--days takes SESSION=DAY,... e.g. d060=60; got {text!r}"
            ) from None
        if not sep:
            raise InvalidInputError(f"--days takes SESSION=DAY,... e.g. d060=60; got {text!r}")
    return out_days


@handle_errors
def longitudinal(
    study: Annotated[Path, typer.Argument(help="study folder of subject stores")],
    subject: Annotated[str, typer.Option(help="subject (store name without .ome.zarr)")],
    output: Annotated[Path, typer.Option(help="tables folder; writes OUTPUT/longitudinal/")],
    threshold: Annotated[
        list[str] | None, typer.Option(help="binarise: NAME=VALUE per channel, or VALUE for all")
    ] = None,
    days: Annotated[
        str | None, typer.Option(help="session days, e.g. d060=60,d074=74 (default: from names)")
    ] = None,
    metric: Annotated[str, typer.Option(help="rigid registration metric: mi, ms, cc")] = "mi",
    growth_channel: Annotated[str, typer.Option(help="channel whose growth is binned")] = "glioma",
    growth_bins: Annotated[
        str, typer.Option(help="growth-rate edges, % density per day")
    ] = "-2,1,4,7",
    reregister: Annotated[
        bool, typer.Option("--reregister", help="redo the session registrations")
    ] = False,
    via: Via = None,
) -> None:
    """Sessions onto the first: rigid MRI registration, overlapping masks, change per day."""
    from bridge_xr.extract.longitudinal import run_longitudinal
    from bridge_xr.io.study import find_subject

    stores = {subject: find_subject(study, subject)}
    with console.status(f"longitudinal {subject}"):
        df, regs, _written = run_longitudinal(
            stores[subject],
            output,
            days=_days(days),
            thresholds=parse_thresholds(threshold),
            metric=metric,
            growth_channel=growth_channel,
            growth_bins=parse_bins(growth_bins) or [],
            overwrite=reregister,
            via=via,
        )
    for r in regs:
        out.print(
            f"{r['name']}: rotation {r.get('rotation_deg', float('nan')):.2f} deg, "
            f"translation {', '.join(f'{v:.1f}' for v in r.get('translation_um', []))} µm"
        )
    n = df.groupby("session").size()
    out.print(
        f"{n.iloc[0]} voxels in every session's mask, {len(n)} sessions -> {output}/longitudinal"
    )


@handle_errors
def stats(
    tables: Annotated[
        Path,
        typer.Argument(help="tables folder, or one .parquet/.csv table (lesions, vessel ratings)"),
    ],
    response: Annotated[str, typer.Option(help="column to compare, e.g. mri_z")],
    by: Annotated[str, typer.Option(help="grouping column, e.g. fraction_glioma")],
    test: Annotated[
        str,
        typer.Option(
            help="anova-tukey | kruskal-dunn | mann-whitney | welch | spearman | equivalence "
            "(--response CATEGORY --by TIMEPOINT)"
        ),
    ] = "kruskal-dunn",
    margin: Annotated[
        str, typer.Option(help="equivalence margin on proportions, e.g. 5% or 0.05")
    ] = "5%",
    reference: Annotated[
        str | None, typer.Option(help="equivalence: reference time point (default: first)")
    ] = None,
    bins: Annotated[
        str | None, typer.Option(help="bin a numeric --by into categories at these edges")
    ] = None,
    where: Annotated[
        str | None, typer.Option(help="pandas query to select rows, e.g. 'mask_label == 2'")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="write omnibus/pairs/summary CSVs with this prefix")
    ] = None,
    weight: Annotated[
        str | None, typer.Option(help="equivalence: count column (e.g. voxels per row)")
    ] = None,
) -> None:
    """Group comparisons as tidy tables (test, n per group, statistic, p, effect size)."""
    from bridge_xr.extract.tables import read_tables
    from bridge_xr.stats.dispatch import run_test

    text = margin.strip()
    try:
        m = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise InvalidInputError(f"--margin takes 5% or 0.05; got {margin!r}") from None
    if not 0 < m < 1:
        raise InvalidInputError(f"--margin must lie between 0 and 100 %; got {margin!r}")
    df = read_tables(tables, where=where)
    omnibus, pairs = run_test(df, response=response, by=by, test=test, bins=parse_bins(bins),
                              margin=m, reference=reference, weight=weight)  # fmt: skip
    summary = omnibus.attrs.get("summary")
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        omnibus.to_csv(f"{output}_omnibus.csv", index=False)
        pairs.to_csv(f"{output}_pairs.csv", index=False)
        if summary is not None:
            summary.to_csv(f"{output}_summary.csv", index=False)
    if summary is not None:
        out.print(summary.to_string(index=False))
    out.print(omnibus.drop(columns=[], errors="ignore").to_string(index=False))
    if not pairs.empty:
        out.print(pairs.to_string(index=False))


@handle_errors
def plot(
    tables: Annotated[Path, typer.Argument(help="tables folder")],
    kind: Annotated[str, typer.Option(help="box | heatmap | timeline")],
    output: Annotated[Path, typer.Option(help="figure path (.png also writes .svg)")],
    response: Annotated[str, typer.Option(help="y column")] = "mri_z",
    by: Annotated[
        str | None, typer.Option(help="x column (box: categories; heatmap: density)")
    ] = None,
    bins: Annotated[str | None, typer.Option(help="category edges for box plots")] = None,
    where: Annotated[str | None, typer.Option(help="pandas query to select rows")] = None,
) -> None:
    """Figures of the tables: box plots per category with n, heatmaps, per-voxel timelines."""
    from bridge_xr.extract.tables import read_tables
    from bridge_xr.stats import plots
    from bridge_xr.stats.categories import DENSITY_BINS

    df = read_tables(tables, where=where)
    if kind not in plots.KINDS:
        raise InvalidInputError(f"--kind is one of {', '.join(plots.KINDS)}; got {kind!r}")
    if kind in ("box", "heatmap") and not by:
        raise InvalidInputError(f"--kind {kind} needs --by (e.g. fraction_glioma)")
    if kind == "box":
        paths = plots.box(
            df, response=response, by=by or "", output=output, bins=parse_bins(bins) or DENSITY_BINS
        )
    elif kind == "heatmap":
        paths = plots.heatmap(df, x=by or "", y=response, output=output)
    else:
        paths = plots.timeline(df, response=response, output=output)
    out.print("wrote " + ", ".join(str(p) for p in paths))


@handle_errors
def report(
    study: StudyArg,
    output: Annotated[Path, typer.Option(help="report folder")],
    tables: Annotated[
        str | None, typer.Option(help="tables folder or s3:// prefix (default: STUDY/tables)")
    ] = None,
    live: Live = False,
    include: Annotated[
        list[Path] | None,
        typer.Option(help="a further table (.csv/.parquet) or figure (.png/.svg) to show (repeat)"),
    ] = None,
) -> None:
    """HTML report of a study: registrations, tables, statistics, figures and provenance."""
    from bridge_xr.report.study import write_report

    index = write_report(study, output, tables=tables, live=live, include=include or ())
    out.print(f"report: {index}")


@handle_errors
def vessel_diameters(
    store: StoreArg,
    mask: Annotated[
        list[str], typer.Option("--mask", help="vessel mask, one per session (repeat)")
    ],
    bins: Annotated[str, typer.Option(help="diameter category edges in µm, e.g. 0,10,20,40,inf")],
    output: Annotated[Path, typer.Option(help="CSV/Parquet: voxels and share per category")],
) -> None:
    """Share of vessel voxels per local-diameter category, per mask (stability over sessions)."""
    from bridge_xr.learn.vessels import diameter_distribution

    edges = parse_bins(bins)
    df = diameter_distribution(store, masks=mask, bins=edges or [], output=output)
    out.print(df.pivot(index="diameter_um", columns="session", values="proportion")
              .to_string(float_format=lambda v: f"{v:.1%}"))  # fmt: skip
    out.print(f"-> {output}; stability: bridge stats {output} --response diameter_um --by session "
              "--test equivalence --weight voxels")  # fmt: skip


@handle_errors
def region_densities(
    store: StoreArg,
    mri: Annotated[str, typer.Option("--mri", help="MRI whose grid the regions are drawn on")],
    microscopy: Annotated[str, typer.Option("--microscopy", help="microscopy chained to it")],
    regions: Annotated[str, typer.Option("--regions", help="label image of the regions")],
    output: Annotated[Path, typer.Option("--output", help="CSV (or .parquet) to write")],
    channel: Annotated[str | None, typer.Option(help="microscopy channel")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="positive above this value (volume fraction)")
    ] = None,
    method: Annotated[
        str, typer.Option(help="resliced (any chain), exact or bilinear")
    ] = "resliced",
    names: Annotated[
        str | None, typer.Option(help="region names, e.g. 1=core,2=infiltration")
    ] = None,
) -> None:
    """Positive volume fraction of a microscopy channel per region of an MRI (core vs rim)."""
    from bridge_xr.extract.regions import region_densities as run

    if method not in ("resliced", "exact", "bilinear"):
        raise InvalidInputError(f"--method {method!r}: use resliced, exact or bilinear")
    named: dict[int, str] = {}
    for part in (names or "").split(","):
        if not part.strip():
            continue
        key, _, val = part.partition("=")
        if not key.strip().isdigit() or not val.strip():
            raise InvalidInputError(f"--names {names!r}: use LABEL=NAME pairs, e.g. 1=core")
        named[int(key)] = val.strip()
    table = run(
        store, microscopy=microscopy, mri=mri, regions=regions, channel=channel,
        threshold=threshold, method=method, names=named,  # type: ignore[arg-type]
    )  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".parquet":
        table.to_parquet(output, index=False)
    else:
        table.to_csv(output, index=False)
    for _, r in table.iterrows():
        out.print(
            f"  region {r['region']} {r['name']}: volume fraction {r['volume_fraction']:.4g} "
            f"of {r['covered_volume_um3'] / 1e9:.4g} mm³ covered"
        )
    acc = table.attrs["density"]["chain_error"]["accumulated_um"]
    out.print(
        f"wrote {output}; accumulated registration error "
        + (f"{acc:.3g} µm" if acc is not None else "unknown (a hop has no error figure)")
    )
