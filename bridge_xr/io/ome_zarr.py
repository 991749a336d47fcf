"""OME-Zarr 0.6 multiscale images on Zarr v3 with sharding: write (shard-aligned) and read.

Writing is safe with dask: every task writes whole shards (dask chunks are rechunked to the
shard grid), so no two tasks read-modify-write the same shard object. Pyramid level ``k+1`` is
computed from level ``k`` as written (never from the source again), so memory stays bounded by
the shard size whatever the volume size. Group metadata is written after the arrays, so a
reader never sees an image whose pixels are incomplete.

Reading accepts 0.4 (Zarr v2), 0.5 and 0.6 (and the 0.6 dev/rc tags, spatialdata flavours).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import dask.array as da
import numpy as np
import zarr
from zarr.abc.store import Store

from bridge_xr._constants import ATTRS_KEY, INTRINSIC, OME_VERSION, SPATIAL_AXES
from bridge_xr.io._plan import LevelPlan, StoragePlan, _compressors, plan_storage
from bridge_xr.io._store import StoreLike, invalidate, resolve_store
from bridge_xr.io.downsample import (
    Method,
    _downsample,
    _takewhile_fused,
    store_shard_aligned,
    write_fused_levels,
)
from bridge_xr.model.coords import Axis, CoordinateSystem
from bridge_xr.model.transforms import CoordinateSystemRef, Scale, Transform, Translation
from bridge_xr.model.transforms import (
    Sequence as SeqT,
)
from bridge_xr.model.units import canonical_unit


def _level_transform(plan: LevelPlan, dims: tuple[str, ...]) -> dict[str, Any]:
    scale = [plan.spacing.get(d, 1.0) for d in dims]
    trans = [plan.origin.get(d, 0.0) for d in dims]
    seq = SeqT(
        transformations=(Scale(scale=tuple(scale)), Translation(translation=tuple(trans))),
        input=CoordinateSystemRef(path=plan.path),
        output=CoordinateSystemRef(name=INTRINSIC),
    )
    return seq.to_ome()


def intrinsic_system(dims: tuple[str, ...], unit: str, kind: str = "image") -> CoordinateSystem:
    """The ``intrinsic`` system of an image with these dims (channel/time/displacement axes too)."""
    axes = []
    for d in dims:
        if d in SPATIAL_AXES:
            axes.append(Axis(name=d, type="space", unit=unit))
        elif d == "c" and kind == "displacements":
            axes.append(Axis(name=d, type="displacement", discrete=True))
        elif d == "c":
            axes.append(Axis(name=d, type="channel", discrete=True))
        else:
            axes.append(Axis(name=d, type="time"))
    return CoordinateSystem(name=INTRINSIC, axes=tuple(axes))


def multiscales_attrs(
    plan: StoragePlan,
    *,
    name: str,
    unit: str,
    extra_systems: Sequence[tuple[CoordinateSystem, Transform]] = (),
    kind: str = "image",
    method: Method = "mean",
) -> dict[str, Any]:
    """The 0.6 ``ome`` block of an image group (``intrinsic`` listed last, affines inline)."""
    intrinsic = intrinsic_system(plan.dims, unit, kind)
    systems = [cs.model_dump(mode="json", exclude_none=True) for cs, _ in extra_systems]
    systems.append(intrinsic.model_dump(mode="json", exclude_none=True))
    ms: dict[str, Any] = {
        "name": name,
        "coordinateSystems": systems,
        "datasets": [
            {"path": lv.path, "coordinateTransformations": [_level_transform(lv, plan.dims)]}
            for lv in plan.levels
        ],
        "type": "mode" if method == "mode" else "mean",
    }
    if extra_systems:
        ms["coordinateTransformations"] = [
            t.with_io(
                CoordinateSystemRef(name=INTRINSIC), CoordinateSystemRef(name=cs.name)
            ).to_ome()
            for cs, t in extra_systems
        ]
    return {"version": OME_VERSION, "multiscales": [ms]}


def write_multiscale(
    store: StoreLike,
    path: str,
    data: da.Array | np.ndarray[Any, Any],
    *,
    dims: Sequence[str],
    spacing: Mapping[str, float],
    unit: str,
    origin: Mapping[str, float] | None = None,
    extra_systems: Sequence[tuple[CoordinateSystem, Transform]] = (),
    bridge_attrs: Mapping[str, Any] | None = None,
    method: Method = "mean",
    kind: str = "image",
    levels: int | None = None,
    chunks: Mapping[str, int] | None = None,
    shards: Mapping[str, int] | Literal[False] | None = None,
    compressor: str = "auto",
    extra_ome: Mapping[str, Any] | None = None,
    progress: Any = None,
) -> StoragePlan:
    """Write one multiscale image group at ``path`` (arrays first, group metadata last).

    ``progress`` is an optional callable ``progress(level_index, n_levels)``.

    Parameters
    ----------
    store : str, path, zarr store or Scene
        Where to write.
    path : str
        Group path of the image.
    data : dask or numpy array
        Pixels, dims as ``dims``.
    dims : sequence of str
        Subset of ``t, c, z, y, x`` in array order.
    spacing, origin : mapping axis -> float
        Voxel size and first voxel centre, in ``unit``.
    unit : str
        Length unit.
    extra_systems : sequence of (CoordinateSystem, Transform)
        More coordinate systems of the image.
    bridge_attrs : mapping, optional
        The image's ``bridge_xr`` block.
    method : {'mean', 'mode'}
        Pyramid reduction.
    kind : str
        ``image``, ``labels`` or ``displacements``.
    levels : int, optional
        Pyramid levels (default: down to about one shard).
    chunks, shards : mapping axis -> int, optional
        Chunk and shard shapes (``shards=False``: unsharded).
    compressor : str
        ``auto`` (``zstd`` for labels, else ``blosc-zstd``), ``zstd``, ``blosc-zstd``,
        ``blosc-lz4`` or ``none``.
    extra_ome : mapping, optional
        More keys of the ``ome`` block.
    progress : callable, optional
        ``progress(levels_done, levels_total)``.

    Returns
    -------
    StoragePlan
        The levels, chunks and shards written.

    Examples
    --------
    >>> import numpy as np
    >>> from zarr.storage import MemoryStore
    >>> plan = write_multiscale(MemoryStore(), "img", np.zeros((4, 64, 64), np.uint16), dims="zyx",
    ...                         spacing={"z": 5.0, "y": 1.0, "x": 1.0}, unit="micrometer", levels=2)
    >>> [lv.shape for lv in plan.levels]
    [(4, 64, 64), (4, 32, 32)]
    """
    store = resolve_store(store)
    invalidate(store)
    dims_t = tuple(dims)
    unit = canonical_unit(unit)
    if not isinstance(data, da.Array):
        data = da.asarray(data)
    plan = plan_storage(
        data.shape, dims_t, data.dtype, spacing, origin, levels=levels, chunks=chunks, shards=shards
    )
    prefix = path.strip("/")
    targets = create_level_arrays(store, prefix, plan, compressor, kind)
    steps = level_steps(plan)
    n_fused = fused_level_count(plan)
    write_fused_levels(da.asarray(data), targets[:n_fused], steps[: n_fused - 1], method)
    if progress is not None:
        progress(n_fused, len(plan.levels))
    write_tail_levels(targets, plan, n_fused, method, progress)
    ome = multiscales_attrs(
        plan,
        name=prefix.rsplit("/", 1)[-1] or "image",
        unit=unit,
        extra_systems=extra_systems,
        kind=kind,
        method=method,
    )
    if extra_ome:
        ome.update(extra_ome)
    attrs: dict[str, Any] = {"ome": ome}
    if bridge_attrs is not None:
        attrs[ATTRS_KEY] = dict(bridge_attrs)
    _publish_group_attrs(store, prefix, attrs)
    return plan


def level_steps(plan: StoragePlan) -> list[list[int]]:
    """Downsampling step of every level from the one above it, per array axis."""
    return [
        [cur.factors.get(d, 1) // prev.factors.get(d, 1) for d in plan.dims]
        for prev, cur in zip(plan.levels[:-1], plan.levels[1:], strict=True)
    ]


def fused_level_count(plan: StoragePlan) -> int:
    """Level 0 and the levels written from its shards in the same task."""
    return 1 + sum(1 for _ in _takewhile_fused(plan.levels[1:]))


def write_tail_levels(
    targets: Sequence[zarr.Array[Any]],
    plan: StoragePlan,
    first: int,
    method: Method,
    progress: Any = None,
) -> None:
    """Write levels ``first`` ... from the level above each, shard-aligned."""
    steps = level_steps(plan)
    for k in range(first, len(plan.levels)):
        step = dict(zip(plan.dims, steps[k - 1], strict=True))
        grid = targets[k].shards or targets[k].chunks
        read_chunks = tuple(g * step.get(d, 1) for g, d in zip(grid, plan.dims, strict=True))
        source = _downsample(
            da.from_zarr(targets[k - 1], chunks=read_chunks), plan.dims, step, method
        )
        store_shard_aligned(source, targets[k])
        if progress is not None:
            progress(k + 1, len(plan.levels))


def create_level_arrays(
    store: Store, prefix: str, plan: StoragePlan, compressor: str, kind: str = "image"
) -> list[zarr.Array[Any]]:
    """Create (or replace) the empty arrays of every level of ``plan`` under ``prefix``."""
    comp = _compressors(compressor, plan.dtype, kind)
    targets = []
    for lv in plan.levels:
        name = f"{prefix}/{lv.path}" if prefix else lv.path
        targets.append(
            zarr.create_array(
                store,
                name=name,
                shape=lv.shape,
                dtype=plan.dtype,
                chunks=lv.chunks,
                shards=lv.shards,
                compressors=comp,
                fill_value=0,
                dimension_names=plan.dims,
                overwrite=_exists(store, f"{name}/zarr.json"),
            )
        )
    return targets


def _exists(store: Store, key: str) -> bool:
    from zarr.core.sync import sync

    return bool(sync(store.exists(key)))


def _publish_group_attrs(store: Store, path: str, attrs: dict[str, Any]) -> None:
    """Write a group's attributes (replacing them), creating the group if needed."""
    invalidate(store)
    group = zarr.open_group(store, path=path or None, mode="a", zarr_format=3)
    group.attrs.put(attrs)


# ----------------------------------------------------------------------------------- reading
