"""``bridge resample`` and ``bridge export transform``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge_xr.errors import InvalidInputError
from bridge_xr_cli._common import Overwrite, StoreArg, Via, handle_errors, level_progress, out


def _spacing(text: str | None) -> tuple[float, float, float] | None:
    """``25um,25um,100um`` (x, y, z) -> (z, y, x) in µm."""
    from bridge_xr.model.units import parse_spacing_um

    return None if text is None else parse_spacing_um(text)


@handle_errors
def resample(
    store: StoreArg,
    moving: Annotated[str, typer.Option("--moving", help="image to resample")],
    onto: Annotated[
        str, typer.Option("--onto", help="image whose grid (and space) to resample onto")
    ],
    image: Annotated[
        str, typer.Option("--image", help="output image path, e.g. registered/d060/angiogram")
    ],
    spacing: Annotated[
        str | None, typer.Option(help="output voxel size x,y,z, e.g. 25um,25um,100um")
    ] = None,
    order: Annotated[int, typer.Option(help="interpolation: 0 nearest, 1 linear, 3 B-spline")] = 1,
    labels: Annotated[
        bool, typer.Option("--labels", help="label image: nearest + mode pyramid")
    ] = False,
    level: Annotated[
        int | None, typer.Option(help="moving pyramid level (default: coarsest adequate)")
    ] = None,
    overwrite: Overwrite = False,
    via: Via = None,
) -> None:
    """Resample an image through the registrations onto another image's grid, block by block."""
    from bridge_xr.resampling import resample_into

    if order not in (0, 1, 3):
        raise InvalidInputError(f"--order must be 0, 1 or 3; got {order}")
    with level_progress(f"resampling {moving} -> {image}") as cb:
        meta = resample_into(
            store, moving=moving, onto=onto, image=image, spacing_um=_spacing(spacing),
            order=order, labels=labels, level=level, overwrite=overwrite, via=via, progress=cb,
        )  # fmt: skip
    par = meta.provenance.parameters
    bound = (
        f"; mapping error ≤ {par['certified_max_error_um']:.3g} µm per block "
        f"({par['block_error_image']})"
        if "block_error_image" in par
        else ""
    )
    shape = "×".join(str(n) for n in par["shape"]) if "shape" in par else ""
    out.print(f"wrote {image}: {shape} voxels via {', '.join(par['chain'])}{bound}")


@handle_errors
def export_transform(
    store: StoreArg,
    name: Annotated[str, typer.Option("--name", help="registration name")],
    output: Annotated[
        Path,
        typer.Option("--output", help=".tfm/.txt (linear) or .h5/.nii.gz (displacement field)"),
    ],
) -> None:
    """Write a registration as an ITK transform file readable by SimpleITK and ANTs."""
    from bridge_xr.register.itk import export_itk

    path = export_itk(store, name, output)
    out.print(f"wrote {path}")


@handle_errors
def reslice(
    store: StoreArg,
    image: Annotated[str, typer.Option("--image", help="image to reslice")],
    plane: Annotated[
        Path, typer.Option("--plane", help="CSV of >= 3 points x,y,z (µm) on the window plane")
    ],
    image_out: Annotated[str, typer.Option("--image-out", help="resliced image path")],
    spacing: Annotated[
        str | None, typer.Option(help="output voxel size x,y,z (default: the image's)")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Reslice an image parallel to a plane (e.g. the cranial window) given by >= 3 points."""
    import pandas as pd

    from bridge_xr.resampling.slicing import reslice as run

    if not plane.is_file():
        raise InvalidInputError(f"no such plane file: {str(plane)!r}")
    pts = pd.read_csv(plane)
    missing = [c for c in ("x", "y", "z") if c not in pts.columns]
    if missing:
        raise InvalidInputError(f"{str(plane)!r} lacks columns {missing}; give x,y,z in µm")
    rep = run(
        store,
        image=image,
        plane_points_xyz_um=pts[["x", "y", "z"]].to_numpy(float),
        image_out=image_out,
        spacing_um=_spacing(spacing),
        overwrite=overwrite,
    )
    out.print(
        f"wrote {image_out}: plane tilt {rep['tilt_deg']:.2f}°, points off-plane RMS {rep['plane_rms_um']:.3g} µm"
    )


@handle_errors
def group_slices(
    store: StoreArg,
    image: Annotated[str, typer.Option("--image", help="image whose z-slices to group")],
    thickness: Annotated[
        str, typer.Option("--thickness", help="target slab thickness, e.g. 100um")
    ],
    image_out: Annotated[str, typer.Option("--image-out", help="output image path")],
    overwrite: Overwrite = False,
) -> None:
    """Average consecutive z-slices to an MRI slice thickness (the paper's 2P grouping step)."""
    from bridge_xr.model.units import parse_length_um
    from bridge_xr.resampling.slicing import group_slices as run

    rep = run(
        store,
        image=image,
        thickness_um=parse_length_um(thickness),
        image_out=image_out,
        overwrite=overwrite,
    )
    out.print(
        f"wrote {image_out}: {rep['slices_per_group']} slices per group = {rep['thickness_um']:.4g} µm"
    )
