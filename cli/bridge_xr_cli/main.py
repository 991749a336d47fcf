"""The ``bridge`` command: a thin shell over bridge_xr library calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bridge_xr import __version__
from bridge_xr_cli import (
    analyze,
    archive,
    atlas,
    convert,
    demo,
    export,
    info,
    learn,
    lesions,
    linescan,
    register,
    relax,
    resample,
    tiles,
)
from bridge_xr_cli._common import use_scheduler

app = typer.Typer(
    name="bridge",
    help="bridge_xr: correlative MRI-microscopy imaging on calibrated OME-Zarr 0.6 stores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bridge_xr {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    scheduler: Annotated[
        str | None,
        typer.Option(help="dask-distributed scheduler address (tcp://host:port); default: local"),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Correlate MRI with two-photon, widefield and expansion microscopy, voxel by voxel."""
    use_scheduler(scheduler)


app.add_typer(convert.app, name="convert")
app.add_typer(export.app, name="export")
app.add_typer(learn.app, name="learn")
app.add_typer(linescan.app, name="linescan")
app.add_typer(atlas.app, name="atlas")
app.command("info")(info.main)
app.command("validate")(info.validate)
app.command("demo")(demo.main)
app.add_typer(register.landmarks_app, name="landmarks")
app.command("register")(register.register)
app.command("set-current")(register.set_current)
app.command("compare-models")(register.compare_models)
app.command("transform-points")(register.transform_points)
app.command("inter-rater")(register.inter_rater)
app.command("registrations")(register.registrations)
app.command("register-slices")(register.register_slices)
app.command("place-sample")(register.place_sample)
app.command("register-intensity")(register.register_intensity)
app.command("resample")(resample.resample)
app.command("reslice")(resample.reslice)
app.command("group-slices")(resample.group_slices)
export.app.command("transform")(resample.export_transform)
app.command("normalize")(analyze.normalize)
app.command("mask")(analyze.mask)
app.command("extract")(analyze.extract)
app.command("extract-study")(analyze.extract_study)
app.command("longitudinal")(analyze.longitudinal)
app.command("stats")(analyze.stats)
app.command("vessel-diameters")(analyze.vessel_diameters)
app.command("region-densities")(analyze.region_densities)
app.command("plot")(analyze.plot)
app.command("report")(analyze.report)
convert.app.command("tiles")(tiles.convert_tiles)
app.command("stitch")(tiles.stitch)
app.command("fuse")(tiles.fuse)
app.command("relax")(relax.relax)
app.command("pse")(relax.pse)
app.command("roi-means")(relax.roi_means)
app.command("lesions")(lesions.lesions)
app.command("colocalize")(lesions.colocalize)
app.command("archive")(archive.archive)
app.command("verify")(archive.verify)


def run() -> None:
    """Console-script entry point."""
    app()


__all__ = ["Path", "app", "json", "run"]
