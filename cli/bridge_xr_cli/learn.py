"""``bridge learn``: vessel filter, evaluation metrics (nnU-Net dataset export and training next)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge_xr.errors import InvalidInputError
from bridge_xr_cli._common import handle_errors, out

app = typer.Typer(help="Microscopy-trained MRI vessel segmentation: filter, evaluate.")


def _length_um(text: str, option: str) -> float:
    from bridge_xr.model.units import conversion_factor, parse_length

    try:
        value, unit = parse_length(text, default_unit="um")
    except Exception:  # noqa: BLE001 - any parse failure is the user's text
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
    store: Annotated[str, typer.Argument(help="subject store")],
    image: Annotated[str, typer.Option(help="vessel image (mask, probability map or angiogram)")],
    min_diameter: Annotated[str, typer.Option(help="remove vessels narrower than this, e.g. 30um")],
    image_out: Annotated[str, typer.Option("--image-out", help="filtered mask path")],
    threshold: Annotated[
        float, typer.Option(help="binarise the image above this value first")
    ] = 0.0,
    diameter_out: Annotated[
        str | None, typer.Option(help="also write the local diameter map (µm) here")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """Keep vessels at least --min-diameter wide (exact Euclidean opening, physical units)."""
    from bridge_xr.extract.tables import write_on_grid_of
    from bridge_xr.io.ome_zarr import read_image
    from bridge_xr.learn.vessels import local_diameter, open_by_diameter
    from bridge_xr.model.units import conversion_factor

    d_um = _length_um(min_diameter, "--min-diameter")
    img = read_image(store, image)
    if tuple(str(d) for d in img.dims) != ("z", "y", "x"):
        raise InvalidInputError(f"{image!r} has dims {img.dims}; expected (z, y, x)")
    fac = conversion_factor(img.attrs["unit"], "micrometer")
    spacing = tuple(float(img.attrs["spacing"][d]) * fac for d in "zyx")
    mask = img.data > threshold
    kept = open_by_diameter(mask, d_um, spacing).astype("uint8")
    write_on_grid_of(store, image, kept, image_out, kind="labels",
                     operation="learn filter (opening)", overwrite=overwrite,
                     min_diameter_um=d_um, threshold=threshold)  # fmt: skip
    if diameter_out:
        dmap = local_diameter(kept > 0, spacing, max_diameter_um=max(4 * d_um, 200.0))
        write_on_grid_of(store, image, dmap, diameter_out, operation="learn local diameter",
                         overwrite=overwrite, source=image_out)  # fmt: skip
    n_in, n_out = int(mask.sum().compute()), int(kept.sum().compute())
    out.print(f"{image_out}: kept {n_out} of {n_in} vessel voxels (>= {d_um:g} µm wide)")


@app.command("evaluate")
@handle_errors
def evaluate(
    truth: Annotated[str, typer.Option(help="truth mask: NIfTI or store.ome.zarr/image")],
    prediction: Annotated[str, typer.Option(help="predicted mask, same grid")],
    dilation: Annotated[str, typer.Option(help="dilation radius of the Dilated Dice")] = "50um",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the metrics here")] = None,
) -> None:
    """Dice, Dilated Dice (paper), MASD and HD95 in µm between two masks on one grid."""
    from bridge_xr.learn.io import read_mask, write_json
    from bridge_xr.learn.metrics import evaluate as run

    a, sa = read_mask(truth)
    b, sb = read_mask(prediction)
    if a.shape != b.shape or any(
        abs(x - y) > 1e-6 * max(x, y) for x, y in zip(sa, sb, strict=True)
    ):
        raise InvalidInputError(
            f"truth {a.shape} @ {sa} µm and prediction {b.shape} @ {sb} µm are not on one grid; "
            "resample the prediction onto the truth first"
        )
    result = run(a, b, sa, dilation_um=_length_um(dilation, "--dilation"))
    result.update({"truth": truth, "prediction": prediction})
    if json_out:
        write_json(result, json_out)
    out.print(
        f"dice {result['dice']:.4f}  dilated dice {result['dilated_dice']:.4f}  "
        f"MASD {result['masd_um']:.2f} µm  HD95 {result['hd95_um']:.2f} µm  "
        f"(truth {result['n_truth_voxels']}, prediction {result['n_prediction_voxels']} voxels)"
    )
