"""``bridge convert tiles``, ``bridge stitch``, ``bridge fuse``: whole-window tile scans."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bridge_xr.errors import InvalidInputError
from bridge_xr_cli import _common
from bridge_xr_cli._common import StoreArg, handle_errors, level_progress, out

ScanOpt = Annotated[
    str, typer.Option("--image", help="the tile scan's path, e.g. twophoton/d060/angiogram")
]


class Positions(StrEnum):
    """Which tile positions ``fuse`` uses."""

    auto = "auto"
    registered = "registered"
    stage = "stage"


class StitchModel(StrEnum):
    """Per-tile model of ``stitch``."""

    translation = "translation"
    rigid = "rigid"
    affine = "affine"


class Interp(StrEnum):
    """Sampling of tiles at the output grid."""

    linear = "linear"
    nearest = "nearest"


def _zyx(text: str | None, option: str) -> dict[str, int] | None:
    if not text:
        return None
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise InvalidInputError(f"{option} must be three positive integers Z,Y,X; got {text!r}")
    return dict(zip("zyx", (int(p) for p in parts), strict=True))


@handle_errors
def convert_tiles(
    sources: Annotated[
        list[Path], typer.Argument(help="one .czi tile scan, or one TIFF/OME-TIFF per tile")
    ],
    store: Annotated[str, typer.Argument(help="subject store (path or s3:// URL)")],
    image: ScanOpt,
    positions: Annotated[
        Path | None,
        typer.Option(help="CSV file,x,y[,z] of stage positions (default: OME-XML / CZI)"),
    ] = None,
    positions_unit: Annotated[
        str, typer.Option(help="unit of the CSV columns that name none (x, not x_um)")
    ] = "um",
    pixel_size: Annotated[
        str | None, typer.Option(help="e.g. 1.1838um (overrides metadata)")
    ] = None,
    z_step: Annotated[str | None, typer.Option(help="e.g. 5um (overrides metadata)")] = None,
    channel_names: Annotated[str | None, typer.Option(help="comma-separated names")] = None,
    scene: Annotated[int | None, typer.Option(help="CZI scene (0-based)")] = None,
    flip_x: Annotated[bool, typer.Option("--flip-x", help="stage x runs against image x")] = False,
    flip_y: Annotated[bool, typer.Option("--flip-y", help="stage y runs against image y")] = False,
    swap_xy: Annotated[bool, typer.Option("--swap-xy", help="stage x/y are image y/x")] = False,
    stage_error: Annotated[
        str | None,
        typer.Option(help="largest stage error stitch may correct (default 10% of a tile)"),
    ] = None,
    layout: Annotated[
        Path | None, typer.Option(help="also write the stage-layout PNG here")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace a scan there")] = False,
) -> None:
    """A tile scan into the store: every tile an image with its stage edge; layout checked."""
    from bridge_xr.tiles.convert import convert_tiles as run
    from bridge_xr.tiles.scan import side_key

    names = tuple(n.strip() for n in channel_names.split(",")) if channel_names else None
    with level_progress(f"writing {image}", "tiles") as cb:
        scan = run(
            sources,
            store,
            image,
            positions=positions,
            positions_unit=positions_unit,
            pixel_size=pixel_size,
            z_step=z_step,
            channel_names=names,
            scene=scene,
            flip_x=flip_x,
            flip_y=flip_y,
            swap_xy=swap_xy,
            stage_error=stage_error,
            overwrite=overwrite,
            layout=layout,
            progress=cb,
        )
    out.print(
        f"wrote {len(scan.tiles)} tiles of {scan.path} to {store}; stage layout: "
        f"{layout or os.path.join(store, side_key(scan.path, 'stage_layout.png'))}"
    )


@handle_errors
def stitch(
    store: StoreArg,
    image: ScanOpt,
    channel: Annotated[
        str | None, typer.Option(help="channel to register on (name or index)")
    ] = None,
    flatfield: Annotated[
        bool, typer.Option("--flatfield", help="estimate a flat field from the tiles first")
    ] = False,
    min_quality: Annotated[float, typer.Option(help="least NCC of a usable link")] = 0.3,
    max_residual: Annotated[
        float, typer.Option(help="largest residual (voxels) of a kept link")
    ] = 1.5,
    stage_error: Annotated[str | None, typer.Option(help="override the stage error bound")] = None,
    model: Annotated[
        StitchModel,
        typer.Option(
            help="translation per tile, or refined by a rotation (rigid) or a 2-D affine per "
            "tile from block-wise matches in every overlap (tiles differing in rotation or "
            "magnification)"
        ),
    ] = StitchModel.translation,
    report: Annotated[
        Path | None, typer.Option(help="folder for stitch.json and the layout/residual figures")
    ] = None,
) -> None:
    """Register overlapping tiles (phase correlation) and solve all links at once."""
    from bridge_xr.tiles.stitching import stitch as run

    with level_progress(f"registering {image}", "links") as cb:
        res = run(
            store,
            image,
            channel=channel,
            flatfield=flatfield,
            min_quality=min_quality,
            max_residual=max_residual,
            stage_error=stage_error,
            model=model.value,
            report=report,
            progress=cb,
        )
    s = res.summary
    rms = "n/a" if s["residual_rms_px"] is None else f"{s['residual_rms_px']:.3f}"
    out.print(
        f"{s['links_used']}/{s['links']} links used, residual RMS {rms} voxels, largest "
        f"correction {s['correction_max_um']:.2f} µm"
    )
    if s.get("points") is not None:
        pr, tr = s["point_residual_rms_px"], s["translation_point_rms_px"]
        rot, mag = s["rotation_deg_range"], s["magnification_range"]
        out.print(
            f"{model.value}: {s['points']} block matches ({s['points_dropped']} dropped), "
            f"residual RMS {pr if pr is None else round(pr, 3)} voxels (translation "
            f"{tr if tr is None else round(tr, 3)}); rotations {rot[0]:+.3f}..{rot[1]:+.3f}°, "
            f"magnification {mag[0]:.4f}..{mag[1]:.4f}"
        )
    for d in s["links_dropped"]:
        out.print(f"  dropped {d['tiles'][0]}-{d['tiles'][1]}: {d['reason']}")
    if s["unlinked_tiles"]:
        out.print(f"  at stage position (no usable link): {', '.join(s['unlinked_tiles'])}")
    if report:
        out.print(f"report: {report}")


@handle_errors
def fuse(
    store: StoreArg,
    image: ScanOpt,
    image_out: Annotated[str, typer.Option("--image-out", help="fused image path")],
    positions: Annotated[Positions, typer.Option(help="tile positions to use")] = Positions.auto,
    interpolation: Annotated[Interp, typer.Option(help="sampling of the tiles")] = Interp.linear,
    blend: Annotated[
        str | None, typer.Option(help="blend ramp width, e.g. 20um (default: half the overlap)")
    ] = None,
    flatfield: Annotated[
        bool | None, typer.Option("--flatfield/--no-flatfield", help="divide by the flat field")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="processes of the local cluster (default: one per core)")
    ] = 0,
    threads: Annotated[
        bool, typer.Option("--threads", help="run on local threads, no cluster")
    ] = False,
    shards: Annotated[
        str | None, typer.Option(help="output shard shape Z,Y,X (default: bridge_xr's)")
    ] = None,
    chunks: Annotated[str | None, typer.Option(help="output chunk shape Z,Y,X")] = None,
    compressor: Annotated[
        str, typer.Option(help="zstd, blosc-zstd, blosc-lz4 or none")
    ] = "blosc-zstd",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace that image")] = False,
) -> None:
    """Fuse a tile scan into one image: a task per shard, blended overlaps, resumable."""
    from bridge_xr.tiles.fusion import fuse as run

    client = _common._client
    cluster = None
    if client is None and not threads:
        from distributed import Client, LocalCluster

        n = workers or os.cpu_count() or 1
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    try:
        with level_progress(f"fusing {image}", "shards") as cb:
            res = run(
                store,
                image,
                image_out,
                positions=positions.value,
                interpolation=interpolation.value,
                blend=blend,
                flatfield=flatfield,
                shards=_zyx(shards, "--shards"),
                chunks=_zyx(chunks, "--chunks"),
                compressor=compressor,
                overwrite=overwrite,
                client=client,
                progress=cb,
            )
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
    resumed = f" ({res.shards_skipped} already done)" if res.shards_skipped else ""
    out.print(
        f"wrote {res.image.path}: {res.shards_written} of {res.shards_total} shards{resumed} "
        f"in {res.seconds:.1f} s"
    )
