"""A tile scan inside a subject store: its record, its scene edges, side files next to it.

Layout::

    M001.ome.zarr/
      twophoton/d060/angiogram/t000/      one multiscale image per tile (its own intrinsic system)
      twophoton/d060/angiogram/t001/ ...
      twophoton/d060/angiogram/flatfield/ (after ``stitch --flatfield``)
      bridge_xr/tiles/twophoton/d060/angiogram/stage_layout.png, stitch.json, ...
      bridge_xr/fusion/<image out>/<fingerprint>/done/<shard>   (only while a fusion runs)

The record (:class:`~bridge_xr.model.metadata.TileScan`) sits under ``bridge_xr.tile_scans``. In
the OME-Zarr 0.6 scene every tile has a ``translation`` edge from its ``intrinsic`` system to
the scene system ``<scan>:stage`` (from the file's metadata) and, once stitched, a second one to
``<scan>:registered`` (an ``affine`` after ``stitch --model affine``); the stage edge is never
overwritten.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from bridge_xr._constants import ATTRS_KEY, INTRINSIC, REFERENCE
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, describe_store, invalidate, resolve_store
from bridge_xr.io.ome_zarr import intrinsic_system
from bridge_xr.io.subject import (
    _reference_edge,
    publish_subject,
    read_subject,
    scene_systems,
    scene_transforms,
)
from bridge_xr.model.coords import CoordinateSystem, spatial_system
from bridge_xr.model.metadata import ImageMetadata, SubjectMetadata, TileScan
from bridge_xr.model.transforms import Affine, CoordinateSystemRef, Transform, Translation

STAGE = "stage"
REGISTERED = "registered"


def system_name(scan: str, kind: str) -> str:
    """The scene coordinate system of a scan's stage or registered layout."""
    return f"{scan}:{kind}"


def side_key(scan: str, name: str) -> str:
    """Store key of a side file (figure, report) of a scan."""
    return f"{ATTRS_KEY}/tiles/{scan}/{name}"


def put_bytes(store: Store, key: str, data: bytes) -> None:
    """Write one object (a figure, a journal entry) into the store."""
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))


def get_bytes(store: Store, key: str) -> bytes | None:
    """One object's bytes, or None."""
    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def list_prefix(store: Store, prefix: str) -> list[str]:
    """Keys under ``prefix`` (relative to it)."""

    async def collect() -> list[str]:
        return [k async for k in store.list_prefix(prefix)]

    return [k[len(prefix) :].lstrip("/") for k in sync(collect())]


def read_tile_scan(where: StoreLike, scan: str) -> TileScan:
    """The record of tile scan ``scan`` in a subject store (one line when there is none)."""
    store = resolve_store(where)
    subject = read_subject(store)
    rec = subject.tile_scans.get(scan.strip("/"))
    if rec is None:
        have = ", ".join(sorted(subject.tile_scans)) or "none"
        raise InvalidInputError(
            f"no tile scan {scan!r} in {describe_store(store)} (tile scans: {have}); "
            "convert one with `bridge convert tiles`"
        )
    return rec


def tile_array(store: Store, tile_path: str, level: int = 0) -> zarr.Array[Any]:
    """The level-``level`` array of one tile."""
    return zarr.open_array(store, path=f"{tile_path}/s{level}", mode="r")


def tile_edges(scan: TileScan) -> tuple[list[Transform], list[CoordinateSystem]]:
    """Scene edges (stage, and registered where known) and systems of a scan's tiles."""
    edges: list[Transform] = []
    systems = [spatial_system(system_name(scan.path, STAGE), "micrometer")]
    registered = all(t.registered_um is not None for t in scan.tiles)
    if registered:
        systems.append(spatial_system(system_name(scan.path, REGISTERED), "micrometer"))
    for tile in scan.tiles:
        kinds = [(STAGE, tile.stage_um)]
        if registered and tile.registered_um is not None:
            kinds.append((REGISTERED, tile.registered_um))
        for kind, pos in kinds:
            shape: Transform = Translation(translation=tuple(float(v) for v in pos))
            if kind == REGISTERED and tile.registered_affine is not None:
                shape = Affine(affine=tile.registered_affine)
            t = shape.with_io(
                CoordinateSystemRef(name="intrinsic", path=tile.path),
                CoordinateSystemRef(name=system_name(scan.path, kind)),
            )
            edges.append(t.model_copy(update={"name": f"{tile.path}:{kind}"}))
    return edges, systems


def _belongs(t: Transform, scan: str) -> bool:
    refs = (t.input, t.output)
    return any(r is not None and (r.path or "").startswith(f"{scan}/") for r in refs) or any(
        r is not None and not r.path and (r.name or "").startswith(f"{scan}:") for r in refs
    )


def publish_scan(
    store: Store,
    subject: SubjectMetadata,
    scan: TileScan,
    images: dict[str, ImageMetadata] | None = None,
) -> SubjectMetadata:
    """Record ``scan`` (and its tiles' ``images``) in the subject, rewrite its edges; last write.

    A store whose first images are tiles gets its ``reference`` system from the first tile.
    """
    edges = [t for t in scene_transforms(store) if not _belongs(t, scan.path)]
    systems = [s for s in scene_systems(store) if not s.name.startswith(f"{scan.path}:")]
    new_edges, new_systems = tile_edges(scan)
    all_images = {
        k: v
        for k, v in subject.images.items()
        if images is None or not k.startswith(f"{scan.path}/")
    }
    all_images.update(images or {})
    reference = subject.reference_image
    if reference is None or reference not in all_images:
        first = all_images[scan.tiles[0].path]
        intrinsic = intrinsic_system(("z", "y", "x"), "micrometer")
        edges = [t for t in edges if not (t.name or "").endswith("_to_reference")]
        edges.insert(0, _reference_edge(first, {INTRINSIC: intrinsic}))
        reference = first.path
    if not any(s.name == REFERENCE for s in systems):
        systems.insert(0, spatial_system(REFERENCE, "micrometer"))
    scans = dict(subject.tile_scans)
    scans[scan.path] = scan
    subject = subject.model_copy(
        update={
            "images": all_images,
            "reference_image": reference,
            "tile_scans": scans,
            "provenance": (*subject.provenance, *scan.provenance[-1:]),
        }
    )
    publish_subject(store, subject, [*edges, *new_edges], [*systems, *new_systems])
    invalidate(store)
    return subject


def drop_scan(store: Store, scan: str) -> None:
    """Forget scan ``scan``: its record, its tiles' images and its scene edges and systems."""
    subject = read_subject(store)
    edges = [t for t in scene_transforms(store) if not _belongs(t, scan)]
    systems = [s for s in scene_systems(store) if not s.name.startswith(f"{scan}:")]
    images = {k: v for k, v in subject.images.items() if not k.startswith(f"{scan}/")}
    scans = {k: v for k, v in subject.tile_scans.items() if k != scan}
    reference = subject.reference_image if subject.reference_image in images else None
    if reference is None:
        edges = [t for t in edges if not (t.name or "").endswith("_to_reference")]
    subject = subject.model_copy(
        update={"images": images, "tile_scans": scans, "reference_image": reference}
    )
    publish_subject(store, subject, edges, systems)
    invalidate(store)


def positions_of(scan: TileScan, which: str) -> np.ndarray:
    """(n, 3) first-voxel positions (z, y, x) µm: ``stage``, ``registered`` or ``auto``."""
    if which not in {"stage", "registered", "auto"}:
        raise InvalidInputError(f"positions must be stage, registered or auto; got {which!r}")
    have = all(t.registered_um is not None for t in scan.tiles)
    if which == "registered" and not have:
        raise InvalidInputError(
            f"tile scan {scan.path!r} is not stitched yet; run `bridge stitch` or use stage positions"
        )
    use_reg = have and which != "stage"
    return np.array([t.registered_um if use_reg else t.stage_um for t in scan.tiles], float)


def tile_matrices(scan: TileScan, which: str) -> np.ndarray:
    """(n, 3, 4) maps of each tile's voxel (z, y, x) to µm of the chosen layout.

    ``which`` as in :func:`positions_of`; a registered layout from ``stitch --model affine``
    gives each tile its own linear part, every other layout a pure translation.
    """
    pos = positions_of(scan, which)
    sp = np.asarray(scan.spacing_um, float)
    out = np.zeros((len(scan.tiles), 3, 4))
    use_reg = which != "stage" and all(t.registered_um is not None for t in scan.tiles)
    for k, (tile, p) in enumerate(zip(scan.tiles, pos, strict=True)):
        if use_reg and tile.registered_affine is not None:
            m = np.asarray(tile.registered_affine, float)
            out[k, :, :3] = m[:, :3] * sp  # voxel -> intrinsic µm -> registered µm
            out[k, :, 3] = m[:, 3]
        else:
            out[k, :, :3] = np.diag(sp)
            out[k, :, 3] = p
    return out
