"""``bridge convert tiles``: a tile scan (CZI mosaic, or TIFF/OME-TIFF files) into the store."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, delete_prefix, describe_store, key_exists, resolve_store
from bridge_xr.io.convert import _MODALITY_BY_PREFIX
from bridge_xr.io.ome_zarr import write_multiscale
from bridge_xr.io.subject import check_image_path, read_subject
from bridge_xr.model.image import spatial_dims
from bridge_xr.model.metadata import (
    Acquisition,
    ImageMetadata,
    Provenance,
    Tile,
    TileScan,
)
from bridge_xr.model.units import parse_length_um
from bridge_xr.tiles.layout import (
    check_layout,
    fix_axes,
    layout_figure,
    ome_position_um,
    read_positions_csv,
)
from bridge_xr.tiles.scan import drop_scan, publish_scan, put_bytes, side_key


def _um(text: str | None) -> float | None:
    return parse_length_um(text) if text else None


def _read_tiles(
    sources: Sequence[Path],
    positions: str | os.PathLike[str] | None,
    positions_unit: str,
    px_um: float | None,
    zs_um: float | None,
    channel_names: tuple[str, ...] | None,
    scene: int | None,
) -> tuple[list[xr.DataArray], np.ndarray, list[str]]:
    """Lazy tiles, their stage positions (n, 3) µm and their source names."""
    if len(sources) == 1 and sources[0].suffix.lower() == ".czi":
        from bridge_xr.io.czi import read_czi_tiles

        found = read_czi_tiles(
            sources[0],
            scene=scene,
            pixel_size_um=px_um,
            z_step_um=zs_um,
            channel_names=channel_names,
        )
        images = [img for img, _ in found]
        pos = [
            (
                0.0,
                info.offset_px[0] * img.attrs["spacing"]["y"],
                info.offset_px[1] * img.attrs["spacing"]["x"],
            )
            for img, info in found
        ]
        names = [f"{sources[0].name}#M{m}" for m in range(len(found))]
        return images, np.array(pos, float), names
    from bridge_xr.io.tiff import read_tiff

    bad = [s for s in sources if s.suffix.lower() not in (".tif", ".tiff")]
    if bad:
        raise InvalidInputError(
            f"{str(bad[0])!r}: tiles are one .czi tile scan or TIFF/OME-TIFF files (one per tile)"
        )
    table = read_positions_csv(positions, unit=positions_unit) if positions else None
    images, pos = [], []
    for src in sources:
        img, _ = read_tiff(src, pixel_size_um=px_um, z_step_um=zs_um, channel_names=channel_names)
        images.append(img)
        if table is not None:
            if src.name not in table:
                raise InvalidInputError(
                    f"positions file {str(positions)!r} has no row for {src.name!r}"
                )
            pos.append(table[src.name])
            continue
        p = ome_position_um(src)
        if p is None:
            raise InvalidInputError(
                f"{str(src)!r} has no stage position (OME-XML Plane/@PositionX); pass "
                "--positions positions.csv (columns file,x,y[,z])"
            )
        pos.append(p)
    return images, np.array(pos, float), [s.name for s in sources]


def _check_alike(images: list[xr.DataArray], names: list[str]) -> None:
    first = images[0]
    for img, name in zip(images[1:], names[1:], strict=True):
        if img.dims != first.dims or img.dtype != first.dtype:
            raise InvalidInputError(
                f"tile {name!r} has dims {img.dims} {img.dtype}, the first tile "
                f"{first.dims} {first.dtype}; tiles of one scan must match"
            )
        sp = [img.attrs["spacing"][d] for d in "zyx" if d in img.attrs["spacing"]]
        sp0 = [first.attrs["spacing"][d] for d in "zyx" if d in first.attrs["spacing"]]
        if not np.allclose(sp, sp0, rtol=1e-6):
            raise InvalidInputError(
                f"tile {name!r} has voxel size {sp} µm, the first tile {sp0} µm"
            )


def _guard(store: Any, subject: Any, path: str, overwrite: bool) -> None:
    clash = [k for k in subject.images if k == path or k.startswith(f"{path}/")]
    taken = path in subject.tile_scans or clash or key_exists(store, f"{path}/zarr.json")
    if taken and not overwrite:
        raise InvalidInputError(
            f"{path!r} already exists in {describe_store(store)}; choose another path or "
            "pass `overwrite`"
        )


def convert_tiles(
    sources: Sequence[str | os.PathLike[str]],
    where: StoreLike,
    scan_path: str,
    *,
    positions: str | os.PathLike[str] | None = None,
    positions_unit: str = "um",
    pixel_size: str | None = None,
    z_step: str | None = None,
    channel_names: tuple[str, ...] | None = None,
    scene: int | None = None,
    flip_x: bool = False,
    flip_y: bool = False,
    swap_xy: bool = False,
    stage_error: str | None = None,
    overwrite: bool = False,
    compressor: str = "blosc-zstd",
    layout: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Any = None,
) -> TileScan:
    """Convert a tile scan: every tile an image of the scene with its stage edge.

    The stage layout is checked (every tile must overlap another; no two at one position) and
    drawn (``bridge_xr/tiles/<scan>/stage_layout.png`` in the store, and ``layout`` if given).

    Parameters
    ----------
    sources : sequence of paths
        One ``.czi`` tile scan (mosaic ``M`` subblocks), or one TIFF/OME-TIFF per tile.
    where : str, path or zarr store
        The subject store.
    scan_path : str
        The scan's path, e.g. ``twophoton/d060/angiogram``; tiles become ``<scan>/t000`` ...
    positions : path, optional
        CSV ``file,x,y[,z]`` of stage positions (first voxel centre); default: OME-XML/CZI.
    positions_unit : str
        Unit of the CSV's columns when their names carry none.
    pixel_size, z_step : str, optional
        Voxel size when the files lack it (``"1.1838um"``).
    channel_names : tuple of str, optional
        Channel names.
    scene : int, optional
        CZI scene.
    flip_x, flip_y, swap_xy : bool
        Fix the stage's axis convention (swap first, then flip).
    stage_error : str, optional
        Largest stage error ``stitch`` may correct (default: a tenth of the tile's width).
    overwrite : bool
        Replace a scan of that path.
    compressor : str
        Compression of the tiles.
    layout : path, optional
        Also write the stage-layout PNG here.
    storage_options : dict, optional
        fsspec options for URLs.
    progress : callable, optional
        ``progress(tiles_done, tiles_total)``.

    Returns
    -------
    TileScan
        The scan's record.
    """
    # long by design: read, check the layout, write every tile, publish once: one transaction
    path = check_image_path(scan_path)
    srcs = [Path(s) for s in sources]
    if not srcs:
        raise InvalidInputError("no tile files given")
    for s in srcs:
        if not s.is_file():
            raise InvalidInputError(f"no such file: {str(s)!r}; check the path")
    store = resolve_store(where, storage_options=storage_options)
    _guard(store, read_subject(store), path, overwrite)
    images, stage, names = _read_tiles(
        srcs, positions, positions_unit, _um(pixel_size), _um(z_step), channel_names, scene
    )
    stage = fix_axes(stage, flip_x=flip_x, flip_y=flip_y, swap_xy=swap_xy)
    params = {"flip_x": flip_x, "flip_y": flip_y, "swap_xy": swap_xy, "tiles": len(images)}
    prov = Provenance.now("convert tiles", inputs=tuple(str(s) for s in srcs), image=path, **params)
    return write_tile_scan(
        store,
        path,
        images,
        stage,
        names=names,
        stage_error=stage_error,
        overwrite=overwrite,
        compressor=compressor,
        layout=layout,
        provenance=prov,
        progress=progress,
    )


def write_tile_scan(
    where: StoreLike,
    scan_path: str,
    images: Sequence[xr.DataArray],
    stage_um: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    stage_error: str | None = None,
    overwrite: bool = False,
    compressor: str = "blosc-zstd",
    layout: str | os.PathLike[str] | None = None,
    provenance: Provenance | None = None,
    progress: Any = None,
) -> TileScan:
    """Write calibrated tiles (lazy images) at stage positions ``(n, 3)`` (z, y, x µm) as a scan.

    The layout is checked and drawn as by :func:`convert_tiles`; nothing is left half-written.
    """
    # long by design: check the layout, write every tile, publish once: one transaction
    path = check_image_path(scan_path)
    store = resolve_store(where)
    subject = read_subject(store)
    _guard(store, subject, path, overwrite)
    images = list(images)
    names = list(names) if names is not None else [f"tile {k}" for k in range(len(images))]
    _check_alike(images, names)
    stage = np.array(stage_um, float, copy=True)
    stage -= stage.min(axis=0)  # the layout starts at 0: stage origins are arbitrary
    first = images[0]
    sdims = spatial_dims(tuple(str(d) for d in first.dims))
    if sdims != ("z", "y", "x"):
        images = [img.expand_dims("z", axis=img.dims.index("y")) for img in images]
        for img in images:
            img.attrs["spacing"] = {"z": 1.0, **img.attrs["spacing"]}
    spacing = tuple(float(images[0].attrs["spacing"][d]) for d in "zyx")
    shapes = [tuple(int(img.sizes[d]) for d in "zyx") for img in images]
    ids = [f"t{k:03d}" for k in range(len(images))]
    check_layout(ids, stage, shapes, spacing, where=f"tile scan {path!r}")
    err = _um(stage_error) or 0.1 * (shapes[0][2] - 1) * spacing[2]
    new_store = not key_exists(store, "zarr.json")
    tiles, metas = [], {}
    prov = provenance or Provenance.now("write tile scan", image=path, tiles=len(images))
    names_c = (
        tuple(str(v) for v in first.coords["c"].values)
        if "c" in first.dims and "c" in first.coords
        else None
    )
    old = subject.tile_scans.get(path)
    try:
        for k, (img, tid) in enumerate(zip(images, ids, strict=True)):
            tpath = f"{path}/{tid}"
            write_multiscale(
                store,
                tpath,
                img.data,
                dims=tuple(str(d) for d in img.dims),
                spacing=img.attrs["spacing"],
                unit="micrometer",
                origin=dict.fromkeys(sdims, 0.0),
                levels=1,
                compressor=compressor,
            )
            metas[tpath] = ImageMetadata(
                path=tpath,
                modality=_MODALITY_BY_PREFIX.get(path.split("/")[0], "other"),
                session=path.split("/")[1] if path.count("/") >= 2 else None,
                source=names[k],
                channel_names=names_c,
                acquisition=Acquisition(pixel_size_um=spacing),
                provenance=prov,
            )
            tiles.append(
                Tile(
                    id=tid,
                    path=tpath,
                    source=names[k],
                    stage_um=tuple(round(v, 6) for v in stage[k].tolist()),
                )
            )
            if progress is not None:
                progress(k + 1, len(images))
        scan = TileScan(
            path=path,
            tiles=tuple(tiles),
            spacing_um=spacing,
            channel_names=names_c,
            stage_error_um=err,
            provenance=(prov,),
        )
        png = layout_figure(ids, stage, shapes, spacing, title=f"{path}: stage layout")
        put_bytes(store, side_key(path, "stage_layout.png"), png)
        if layout is not None:
            Path(layout).write_bytes(png)
        publish_scan(store, subject, scan, metas)
    except BaseException:
        delete_prefix(store, "" if new_store else f"{path}/")
        if old is not None:  # an overwrite that failed: the old scan is gone, and says so
            drop_scan(store, path)
        raise
    if old is not None:  # tiles of the old scan the new one does not have
        keep = {t.path for t in scan.tiles} | {f"{path}/flatfield"}
        for t in old.tiles:
            if t.path not in keep:
                delete_prefix(store, f"{t.path}/")
    return scan
