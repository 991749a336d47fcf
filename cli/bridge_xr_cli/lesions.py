"""``bridge lesions``: connected-component lesion tables per ROI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bridge_xr_cli._common import StoreArg, handle_errors, out


@handle_errors
def lesions(
    store: StoreArg,
    objects: Annotated[
        list[str], typer.Option("--objects", help="IMAGE=THRESHOLD of a probability map (repeat)")
    ],
    output: Annotated[Path, typer.Option(help="Parquet file: one row per lesion")],
    roi_labels: Annotated[
        str | None, typer.Option(help="label image of drawn ROIs on the same grid")
    ] = None,
    rois: Annotated[
        Path | None,
        typer.Option(help="drawn ROI polygons, CSV: roi, x_px, y_px [, z_px] (or x_um, y_um)"),
    ] = None,
    mri: Annotated[
        str | None,
        typer.Option(help="registered MRI (e.g. exvivo_mri/T2star) for each ROI's status"),
    ] = None,
    positive_below: Annotated[
        float | None, typer.Option(help="--mri: hypointense below this value (T2* map: ms)")
    ] = None,
    positive_fraction: Annotated[
        float, typer.Option(help="--mri: ROI positive when this fraction of it is hypointense")
    ] = 0.1,
    status: Annotated[
        Path | None, typer.Option(help="or the status rated by eye, CSV: roi, mri_status")
    ] = None,
    via: Annotated[
        list[str] | None, typer.Option(help="registration chain from the MRI, when ambiguous")
    ] = None,
    figure: Annotated[
        Path | None, typer.Option(help="with a status: box plots negative vs positive (.png/.svg)")
    ] = None,
    roi_output: Annotated[
        Path | None,
        typer.Option(
            help="Parquet per object and ROI (default: OUTPUT with _rois); with a "
            "status, the Mann-Whitney table goes beside it as _mann_whitney.csv"
        ),
    ] = None,
) -> None:
    """Count and measure lesions (connected components of thresholded maps) in each ROI."""
    from bridge_xr.errors import InvalidInputError
    from bridge_xr.lesions.tables import lesion_tables

    parsed: dict[str, float] = {}
    for item in objects:
        image, sep, value = item.rpartition("=")
        try:
            parsed[image] = float(value)
        except ValueError:
            raise InvalidInputError(f"--objects takes IMAGE=THRESHOLD; got {item!r}") from None
        if not sep or not image:
            raise InvalidInputError(f"--objects takes IMAGE=THRESHOLD; got {item!r}")
    roi_out = roi_output or output.with_name(f"{output.stem}_rois.parquet")
    if figure is not None and mri is None and status is None:
        raise InvalidInputError(
            "--figure compares MRI-positive and -negative ROIs: give --mri or --status"
        )
    if figure is not None and figure.suffix.lower() not in (".png", ".svg"):
        raise InvalidInputError(f"--figure {str(figure)!r} must end in .png or .svg")
    res = lesion_tables(store, objects=parsed, roi_labels=roi_labels, rois=rois, mri=mri,
                        positive_below=positive_below, positive_fraction=positive_fraction,
                        status=status, via=via or None, output=output, roi_output=roi_out)  # fmt: skip
    table = Table(title=f"lesions -> {output}, per ROI -> {roi_out}")
    has_status = "mri_status" in res.rois
    cols = ["object", "roi", "lesions", "total µm³", "median µm³"] + (["MRI"] if has_status else [])
    for col in cols:
        table.add_column(col)
    for r in res.rois.itertuples():
        row = [
            str(r.object),
            str(r.roi),
            str(r.lesions),
            f"{r.total_um3:.4g}",
            f"{r.median_um3:.4g}",
        ]
        table.add_row(*row, *([str(r.mri_status)] if has_status else []))
    out.print(table)
    if not res.comparison.empty:
        where = roi_out.with_name(f"{roi_out.stem}_mann_whitney.csv")
        res.comparison.to_csv(where, index=False)
        cmp = Table(title=f"positive vs negative ROIs (Mann-Whitney U) -> {where}")
        for col in ("object", "metric", "median −", "median +", "n −", "n +", "U", "p"):
            cmp.add_column(col)
        for c in res.comparison.itertuples():
            cmp.add_row(str(c.object), str(c.metric), f"{c.median_negative:.4g}",
                        f"{c.median_positive:.4g}", str(c.n_a), str(c.n_b),
                        f"{c.statistic:.4g}", f"{c.p:.3g}")  # fmt: skip
        out.print(cmp)
    elif has_status:
        out.print("no comparison: every ROI has the same MRI status")
    if figure is not None:
        from bridge_xr.lesions.status import status_figure

        paths = status_figure(res.rois, res.comparison, figure)
        out.print(f"figure -> {', '.join(str(p) for p in paths)}")


def _image_threshold(item: str, option: str) -> tuple[str, float | str]:
    from bridge_xr.errors import InvalidInputError

    image, sep, value = item.rpartition("=")
    if not sep or not image or not value:
        raise InvalidInputError(f"{option} takes IMAGE=THRESHOLD or IMAGE=otsu; got {item!r}")
    if value.strip().lower() == "otsu":
        return image, "otsu"
    try:
        return image, float(value)
    except ValueError:
        raise InvalidInputError(
            f"{option} takes IMAGE=THRESHOLD or IMAGE=otsu; got {item!r}"
        ) from None


@handle_errors
def colocalize(
    store: StoreArg,
    nuclei: Annotated[
        str, typer.Option(help="IMAGE=THRESHOLD (or =otsu) of the nuclear stain, e.g. DAPI")
    ],
    marker: Annotated[
        list[str],
        typer.Option("--marker", help="IMAGE=THRESHOLD (or =otsu) on the nucleus mean (repeat)"),
    ],
    output: Annotated[
        Path, typer.Option(help="CSV/Parquet per nucleus; the summary beside it as _summary.csv")
    ],
    min_volume: Annotated[
        float, typer.Option(help="drop objects smaller than this, µm³ (debris)")
    ] = 0.0,
) -> None:
    """Nuclei from a DAPI channel, per-nucleus marker positivity, double positives, agreement."""
    from bridge_xr.lesions.coloc import colocalize as run

    image, thr = _image_threshold(nuclei, "--nuclei")
    markers = dict(_image_threshold(m, "--marker") for m in marker)
    res = run(store, nuclei=image, nuclei_threshold=thr, markers=markers,
              min_volume_um3=min_volume, output=output)  # fmt: skip
    used = ", ".join(f"{k} {v:.4g}" for k, v in res.thresholds.items())
    out.print(f"{len(res.nuclei)} nuclei -> {output} (thresholds: {used})")
    table = Table(title="marker agreement (test against reference)")
    for col in ("reference", "test", "ref +", "test +", "double +", "sensitivity", "specificity"):
        table.add_column(col)
    for r in res.summary.itertuples():
        table.add_row(str(r.reference), str(r.test), str(r.reference_positive),
                      str(r.test_positive), str(r.double_positive), f"{r.sensitivity:.1%}",
                      f"{r.specificity:.1%}")  # fmt: skip
    if not res.summary.empty:
        out.print(table)
