"""``bridge learn``: vessel filter, nnU-Net export, training and prediction, metrics, visibility."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge_xr.errors import InvalidInputError
from bridge_xr_cli._common import Live, Overwrite, StoreArg, StudyArg, Via, handle_errors, out

app = typer.Typer(
    help="Microscopy-trained MRI vessel segmentation: filter, export, train, predict, evaluate."
)


def _length_um(text: str, option: str) -> float:
    from bridge_xr.model.units import conversion_factor, parse_length

    try:
        value, unit = parse_length(text, default_unit="um")
    except Exception:
        raise InvalidInputError(
            f"{option} takes a length such as 30um or 0.05mm; got {text!r}"
        ) from None
    um = value * conversion_factor(unit, "micrometer")
    if um <= 0:
        raise InvalidInputError(f"{option} must be positive; got {text!r}")
    return um


@app.command("filter")
@handle_errors
def filter_(
    store: StoreArg,
    image: Annotated[str, typer.Option(help="vessel image (mask, probability map or angiogram)")],
    min_diameter: Annotated[str, typer.Option(help="remove vessels narrower than this, e.g. 30um")],
    image_out: Annotated[str, typer.Option("--image-out", help="filtered mask path")],
    threshold: Annotated[
        float, typer.Option(help="binarise the image above this value first")
    ] = 0.0,
    diameter_out: Annotated[
        str | None, typer.Option(help="also write the local diameter map (µm) here")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Keep vessels at least --min-diameter wide (exact Euclidean opening, physical units)."""
    from bridge_xr.learn.workflows import filter_vessels

    d_um = _length_um(min_diameter, "--min-diameter")
    n = filter_vessels(store, image=image, min_diameter_um=d_um, image_out=image_out,
                       threshold=threshold, diameter_out=diameter_out, overwrite=overwrite)  # fmt: skip
    out.print(f"{image_out}: kept {n['voxels_kept']} of {n['voxels_in']} vessel voxels "
              f"(>= {d_um:g} µm wide)")  # fmt: skip


@app.command("evaluate")
@handle_errors
def evaluate(
    truth: Annotated[str, typer.Option(help="truth mask: NIfTI or store.ome.zarr/image")],
    prediction: Annotated[str, typer.Option(help="predicted mask, same grid")],
    dilation: Annotated[str, typer.Option(help="dilation radius of the Dilated Dice")] = "50um",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the metrics here")] = None,
) -> None:
    """Dice, Dilated Dice (paper), MASD and HD95 in µm between two masks on one grid."""
    from bridge_xr.io.jsonio import write_json
    from bridge_xr.learn.workflows import evaluate_masks

    result = evaluate_masks(truth, prediction, dilation_um=_length_um(dilation, "--dilation"))
    if json_out:
        write_json(result, json_out)
    out.print(
        f"dice {result['dice']:.4f}  dilated dice {result['dilated_dice']:.4f}  "
        f"MASD {result['masd_um']:.2f} µm  HD95 {result['hd95_um']:.2f} µm  "
        f"(truth {result['n_truth_voxels']}, prediction {result['n_prediction_voxels']} voxels)"
    )


def _spacing_zyx(text: str) -> tuple[float, float, float]:
    from bridge_xr_cli.resample import _spacing

    zyx = _spacing(text)
    if zyx is None or min(zyx) <= 0:
        raise InvalidInputError(
            f"--spacing takes positive lengths x,y,z, e.g. 25um,25um,100um; got {text!r}"
        )
    return zyx


@app.command("export")
@handle_errors
def export(
    study: StudyArg,
    output: Annotated[Path, typer.Option(help="nnU-Net raw folder (nnUNet_raw)")],
    mri_sequence: Annotated[str, typer.Option(help="MRI image name, e.g. T2w")] = "T2w",
    truth: Annotated[str, typer.Option(help="microscopy image name, e.g. angiogram")] = "angiogram",
    spacing: Annotated[str, typer.Option(help="export voxel size x,y,z")] = "25um,25um,100um",
    crops: Annotated[
        Path | None, typer.Option(help="CSV: subject,session,z0,z1,y0,y1,x0,x1 (export voxels)")
    ] = None,
    crop_size: Annotated[
        int, typer.Option(help="automatic crops: tile size in voxels (y, x)")
    ] = 32,
    min_vessel: Annotated[
        int, typer.Option(help="automatic crops: at least this many vessel voxels")
    ] = 10,
    truth_threshold: Annotated[
        float | None, typer.Option(help="binarise the microscopy above this value")
    ] = None,
    min_fraction: Annotated[
        float, typer.Option(help="an export voxel is vessel when this much of it is vessel")
    ] = 0.5,
    dataset_id: Annotated[int, typer.Option(help="nnU-Net dataset id (1-999)")] = 501,
    folds: Annotated[int, typer.Option(help="cross-validation folds, grouped by subject")] = 5,
    verify: Annotated[
        bool, typer.Option(help="run nnU-Net's integrity check on the result")
    ] = True,
    negative_control: Annotated[
        bool,
        typer.Option(
            "--negative-control",
            help="pair every image with another crop's label (paper's control)",
        ),
    ] = False,
    diameters: Annotated[
        bool,
        typer.Option(
            help="also write bridge_xr/diameters/<case>.nii.gz: microscopy vessel diameters "
            "(local thickness at full resolution) for the vessel-wise evaluation"
        ),
    ] = True,
    max_tre: Annotated[
        str | None,
        typer.Option(
            help="automatic crops: leave out tiles whose mean bootstrap TRE (from "
            "`bridge register --tre-map`) exceeds this, e.g. 60um"
        ),
    ] = None,
    via: Via = None,
    live: Live = False,
) -> None:
    """Registered MRI crops + microscopy vessel truth -> an nnU-Net v2 raw dataset."""
    import pandas as pd

    from bridge_xr.learn.dataset import export_dataset
    from bridge_xr.learn.dataset import verify as check
    from bridge_xr.model.units import conversion_factor, parse_length

    max_tre_um = None
    if max_tre is not None:
        v, u = parse_length(max_tre, default_unit="um")
        max_tre_um = v * conversion_factor(u, "micrometer")
    table = None
    if crops is not None:
        if not crops.is_file():
            raise InvalidInputError(f"no crop list at {str(crops)!r}")
        table = pd.read_csv(crops)
    folder = export_dataset(
        study, output, mri_sequence=mri_sequence, truth=truth, spacing_um=_spacing_zyx(spacing),
        crops=table, dataset_id=dataset_id, truth_threshold=truth_threshold,
        min_fraction=min_fraction, crop_yx=crop_size, min_vessel=min_vessel, n_folds=folds,
        negative_control=negative_control, max_tre_um=max_tre_um, diameters=diameters, via=via,
        live=live,
    )  # fmt: skip
    if verify:
        check(folder)
    n = len(list((folder / "labelsTr").glob("*.nii.gz")))
    out.print(f"{folder}: {n} cases" + (", nnU-Net integrity check passed" if verify else ""))


@app.command("train")
@handle_errors
def train(
    dataset: Annotated[Path, typer.Argument(help="nnU-Net raw dataset folder (DatasetXXX_Name)")],
    folds: Annotated[str, typer.Option(help="folds to train, e.g. 0,1,2,3,4")] = "0,1,2,3,4",
    device: Annotated[str, typer.Option(help="cuda, cpu or mps (default: cuda when present)")] = "",
    epochs: Annotated[int, typer.Option(help="epochs (nnU-Net default 1000)")] = 1000,
    iterations: Annotated[int, typer.Option(help="iterations per epoch (default 250)")] = 250,
    work: Annotated[
        Path | None, typer.Option(help="preprocessed + results folder (default: beside DATASET)")
    ] = None,
) -> None:
    """Plan, preprocess and train nnU-Net's 2D configuration, fold by fold."""
    from bridge_xr.learn.workflows import train_folds

    try:
        fold_list = [int(f) for f in folds.split(",") if f.strip()]
    except ValueError:
        raise InvalidInputError(f"--folds takes integers, e.g. 0,1; got {folds!r}") from None
    model = train_folds(
        dataset, folds=fold_list, device=device or None, epochs=epochs, iterations=iterations,
        work=work, progress=lambda f, folder, sec: out.print(f"fold {f}: {folder} ({sec:.0f} s)"),
    )  # fmt: skip
    out.print(f"model: {model}")


@app.command("predict")
@handle_errors
def predict(
    model: Annotated[Path, typer.Argument(help="trained model folder (…__2d)")],
    store: StoreArg,
    image: Annotated[str, typer.Option(help="MRI image to segment (on the training grid)")],
    label_out: Annotated[str, typer.Option("--label-out", help="label image path to write")],
    folds: Annotated[str, typer.Option(help="folds to ensemble")] = "0",
    checkpoint: Annotated[str, typer.Option(help="checkpoint file name")] = "checkpoint_final.pth",
    device: Annotated[str, typer.Option(help="cpu, cuda or mps")] = "cpu",
    overwrite: Overwrite = False,
) -> None:
    """Segment vessels in an MRI image; the label image goes back into the store with provenance."""
    from bridge_xr.learn.workflows import predict_into

    fold_list = [int(f) for f in folds.split(",") if f.strip()]
    n = predict_into(model, store, image=image, label_out=label_out, folds=fold_list,
                     checkpoint=checkpoint, device=device, overwrite=overwrite)  # fmt: skip
    out.print(f"{label_out}: {n} vessel voxels (folds {fold_list})")


@app.command("evaluate-folds")
@handle_errors
def evaluate_folds(
    model: Annotated[Path, typer.Argument(help="trained model folder (…__2d)")],
    dataset: Annotated[Path, typer.Option(help="the raw dataset it was trained on")],
    json_out: Annotated[Path, typer.Option("--json", help="per-case metrics and summary")],
) -> None:
    """The paper's cross-validation table.

    The paper's cross-validation table: metrics per validation case, per fold and overall
    (median and IQR), the thresholded-T2w baseline, and the vessel-wise comparison.
    """
    from bridge_xr.learn import nnunet

    result = nnunet.write_fold_table(model, dataset, json_out)
    s = result["summary"]
    if not s.get("cases"):
        raise InvalidInputError(
            f"no validation predictions under {str(model)!r}; train a fold first"
        )
    dd = s.get("dilated_dice", {})
    out.print(f"{s['cases']} validation cases: dilated dice median {dd.get('median', float('nan')):.3f} "
              f"(threshold baseline {s.get('threshold_dilated_dice', {}).get('median', float('nan')):.3f})")  # fmt: skip
    for cat in result.get("visibility", {}).get("by_diameter", []):
        if cat["vessels"]:
            out.print(f"  vessels {cat['diameter_um']} µm: {cat['vessels']}, found by the model "
                      f"{cat['model_detected']:.0%}, by thresholded MRI {cat['threshold_detected']:.0%}")  # fmt: skip


@app.command("visibility")
@handle_errors
def visibility(
    truth: Annotated[str, typer.Option(help="truth vessel mask: NIfTI or store.ome.zarr/image")],
    prediction: Annotated[str, typer.Option(help="predicted mask, same grid")],
    mri: Annotated[
        str | None, typer.Option(help="MRI on the same grid: adds the thresholded-MRI baseline")
    ] = None,
    dilation: Annotated[
        str, typer.Option(help="a truth voxel is found within this distance")
    ] = "50um",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="per vessel and per category")
    ] = None,
    diameters: Annotated[
        str | None,
        typer.Option(
            help="diameter map (µm) on the same grid, e.g. bridge_xr/diameters/<case>.nii.gz of "
            "an export; default: local thickness of the truth"
        ),
    ] = None,
    segments: Annotated[
        bool,
        typer.Option(
            "--segments/--components",
            help="count calibre segments (pieces within one diameter category) or whole "
            "connected vessels",
        ),
    ] = True,
) -> None:
    """Vessel-wise comparison by diameter category: found by the model vs thresholded MRI."""
    import pandas as pd

    from bridge_xr.io.jsonio import write_json
    from bridge_xr.learn.workflows import vessel_visibility

    vessels, cats, sp = vessel_visibility(
        truth, prediction, mri=mri, dilation_um=_length_um(dilation, "--dilation"),
        diameters=diameters, segments=segments,
    )  # fmt: skip
    if json_out:
        write_json({"per_vessel": vessels, "per_diameter": cats, "spacing_um": sp}, json_out)
    out.print(pd.DataFrame(cats).to_string(index=False))
