"""``bridge landmarks``, ``register``, ``compare-models``, ``transform-points``, ``inter-rater``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bridge_xr.errors import InvalidInputError
from bridge_xr_cli._common import (
    Fixed,
    KernelChoice,
    KernelOpt,
    ModelChoice,
    ModelOpt,
    Moving,
    StoreArg,
    console,
    handle_errors,
    out,
    read_points,
)

landmarks_app = typer.Typer(help="Import and export landmark sets.", no_args_is_help=True)

Store = StoreArg
Smooth = Annotated[
    float,
    typer.Option(
        "--smoothing", help="TPS smoothing λ (0 = interpolating; -1 = choose by leave-one-out)"
    ),
]


@landmarks_app.command("import")
@handle_errors
def landmarks_import(
    files: Annotated[
        list[Path],
        typer.Argument(help="BigWarp CSV/JSON, or Slicer moving + fixed .fcsv/.mrk.json"),
    ],
    to: Annotated[Path, typer.Option("--to", help="canonical landmark CSV to write")],
    store: Annotated[
        str | None,
        typer.Option(help="subject store: convert Slicer world (scanner RAS) to intrinsic"),
    ] = None,
    fixed_image: Annotated[str | None, typer.Option(help="fixed image in --store")] = None,
    moving_image: Annotated[str | None, typer.Option(help="moving image in --store")] = None,
) -> None:
    """Convert 3D Slicer or BigWarp landmarks to the canonical CSV (µm, x y z)."""
    from bridge_xr.register.landmarks import import_landmarks, to_intrinsic, write_csv

    df = import_landmarks(list(files))
    if store is not None:
        from bridge_xr.io.read import read_image

        if not (fixed_image and moving_image):
            raise InvalidInputError("--store needs --fixed-image and --moving-image")
        df = to_intrinsic(
            df,
            fixed_image=read_image(store, fixed_image),
            moving_image=read_image(store, moving_image),
        )
    write_csv(df, to)
    out.print(f"wrote {len(df)} landmark pairs ({int(df['active'].sum())} active) to {to}")


@landmarks_app.command("export")
@handle_errors
def landmarks_export(
    landmarks: Annotated[Path, typer.Argument(help="canonical landmark CSV")],
    fmt: Annotated[
        str, typer.Option("--format", help="bigwarp-csv, bigwarp-json, slicer-fcsv, slicer-json")
    ],
    output: Annotated[
        Path, typer.Option("--output", help="output file (Slicer: <stem>_moving/_fixed)")
    ],
) -> None:
    """Write a canonical landmark CSV in 3D Slicer or BigWarp format."""
    from bridge_xr.register.landmarks import export_landmarks, read_csv

    for p in export_landmarks(read_csv(landmarks), fmt, output):
        out.print(f"wrote {p}")


@handle_errors
def register(
    store: Store,
    fixed: Fixed,
    moving: Moving,
    landmarks: Annotated[Path, typer.Option("--landmarks", help="canonical landmark CSV")],
    model: ModelOpt = ModelChoice.tps,
    name: Annotated[
        str, typer.Option("--name", help="registration (scene edge) name")
    ] = "registration",
    kernel: KernelOpt = KernelChoice.r,
    smoothing: Smooth = 0.0,
    field_spacing: Annotated[
        str | None, typer.Option(help="TPS field grid spacing, e.g. 12.5um")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="JSON report (RMSE, LOO TRE ...)")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace a registration of that name")
    ] = False,
    tre_map: Annotated[
        bool, typer.Option("--tre-map", help="write a bootstrap TRE map image (qc/<name>/tre_map)")
    ] = False,
    fle: Annotated[
        float | None,
        typer.Option(help="fiducial error RMS (µm) for the TRE map; default LOO TRE / sqrt(2)"),
    ] = None,
    refine: Annotated[
        str | None,
        typer.Option(
            help="refine landmarks by local mutual-information registration: rigid, affine or bspline"
        ),
    ] = None,
    refine_radius: Annotated[str, typer.Option(help="half-size of the refinement cube")] = "150um",
    refined_landmarks: Annotated[
        Path | None, typer.Option(help="write the refined landmarks to this CSV")
    ] = None,
    qc: Annotated[
        bool,
        typer.Option(
            "--qc/--no-qc",
            help="with --report: QC figures next to it (<report>_qc.png, _qc_fine.png, _tre.png)",
        ),
    ] = True,
    current: Annotated[
        bool,
        typer.Option(
            "--current", help="use this one for the image pair when several registrations join it"
        ),
    ] = False,
) -> None:
    """Fit a landmark registration (moving onto fixed) and store it as a scene edge."""
    from bridge_xr.model.units import parse_length_um
    from bridge_xr.register.landmarks import read_csv
    from bridge_xr.report.registration_run import Refinement, register_with_report

    rec, rep = register_with_report(
        store, fixed=fixed, moving=moving, landmarks=read_csv(landmarks),
        model=model.value, name=name, kernel=kernel.value, smoothing=smoothing,
        field_spacing_um=parse_length_um(field_spacing) if field_spacing else None,
        overwrite=overwrite, tre_map=tre_map, fle_um=fle, current=current,
        refine=None if refine is None else Refinement(
            model=refine, radius_um=parse_length_um(refine_radius),  # type: ignore[arg-type]
            write_to=refined_landmarks,
        ),
        report=report, qc=qc,
    )  # fmt: skip
    extra = (
        f", field error ≤ {rep['certified_max_error_um']:.3g} µm"
        if rep.get("certified_max_error_um") is not None
        else ""
    )
    out.print(
        f"{rec.name}: {model} from {rep['n_landmarks']} landmarks, RMSE {rep['rmse_um']:.3g} µm, "
        f"LOO TRE RMS {rep['loo_tre_rms_um']:.3g} µm{extra}"
    )


@handle_errors
def set_current(
    store: Store,
    name: Annotated[str, typer.Argument(help="registration to mark current for its image pair")],
) -> None:
    """Mark a registration current: chains through its image pair use it without --via."""
    from bridge_xr.scene.edges import set_current as run

    rec = run(store, name)
    out.print(f"{name} is now current for {rec.moving} -> {rec.fixed}")


@handle_errors
def compare_models(
    store: Store,
    fixed: Fixed,
    moving: Moving,
    landmarks: Annotated[
        list[Path], typer.Option("--landmarks", help="landmark CSV (repeat: one per dataset)")
    ],
    kernel: KernelOpt = KernelChoice.r,
    smoothing: Smooth = 0.0,
    output: Annotated[
        Path, typer.Option("--output", help="folder for table, statistics and figure")
    ] = Path("model-comparison"),
) -> None:
    """Compare rigid, similarity, affine and TPS (LOO TRE; Kruskal-Wallis + Dunn-Bonferroni)."""
    import pandas as pd

    from bridge_xr.io.subject import read_subject
    from bridge_xr.register.landmarks import read_csv
    from bridge_xr.report.compare import compare_models as run
    from bridge_xr.report.compare import plot_comparison

    subject = read_subject(store)
    for p in (fixed, moving):
        if p not in subject.images:
            raise InvalidInputError(f"no image {p!r} in {store}; `bridge info` lists them")
    datasets = {p.stem: read_csv(p) for p in landmarks}
    per_lm, per_ds, omni, pairs = run(datasets, kernel=kernel.value, smoothing=smoothing)
    output.mkdir(parents=True, exist_ok=True)
    per_lm.to_csv(output / "loo_tre_per_landmark.csv", index=False)
    per_ds.to_csv(output / "models.csv", index=False)
    pd.concat([omni, pairs], ignore_index=True).to_csv(output / "statistics.csv", index=False)
    plot_comparison(per_lm, per_ds, output / "model_comparison.png")
    out.print(per_ds.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    out.print(f"Kruskal-Wallis p = {omni['p'].item():.3g}; tables and figure in {output}")


@handle_errors
def transform_points(
    store: Store,
    points: Annotated[
        Path, typer.Argument(help="CSV with x,y,z in µm (other columns pass through)")
    ],
    src: Annotated[str, typer.Option("--from", help="image the points are in")],
    dst: Annotated[str, typer.Option("--to", help="image to map them into")],
    output: Annotated[Path, typer.Option("--output", help="output CSV")],
    via: Annotated[
        str | None,
        typer.Option(
            "--via",
            "--transform",
            help="registration names in chain order (NAME[,NAME...]) when several join the images",
        ),
    ] = None,
) -> None:
    """Map points (cells, centrelines ...) between images through the registrations, exactly.

    ``--from``/``--to`` name images (their intrinsic space) or coordinate systems
    (``IMAGE#SYSTEM``, or a scene system's name); transforms authored by other tools in the
    scene are followed too.
    """
    import numpy as np

    from bridge_xr.scene.mapping import map_points_any

    df = read_points(points)
    mapped, chain = map_points_any(store, df[["x", "y", "z"]].to_numpy(float), src, dst, via=via)
    lost = int(np.isnan(mapped).any(axis=1).sum())
    if lost:
        typer.echo(
            f"warning: {lost} points have no place in {dst} (a TPS fold without inverse, or a "
            "section without a registration); written as NaN",
            err=True,
        )
    res = df.copy()
    res[["x", "y", "z"]] = mapped
    output.parent.mkdir(parents=True, exist_ok=True)
    res.to_csv(output, index=False, float_format="%.10g")
    out.print(
        f"mapped {len(res)} points from {src} to {dst} via {','.join(chain) or 'identity'} -> {output}"
    )
    from bridge_xr.io.subject import read_subject
    from bridge_xr.scene.chains import chain_error

    regs = read_subject(store).registrations
    hops = [(regs[n], True) for n in chain if n in regs]
    if len(hops) > 1:
        err = chain_error(hops)
        parts = ", ".join(
            f"{h['registration']} {h['loo_tre_rms_um'] or h['rmse_um'] or float('nan'):.3g} µm"
            for h in err["hops"]
        )
        total = err["accumulated_um"]
        out.print(
            f"landmark error per hop (LOO TRE RMS): {parts}; accumulated "
            + (f"{total:.3g} µm (root sum of squares)" if total is not None else "unknown")
        )


@handle_errors
def inter_rater(
    store: Store,
    fixed: Fixed,
    moving: Moving,
    landmarks: Annotated[list[Path], typer.Option("--landmarks", help="one CSV per rater (two)")],
    model: ModelOpt = ModelChoice.tps,
    kernel: KernelOpt = KernelChoice.r,
    report: Annotated[Path | None, typer.Option("--report")] = None,
) -> None:
    """Distance between two raters' registrations on the paper's 50x50-per-slice grid and a dense grid."""
    from bridge_xr.register import inter_rater as run
    from bridge_xr.register.landmarks import read_csv

    if len(landmarks) != 2:
        raise InvalidInputError("inter-rater needs exactly two --landmarks files (one per rater)")
    result = run(
        store, moving=moving, landmark_sets=[read_csv(p) for p in landmarks],
        model=model.value, kernel=kernel.value,
    )  # fmt: skip
    paper, dense = result["grid_50x50_per_slice"], result["dense_grid"]
    if report is not None:
        report.write_text(json.dumps(result, indent=2))
    out.print(
        f"inter-rater RMSE {paper['rmse_um']:.3g} µm (50x50 per slice), {dense['rmse_um']:.3g} µm (dense grid)"
    )


@handle_errors
def registrations(
    where: Annotated[str, typer.Argument(help="subject store, or a study folder / s3:// prefix")],
    output: Annotated[
        Path | None, typer.Option(help="CSV/Parquet: one row per registration")
    ] = None,
    live: Annotated[
        bool, typer.Option(help="read an s3:// study without an archive manifest")
    ] = False,
) -> None:
    """Landmark count, RMSE and LOO-TRE of every registration (compare with `bridge stats`)."""
    from bridge_xr.register.summary import registration_table

    df = registration_table(where, live=live, output=output)
    cols = [
        "subject",
        "registration",
        "sequence",
        "model",
        "n_landmarks",
        "rmse_um",
        "loo_tre_rms_um",
    ]
    out.print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if output:
        out.print(f"{len(df)} registrations -> {output}")


@handle_errors
def register_slices(
    store: Store,
    fixed: Annotated[
        str, typer.Option("--fixed", help="resliced MRI, slices as thick as the sections")
    ],
    moving: Annotated[str, typer.Option("--moving", help="section stack (bridge convert slices)")],
    landmarks: Annotated[
        Path,
        typer.Option("--landmarks", help="canonical landmark CSV (moving z names the section)"),
    ],
    model: ModelOpt = ModelChoice.tps,
    name: Annotated[str, typer.Option("--name", help="registration name")] = "slices",
    kernel: Annotated[
        KernelChoice, typer.Option("--kernel", help="2D TPS kernel: r2logr (thin plate) or r")
    ] = KernelChoice.r2logr,
    smoothing: Annotated[float, typer.Option("--smoothing", help="TPS smoothing λ")] = 0.0,
    channel: Annotated[
        str | None, typer.Option("--channel", help="section channel for the overlay (e.g. DAPI)")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="JSON report; _errors.png and _overlay.png beside it"),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace a registration of that name")
    ] = False,
    current: Annotated[
        bool, typer.Option("--current", help="use this one for the image pair")
    ] = False,
) -> None:
    """Register each section of a slice stack in 2D onto its MRI slice (one scene edge)."""
    from bridge_xr.register.landmarks import read_csv
    from bridge_xr.report.slices_run import register_slices_with_report

    rec, rep = register_slices_with_report(
        store, fixed=fixed, moving=moving, landmarks=read_csv(landmarks), model=model.value,
        name=name, kernel=kernel.value, smoothing=smoothing, overwrite=overwrite,
        current=current, report=report, channel=channel,
    )  # fmt: skip
    for row in rep["per_slice"]:
        loo = row["loo_tre_rms_um"]
        out.print(
            f"  section {row['section']:>3} -> MRI slice {row['mri_slice']:>3}: "
            f"{row['n_landmarks']} landmarks, RMSE {row['rmse_um']:.3g} µm"
            + (f", LOO TRE {loo:.3g} µm" if loo is not None else "")
            + (" FOLDED" if row["folded"] else "")
        )
    missing = rep["unregistered_slices"]
    out.print(
        f"{rec.name}: {len(rep['per_slice'])} sections ({model.value} each), RMSE "
        f"{rep['rmse_um']:.3g} µm"
        + (f"; sections without landmarks (not mapped): {missing}" if missing else "")
        + ("" if rep["consecutive"] else "; sections pair with non-consecutive MRI slices")
    )


def _three_lengths_mm(text: str, option: str) -> list[float]:
    from bridge_xr.model.units import parse_length_um

    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise InvalidInputError(f"{option} needs three lengths x,y,z (e.g. 12.5mm,-3mm,40mm)")
    if not all(any(ch.isalpha() or ch == "µ" for ch in p) for p in parts):
        raise InvalidInputError(f"{option} {text!r}: give every length with its unit (mm, um)")
    return [parse_length_um(p) / 1000.0 for p in parts]


@handle_errors
def place_sample(
    store: Store,
    clinical: Annotated[str, typer.Option("--clinical", help="clinical MRI (scanner affine)")],
    sample: Annotated[str, typer.Option("--sample", help="the sample's ex vivo MRI")],
    position: Annotated[
        str | None,
        typer.Option("--position", help="navigated point in scanner RAS, e.g. 12.5mm,-3mm,40mm"),
    ] = None,
    pose: Annotated[
        Path | None,
        typer.Option("--pose", help="4x4 pose file: sample x,y,z mm -> scanner RAS mm (rigid)"),
    ] = None,
    sample_point: Annotated[
        str | None,
        typer.Option(help="with --position: the navigated point in the sample (default centre)"),
    ] = None,
    navigation_error: Annotated[
        str | None, typer.Option(help="navigation error, e.g. 2mm (kept as the hop's error)")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="registration name")] = "navigation",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace that name")] = False,
) -> None:
    """Place a resected sample's ex vivo MRI in the clinical MRI from neuronavigation."""
    from bridge_xr.model.units import parse_length_um
    from bridge_xr.register.navigation import place_sample as run
    from bridge_xr.register.navigation import read_pose

    if (position is None) == (pose is None):
        raise InvalidInputError("give the navigated --position or a --pose file, exactly one")
    if pose is not None and not pose.is_file():
        raise InvalidInputError(f"no such pose file: {str(pose)!r}")
    rec, rep = run(
        store, clinical=clinical, sample=sample,
        position_ras_mm=_three_lengths_mm(position, "--position") if position else None,
        pose=read_pose(pose.read_text()) if pose is not None else None,
        sample_point_um=[v * 1000.0 for v in _three_lengths_mm(sample_point, "--sample-point")]
        if sample_point else None,
        navigation_error_um=parse_length_um(navigation_error) if navigation_error else None,
        name=name, overwrite=overwrite,
    )  # fmt: skip
    err = rep["navigation_error_um"]
    out.print(
        f"{rec.name}: {sample} placed in {clinical} ({rep['orientation']}); navigation error "
        + (f"{err:.3g} µm" if err is not None else "not given (chains through it: unknown)")
    )


@handle_errors
def register_intensity(
    store: Store,
    fixed: Fixed,
    moving: Moving,
    name: Annotated[str, typer.Option("--name", help="registration name")] = "intensity",
    landmarks: Annotated[
        Path | None, typer.Option("--landmarks", help="landmark CSV for the start (affine fit)")
    ] = None,
    check_landmarks: Annotated[
        Path | None,
        typer.Option(help="independent landmark CSV to measure the result (the hop's error)"),
    ] = None,
    mesh: Annotated[int, typer.Option(help="B-spline lattice cells per axis")] = 6,
    iterations: Annotated[int, typer.Option(help="B-spline optimiser iterations")] = 100,
    affine: Annotated[
        bool, typer.Option("--affine/--no-affine", help="optimise an affine first")
    ] = True,
    seed: Annotated[int, typer.Option(help="seed of the metric's random sampling")] = 0,
    report: Annotated[Path | None, typer.Option("--report", help="JSON report")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace that name")] = False,
    current: Annotated[
        bool, typer.Option("--current", help="use this one for the image pair")
    ] = False,
) -> None:
    """Elastic intensity registration (Mattes MI: affine, then cubic B-spline), stored exactly."""
    from bridge_xr.io.jsonio import write_json
    from bridge_xr.register.intensity import register_intensity as run
    from bridge_xr.register.landmarks import read_csv

    with console.status(f"registering {moving} onto {fixed} (affine, then B-spline)"):
        rec, rep = run(
            store, fixed=fixed, moving=moving, name=name,
            landmarks=read_csv(landmarks) if landmarks else None,
            check_landmarks=read_csv(check_landmarks) if check_landmarks else None,
            mesh=mesh, iterations=iterations, affine=affine, seed=seed, overwrite=overwrite,
            current=current,
        )  # fmt: skip
    if report is not None:
        write_json({"registration": rec.name, "fixed": fixed, "moving": moving, **rep}, report)
    tre = rep.get("tre_rms_um")
    out.print(
        f"{rec.name}: B-spline {'x'.join(map(str, rep['lattice_nodes']))} lattice from "
        f"{rep['start']}, Mattes MI {rep['final_metric']:.4g}; "
        + (
            f"TRE RMS {tre:.3g} µm at {rep['check_landmarks']} check landmarks"
            if tre is not None
            else "no check landmarks: its error is unknown to chains"
        )
    )
