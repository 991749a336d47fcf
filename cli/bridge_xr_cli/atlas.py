"""``bridge atlas import|map``: QuickNII / VisuAlign alignments of section stacks (CCFv3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge_xr.errors import InvalidInputError
from bridge_xr_cli._common import StoreArg, console, handle_errors, out, read_points

app = typer.Typer(
    help="Atlas coordinates (QuickNII/VisuAlign, e.g. Allen CCFv3) of sections and MRI voxels.",
    no_args_is_help=True,
)


@app.command("import")
@handle_errors
def import_(
    alignment: Annotated[Path, typer.Argument(help="QuickNII or VisuAlign JSON")],
    store: StoreArg,
    slices: Annotated[str, typer.Option("--slices", help="the slice stack it aligns")],
    atlas_voxel: Annotated[
        str | None,
        typer.Option(help="atlas voxel size, e.g. 25um (default: from the atlas name in the file)"),
    ] = None,
    by: Annotated[
        str, typer.Option("--by", help="pair sections by: auto, filename or nr")
    ] = "auto",
) -> None:
    """Store a QuickNII/VisuAlign alignment of a slice stack in the subject."""
    from bridge_xr.model.units import parse_length_um
    from bridge_xr.register.atlas import import_atlas

    if by not in ("auto", "filename", "nr"):
        raise InvalidInputError(f"--by {by!r}: use auto, filename or nr")
    rec = import_atlas(
        store, alignment, slices=slices,
        voxel_um=parse_length_um(atlas_voxel) if atlas_voxel else None, by=by,
    )  # fmt: skip
    nl = sum(1 for s in rec.sections if s.markers)
    out.print(
        f"{slices}: {len(rec.sections)} sections anchored in {rec.target or 'the atlas'} "
        f"({rec.voxel_um:g} µm voxels; {nl} with VisuAlign markers; "
        f"paired by {rec.provenance.parameters['paired_by']})"
    )


@app.command("map")
@handle_errors
def map_(
    store: StoreArg,
    points: Annotated[Path, typer.Argument(help="CSV with x,y,z in µm (other columns kept)")],
    src: Annotated[str, typer.Option("--from", help="image the points are in")],
    output: Annotated[Path, typer.Option("--output", help="CSV to write")],
    slices: Annotated[
        str | None, typer.Option("--slices", help="the aligned slice stack (if several)")
    ] = None,
    annotation: Annotated[
        Path | None, typer.Option(help="atlas label volume (NIfTI) for a region column")
    ] = None,
    via: Annotated[
        str | None, typer.Option("--via", help="registration names in chain order")
    ] = None,
) -> None:
    """Atlas coordinates (voxels and µm, region labels) of points in any chained image."""
    import pandas as pd

    from bridge_xr.register.atlas import atlas_points

    df = read_points(points)
    res = atlas_points(
        store, df[["z", "y", "x"]].to_numpy(float), src=src, slices=slices,
        annotation=annotation, via=via,
    )  # fmt: skip
    table = pd.concat([df.reset_index(drop=True), res], axis=1)
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output, index=False, float_format="%.10g")
    lost = int(res["section"].isna().sum())
    out.print(
        f"{len(table)} points -> atlas coordinates in {output}"
        + (f"; {lost} lie in no aligned section (NaN)" if lost else "")
    )


@app.command("image")
@handle_errors
def image(
    store: StoreArg,
    image_path: Annotated[str, typer.Option("--image", help="image whose voxels to place")],
    image_out: Annotated[str, typer.Option("--image-out", help="atlas coordinate image")],
    slices: Annotated[
        str | None, typer.Option("--slices", help="the aligned slice stack (if several)")
    ] = None,
    annotation: Annotated[
        Path | None, typer.Option(help="atlas label volume (NIfTI): also <image-out>_region")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace those images")] = False,
) -> None:
    """Atlas µm of every voxel of an image (and its region label), on that image's grid."""
    from bridge_xr.register.atlas import atlas_image

    with console.status(f"placing the voxels of {image_path} in the atlas"):
        written = atlas_image(
            store, image=image_path, image_out=image_out, slices=slices,
            annotation=annotation, overwrite=overwrite,
        )  # fmt: skip
    out.print(f"wrote {', '.join(written)} on the grid of {image_path}")
