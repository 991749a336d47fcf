"""``bridge export nifti|ome-zarr-0.5``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge_xr_cli._common import StoreArg, handle_errors, out

app = typer.Typer(help="Export images out of a subject store.", no_args_is_help=True)


@app.command("nifti")
@handle_errors
def nifti(
    store: StoreArg,
    image: Annotated[str, typer.Option("--image", help="image path in the store")],
    output: Annotated[Path, typer.Option("--output", help="output .nii or .nii.gz")],
) -> None:
    """Write an image as NIfTI (an MRI converted from NIfTI gets its original header back)."""
    from bridge_xr.io.export import export_nifti

    path = export_nifti(store, image, output)
    out.print(f"wrote {path}")


@app.command("ome-zarr-0.5")
@handle_errors
def ome_zarr_05(
    store: StoreArg,
    image: Annotated[str, typer.Option("--image", help="image path in the store")],
    output: Annotated[str, typer.Option("--output", help="new OME-Zarr 0.5 store")],
) -> None:
    """Write one image as a plain OME-Zarr 0.5 multiscale for viewers without 0.6 support."""
    from bridge_xr.io.export import export_ome_zarr_05

    where = export_ome_zarr_05(store, image, output)
    out.print(f"wrote OME-Zarr 0.5 image to {where}")
