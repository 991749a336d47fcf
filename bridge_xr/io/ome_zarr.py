"""OME-Zarr 0.6 multiscale images on Zarr v3 with sharding: write (shard-aligned) and read.

Writing is safe with dask: every task writes whole shards (dask chunks are rechunked to the
shard grid), so no two tasks read-modify-write the same shard object. Pyramid level ``k+1`` is
computed from level ``k`` as written (never from the source again), so memory stays bounded by
the shard size whatever the volume size. Group metadata is written after the arrays, so a
reader never sees an image whose pixels are incomplete.

Reading accepts 0.4 (Zarr v2), 0.5 and 0.6 (and the 0.6 dev/rc tags, spatialdata flavours).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.abc.store import Store
from zarr.codecs import BloscCodec, ZstdCodec

from bridge_xr._constants import ATTRS_KEY, INTRINSIC, LEVEL_PREFIX, OME_VERSION, SPATIAL_AXES
from bridge_xr.errors import FormatVersionError, InvalidInputError
from bridge_xr.io._store import StoreLike, cached, invalidate, resolve_store
from bridge_xr.model.coords import Axis, CoordinateSystem
from bridge_xr.model.image import make_image, spatial_dims
from bridge_xr.model.transforms import (
    CoordinateSystemRef,
    Scale,
    Transform,
    Translation,
    parse_transform,
)
from bridge_xr.model.transforms import (
    Sequence as SeqT,
)
from bridge_xr.model.units import canonical_unit

Method = Literal["mean", "mode"]

#: Default inner chunk (z, y, x) and largest shard (z, y, x) for image data.
DEFAULT_CHUNK = {"z": 32, "y": 256, "x": 256}
DEFAULT_SHARD = {"z": 128, "y": 2048, "x": 2048}
SHARD_BYTES_CAP = 512 * 2**20


@dataclass(frozen=True)
class LevelPlan:
    """Geometry and storage layout of one pyramid level."""

    path: str
    shape: tuple[int, ...]
    factors: dict[str, int]
    spacing: dict[str, float]
    origin: dict[str, float]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    #: written in the same pass as the level before (its shard is that level's shard / step)
    fused: bool = False


#: smallest shard (bytes) for which a pyramid level is still fused into the level-0 pass
FUSE_MIN_BYTES = 4 * 2**20


@dataclass(frozen=True)
class StoragePlan:
    """All levels of a multiscale image."""

    dims: tuple[str, ...]
    dtype: np.dtype[Any]
    levels: tuple[LevelPlan, ...] = field(default_factory=tuple)


def _level_factors(
    shape: dict[str, int], spacing: dict[str, float], *, min_size: int, max_levels: int
) -> list[dict[str, int]]:
    out = [dict.fromkeys(shape, 1)]
    cur_shape, cur_sp = dict(shape), dict(spacing)
    while len(out) < max_levels and max(cur_shape.values()) > min_size:
        finest = (
            min(cur_sp[d] for d in cur_shape if cur_shape[d] >= 2)
            if any(v >= 2 for v in cur_shape.values())
            else None
        )
        if finest is None:
            break
        step = {d: 2 if cur_shape[d] >= 2 and cur_sp[d] <= 1.5 * finest else 1 for d in cur_shape}
        if all(v == 1 for v in step.values()):
            break
        cur_shape = {d: cur_shape[d] // step[d] for d in cur_shape}
        cur_sp = {d: cur_sp[d] * step[d] for d in cur_sp}
        out.append({d: out[-1][d] * step[d] for d in shape})
    return out


def _storage_for(
    shape: tuple[int, ...],
    dims: tuple[str, ...],
    itemsize: int,
    chunks: Mapping[str, int] | None,
    shards: Mapping[str, int] | None | Literal[False],
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    c = {d: 1 for d in dims if d not in SPATIAL_AXES}
    c.update({d: (chunks or DEFAULT_CHUNK).get(d, DEFAULT_CHUNK[d]) for d in spatial_dims(dims)})
    chunk = tuple(max(1, min(c[d], n)) for d, n in zip(dims, shape, strict=True))
    if shards is False:
        return chunk, None
    want = {d: 1 for d in dims if d not in SPATIAL_AXES}
    want.update({d: (shards or DEFAULT_SHARD).get(d, DEFAULT_SHARD[d]) for d in spatial_dims(dims)})
    shard = []
    for ck, d, n in zip(chunk, dims, shape, strict=True):
        mult = max(1, min(want[d] // ck, math.ceil(n / ck)))
        shard.append(ck * mult)
    # keep one shard within the byte cap by halving the largest multiple
    while math.prod(shard) * itemsize > SHARD_BYTES_CAP:
        i = max(range(len(shard)), key=lambda k: shard[k] // chunk[k])
        if shard[i] // chunk[i] <= 1:
            break
        shard[i] = chunk[i] * max(1, (shard[i] // chunk[i]) // 2)
    return chunk, tuple(shard)


def plan_storage(
    shape: Sequence[int],
    dims: Sequence[str],
    dtype: Any,
    spacing: Mapping[str, float],
    origin: Mapping[str, float] | None = None,
    *,
    levels: int | None = None,
    min_size: int = 64,
    chunks: Mapping[str, int] | None = None,
    shards: Mapping[str, int] | None | Literal[False] = None,
) -> StoragePlan:
    """Plan pyramid levels (factor 2 on the finest axes) and chunk/shard shapes for each level.

    Level ``k`` voxel centres sit at ``origin + (f_k - 1)/2 * spacing_0 + i * f_k * spacing_0``.
    """
    dims_t = tuple(dims)
    dt = np.dtype(dtype)
    sdims = spatial_dims(dims_t)
    org = {d: float((origin or {}).get(d, 0.0)) for d in sdims}
    sshape = {d: int(shape[dims_t.index(d)]) for d in sdims}
    factors = _level_factors(
        sshape, dict(spacing), min_size=1 if levels else min_size, max_levels=levels or 10
    )
    if levels is not None:
        factors = factors[:levels]
    plans: list[LevelPlan] = []
    fusing = True
    for k, f in enumerate(factors):
        lshape = tuple(
            int(n) // f[d] if d in f else int(n) for d, n in zip(dims_t, shape, strict=True)
        )
        chunk, shard = _storage_for(lshape, dims_t, dt.itemsize, chunks, shards)
        fused = False
        if k > 0 and fusing:
            prev = plans[-1]
            step = [f.get(d, 1) // prev.factors.get(d, 1) for d in dims_t]
            cand = _fused_shard(prev, step, chunk, dt.itemsize)
            if cand is None:
                fusing = False
            else:
                chunk, shard, fused = cand[0], cand[1], True
        plans.append(
            LevelPlan(
                path=f"{LEVEL_PREFIX}{k}",
                shape=lshape,
                factors=f,
                spacing={d: spacing[d] * f[d] for d in sdims},
                origin={d: org[d] + (f[d] - 1) / 2 * spacing[d] for d in sdims},
                chunks=chunk,
                shards=shard,
                fused=fused,
            )
        )
    return StoragePlan(dims=dims_t, dtype=dt, levels=tuple(plans))


def _fused_shard(
    prev: LevelPlan, step: list[int], chunk: tuple[int, ...], itemsize: int
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Shard of the next level = previous shard / step, if that tiles whole chunks."""
    if prev.shards is None or any(s % st for s, st in zip(prev.shards, step, strict=True)):
        return None
    shard = tuple(s // st for s, st in zip(prev.shards, step, strict=True))
    inner = tuple(min(c, s) for c, s in zip(chunk, shard, strict=True))
    if any(s % c for s, c in zip(shard, inner, strict=True)):
        return None
    if math.prod(shard) * itemsize < FUSE_MIN_BYTES:
        return None
    return inner, shard


def _compressors(name: str, dtype: np.dtype[Any]) -> Any:
    if name == "none":
        return None
    if name == "zstd":
        return ZstdCodec(level=3)
    if name == "blosc-zstd":
        shuffle: Literal["bitshuffle", "shuffle"] = (
            "bitshuffle" if dtype.itemsize <= 2 else "shuffle"
        )
        return BloscCodec(cname="zstd", clevel=3, shuffle=shuffle, typesize=dtype.itemsize)
    if name == "blosc-lz4":
        return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=dtype.itemsize)
    raise InvalidInputError(f"unknown compressor {name!r}; use zstd, blosc-zstd, blosc-lz4, none")


def _reduce_mode(
    block: np.ndarray[Any, Any], axis: tuple[int, ...] | None = None, **_: Any
) -> np.ndarray[Any, Any]:
    """Most frequent value over ``axis`` (labels downsampling; ties -> smallest value)."""
    if axis is None:
        axis = tuple(range(block.ndim))
    axis = tuple(axis)
    moved = np.moveaxis(block, axis, tuple(range(block.ndim - len(axis), block.ndim)))
    flat = moved.reshape(*moved.shape[: block.ndim - len(axis)], -1)
    flat = np.sort(flat, axis=-1)
    counts = np.zeros(flat.shape, dtype=np.int32)
    for i in range(flat.shape[-1]):
        counts[..., i] = (flat == flat[..., i : i + 1]).sum(axis=-1)
    best = np.argmax(counts, axis=-1)
    return np.take_along_axis(flat, best[..., None], axis=-1)[..., 0]


def _window_sums(
    block: np.ndarray[Any, Any], steps: Sequence[int], acc: Any
) -> np.ndarray[Any, Any]:
    """Sum non-overlapping windows axis by axis with strided adds (fast, small temporaries)."""
    out = block
    for axis, step in enumerate(steps):
        if step == 1:
            continue
        n = (out.shape[axis] // step) * step
        lead = (slice(None),) * axis
        total = out[(*lead, slice(0, n, step))].astype(acc)
        for i in range(1, step):
            np.add(total, out[(*lead, slice(i, n, step))], out=total, casting="unsafe")
        out = total
    return out


def downsample_block(
    block: np.ndarray[Any, Any], steps: Sequence[int], method: Method = "mean"
) -> np.ndarray[Any, Any]:
    """Reduce non-overlapping ``steps`` windows (excess at the end trimmed, as in the pyramid).

    Integer means are rounded half up with exact integer arithmetic; labels take the mode.
    """
    steps = tuple(int(s) for s in steps)
    if all(s == 1 for s in steps):
        return block
    if method == "mode":
        trimmed = block[
            tuple(slice(0, (n // s) * s) for n, s in zip(block.shape, steps, strict=True))
        ]
        shape: list[int] = []
        for n, s in zip(trimmed.shape, steps, strict=True):
            shape += [n // s, s]
        return _reduce_mode(trimmed.reshape(shape), tuple(range(1, 2 * block.ndim, 2)))
    n = math.prod(steps)
    if np.issubdtype(block.dtype, np.integer):
        signed = np.issubdtype(block.dtype, np.signedinteger)
        if block.dtype.itemsize <= 2 and n <= 2**15:
            acc: Any = np.int32 if signed else np.uint32
        else:
            acc = np.int64 if signed else np.uint64
        total = _window_sums(block, steps, acc)
        total += n // 2
        if n & (n - 1) == 0:
            total >>= n.bit_length() - 1
        else:
            total //= n
        return total.astype(block.dtype)
    total = _window_sums(block, steps, np.float64)
    total /= n
    return total.astype(block.dtype)


def _downsample(
    arr: da.Array, dims: tuple[str, ...], step: dict[str, int], method: Method
) -> da.Array:
    steps = [step.get(d, 1) for d in dims]
    if all(s == 1 for s in steps):
        return arr
    trimmed = arr[tuple(slice(0, (n // s) * s) for n, s in zip(arr.shape, steps, strict=True))]
    if any(c % s for cs, s in zip(trimmed.chunks, steps, strict=True) for c in cs):
        trimmed = trimmed.rechunk(
            tuple(max(s, (cs[0] // s) * s) for cs, s in zip(trimmed.chunks, steps, strict=True))
        )
    out_chunks = tuple(
        tuple(c // s for c in cs) for cs, s in zip(trimmed.chunks, steps, strict=True)
    )
    return trimmed.map_blocks(
        downsample_block,
        steps,
        method,
        chunks=out_chunks,
        dtype=arr.dtype,
        meta=np.empty((0,) * arr.ndim, arr.dtype),
    )


def store_shard_aligned(arr: da.Array, target: zarr.Array, *, compute: bool = True) -> Any:
    """Write ``arr`` into ``target`` so that each dask task owns whole shards (no lost writes)."""
    grid = target.shards or target.chunks
    if arr.shape != target.shape:
        msg = f"array shape {arr.shape} does not match target {target.shape}"
        raise InvalidInputError(msg)
    aligned = arr.rechunk(tuple(grid))
    return da.store(aligned, target, lock=False, compute=compute)  # type: ignore[arg-type]


def _takewhile_fused(levels: Sequence[LevelPlan]) -> list[LevelPlan]:
    out = []
    for lv in levels:
        if not lv.fused:
            break
        out.append(lv)
    return out


def write_fused_levels(
    data: da.Array, targets: Sequence[zarr.Array], steps: Sequence[Sequence[int]], method: Method
) -> None:
    """Write level 0 and the fused levels below it in one pass, one task per level-0 shard.

    Each task writes its shard, downsamples it in memory and writes the matching (smaller) shard
    of every fused level, so the source is read once and no shard is shared between tasks.
    """
    grid = targets[0].shards or targets[0].chunks
    aligned = data.rechunk(tuple(grid))

    def write_shard_pyramid(
        block: np.ndarray[Any, Any], block_info: Any = None
    ) -> np.ndarray[Any, Any]:
        loc = block_info[0]["array-location"]
        targets[0][tuple(slice(a, b) for a, b in loc)] = block
        cur, starts = block, [a for a, _ in loc]
        for target, st in zip(targets[1:], steps, strict=True):
            cur = downsample_block(cur, st, method)
            starts = [s // k for s, k in zip(starts, st, strict=True)]
            target[tuple(slice(s, s + n) for s, n in zip(starts, cur.shape, strict=True))] = cur
        return np.zeros((1,) * block.ndim, dtype=bool)

    done = aligned.map_blocks(
        write_shard_pyramid, dtype=bool, chunks=tuple((1,) * len(c) for c in aligned.chunks)
    )
    done.compute()


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
    shards: Mapping[str, int] | None | Literal[False] = None,
    compressor: str = "blosc-zstd",
    extra_ome: Mapping[str, Any] | None = None,
    progress: Any = None,
) -> StoragePlan:
    """Write one multiscale image group at ``path`` (arrays first, group metadata last).

    ``progress`` is an optional callable ``progress(level_index, n_levels)``.
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
    comp = _compressors(compressor, plan.dtype)
    prefix = path.strip("/")
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
                dimension_names=dims_t,
                overwrite=_exists(store, f"{name}/zarr.json"),
            )
        )
    steps = [
        [cur.factors.get(d, 1) // prev.factors.get(d, 1) for d in dims_t]
        for prev, cur in zip(plan.levels[:-1], plan.levels[1:], strict=True)
    ]
    n_fused = 1 + sum(1 for _ in _takewhile_fused(plan.levels[1:]))
    write_fused_levels(da.asarray(data), targets[:n_fused], steps[: n_fused - 1], method)
    if progress is not None:
        progress(n_fused, len(plan.levels))
    for k in range(n_fused, len(plan.levels)):
        step = dict(zip(dims_t, steps[k - 1], strict=True))
        grid = targets[k].shards or targets[k].chunks
        read_chunks = tuple(g * step.get(d, 1) for g, d in zip(grid, dims_t, strict=True))
        source = _downsample(da.from_zarr(targets[k - 1], chunks=read_chunks), dims_t, step, method)
        store_shard_aligned(source, targets[k])
        if progress is not None:
            progress(k + 1, len(plan.levels))
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


def _exists(store: Store, key: str) -> bool:
    from zarr.core.sync import sync

    return bool(sync(store.exists(key)))


def _publish_group_attrs(store: Store, path: str, attrs: dict[str, Any]) -> None:
    """Write a group's attributes (replacing them), creating the group if needed."""
    invalidate(store)
    group = zarr.open_group(store, path=path or None, mode="a", zarr_format=3)
    group.attrs.put(attrs)


# ----------------------------------------------------------------------------------- reading

_VERSION_RE = re.compile(r"^(0\.[456])")


def normalise_version(tag: str) -> str:
    """Map a version tag (``0.6.dev4``, ``0.6rc0``, ``0.5-dev-spatialdata`` ...) to its release."""
    m = _VERSION_RE.match(str(tag))
    if m is None:
        msg = f"OME-Zarr version {tag!r} is not supported; bridge_xr reads 0.4, 0.5 and 0.6"
        raise FormatVersionError(msg)
    return m.group(1)


def ome_block(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The OME metadata block and its normalised version (0.4 keeps it at top level)."""
    if "ome" in attrs:
        block = dict(attrs["ome"])
        tag = block.get("version")
        if tag is None and block.get("multiscales"):
            tag = block["multiscales"][0].get("version")
        return block, normalise_version(tag or "")
    if "multiscales" in attrs:
        tag = attrs["multiscales"][0].get("version", "0.4")
        return dict(attrs), normalise_version(tag)
    raise FormatVersionError("no OME-Zarr metadata (neither `ome` nor `multiscales`) in group")


def _legacy_io(t: dict[str, Any]) -> dict[str, Any]:
    """Accept pre-0.6-final spellings (string input/output, ``input_axes``)."""
    out = dict(t)
    for key in ("input", "output"):
        if isinstance(out.get(key), str):
            out[key] = {"name": out[key]}
    for key in ("transformations",):
        if key in out:
            out[key] = [_legacy_io(x) for x in out[key]]
    for key in ("forward", "inverse"):
        if key in out:
            out[key] = _legacy_io(out[key])
    return out


def _dataset_geometry(cts: Sequence[dict[str, Any]], ndim: int) -> tuple[list[float], list[float]]:
    scale, trans = [1.0] * ndim, [0.0] * ndim
    flat: list[dict[str, Any]] = []
    for t in cts:
        flat.extend(t["transformations"] if t.get("type") == "sequence" else [t])
    for t in flat:
        if t["type"] == "scale":
            s = [float(v) for v in t["scale"]]
            scale = [a * b for a, b in zip(scale, s, strict=True)]
            trans = [a * b for a, b in zip(trans, s, strict=True)]
        elif t["type"] == "translation":
            trans = [a + float(b) for a, b in zip(trans, t["translation"], strict=True)]
        elif t["type"] != "identity":
            msg = f"unsupported dataset transform {t['type']!r}"
            raise FormatVersionError(msg)
    return scale, trans


@dataclass(frozen=True)
class MultiscaleInfo:
    """Parsed multiscale metadata of one image group."""

    version: str
    dims: tuple[str, ...]
    unit: str | None
    level_paths: tuple[str, ...]
    level_scale: tuple[tuple[float, ...], ...]
    level_translation: tuple[tuple[float, ...], ...]
    systems: dict[str, CoordinateSystem]
    transforms: dict[str, Transform]
    bridge: dict[str, Any]
    name: str | None


def read_multiscale_info(group: zarr.Group) -> MultiscaleInfo:
    """Parse any supported version's multiscales block into one in-memory form."""
    attrs = group.attrs.asdict()
    block, version = ome_block(attrs)
    ms = block["multiscales"][0]
    if version == "0.6" and "coordinateSystems" in ms:
        intrinsic = _pick_intrinsic(ms)
        axes = intrinsic["axes"]
    else:
        axes = ms.get("axes") or [{"name": n, "type": "space"} for n in ("z", "y", "x")]
        axes = [{"name": a, "type": "space"} if isinstance(a, str) else a for a in axes]
    dims = _canonical_names(axes, where=group.path or "/")
    units = {a.get("unit") for a in axes if a.get("type") == "space" and a.get("unit")}
    unit = canonical_unit(units.pop()) if len(units) == 1 else None
    paths, scales, trans = [], [], []
    top = ms.get("coordinateTransformations") if version != "0.6" else None
    for ds in ms["datasets"]:
        s, t = _dataset_geometry(ds.get("coordinateTransformations", []), len(dims))
        if top:
            s2, t2 = _dataset_geometry(top, len(dims))
            t = [a * b + c for a, b, c in zip(t, s2, t2, strict=True)]
            s = [a * b for a, b in zip(s, s2, strict=True)]
        paths.append(ds["path"])
        scales.append(tuple(s))
        trans.append(tuple(t))
    systems: dict[str, CoordinateSystem] = {}
    transforms: dict[str, Transform] = {}
    if version == "0.6":
        for cs in ms.get("coordinateSystems", []):
            try:
                systems[cs["name"]] = CoordinateSystem.model_validate(cs)
            except ValueError:
                continue
        for t in ms.get("coordinateTransformations", []) or []:
            parsed = parse_transform(_legacy_io(t))
            if parsed.output is not None and parsed.output.name:
                transforms[parsed.output.name] = parsed
    return MultiscaleInfo(
        version=version,
        dims=dims,
        unit=unit,
        level_paths=tuple(paths),
        level_scale=tuple(scales),
        level_translation=tuple(trans),
        systems=systems,
        transforms=transforms,
        bridge=dict(attrs.get(ATTRS_KEY) or {}),  # type: ignore[arg-type]
        name=ms.get("name"),
    )


_CANONICAL = ("t", "c", "z", "y", "x")


def _canonical_names(axes: Sequence[dict[str, Any]], *, where: str) -> tuple[str, ...]:
    """Axis names mapped onto t, c, z, y, x by type and name, or one clear refusal.

    Space axes must be named x, y, z (any case, any order); one ``time`` axis is ``t`` and one
    ``channel`` (or vector: ``displacement``, ``coordinate``) axis is ``c`` whatever their names.
    """
    names: list[str] = []
    for a in axes:
        kind, name = a.get("type"), str(a.get("name", ""))
        if kind == "space" or (kind is None and name.lower() in ("x", "y", "z")):
            if name.lower() not in ("x", "y", "z"):
                space = ", ".join(str(b.get("name")) for b in axes if b.get("type") == "space")
                raise InvalidInputError(
                    f"image {where!r} has space axes ({space}); bridge_xr needs them named "
                    "x, y, z (any order): rename the axes in its metadata"
                )
            names.append(name.lower())
        elif kind == "time" or name == "t":
            names.append("t")
        elif kind in ("channel", "displacement", "coordinate") or name == "c":
            names.append("c")
        else:
            raise InvalidInputError(
                f"image {where!r} has an axis {name!r} of type {kind!r}; bridge_xr reads "
                "space (x, y, z), time and channel axes"
            )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"image {where!r} has repeated axes {names}")
    return tuple(names)


def _pick_intrinsic(ms: dict[str, Any]) -> dict[str, Any]:
    systems = ms["coordinateSystems"]
    outputs = set()
    for ds in ms["datasets"]:
        for t in ds.get("coordinateTransformations", []):
            out = t.get("output")
            outputs.add(out.get("name") if isinstance(out, dict) else out)
    for cs in systems:
        if cs["name"] in outputs:
            return dict(cs)
    return dict(systems[-1])


def open_group(where: StoreLike, path: str) -> zarr.Group:
    """Open an existing group read-only with a clear error when it is not there."""

    store = resolve_store(where)
    key = path.strip("/")
    return cached(store, ("group", key), lambda: _open_group(store, key))


def _open_group(store: Store, path: str) -> zarr.Group:
    try:
        return zarr.open_group(store, path=path or None, mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError) as exc:
        msg = f"no image group {path!r} in the store; `bridge info` lists the images"
        raise InvalidInputError(msg) from exc


def read_image(where: StoreLike, path: str, *, level: int = 0) -> xr.DataArray:
    """Read one pyramid level of an image as a lazy, calibrated :class:`xarray.DataArray`.

    Parameters
    ----------
    where : str, path, zarr store or Scene
        The store (a Scene's store is read once and cached until the next write).
    path : str
        Image path in the store, e.g. ``invivo_mri/d060/T2w``.
    level : int
        Pyramid level (0: full resolution).

    Returns
    -------
    xarray.DataArray
        Dask-backed, dims a subset of ``t, c, z, y, x``, coordinates in ``attrs["unit"]``;
        ``attrs`` holds ``spacing``, ``origin``, ``transforms`` and the ``bridge_xr`` block.

    Raises
    ------
    InvalidInputError
        No such image or level.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> img = read_image(tiny_scene(), "mri")
    >>> img.dims, img.attrs["unit"]
    (('z', 'y', 'x'), 'micrometer')
    """
    store = resolve_store(where)
    img = cached(store, ("image", path.strip("/"), level), lambda: _read_image(store, path, level))
    out = img.copy(deep=False)
    out.attrs = copy.deepcopy(img.attrs)
    return out


def _read_image(store: Store, path: str, level: int) -> xr.DataArray:
    group = open_group(store, path)
    info = read_multiscale_info(group)
    if not 0 <= level < len(info.level_paths):
        msg = f"image {path!r} has levels 0..{len(info.level_paths) - 1}; got level {level}"
        raise InvalidInputError(msg)
    arr = group[info.level_paths[level]]
    assert isinstance(arr, zarr.Array)  # noqa: S101 - metadata guarantees it
    data = da.from_zarr(arr, chunks=arr.shards or arr.chunks)
    order = sorted(range(len(info.dims)), key=lambda i: _CANONICAL.index(info.dims[i]))
    dims = tuple(info.dims[i] for i in order)
    if dims != info.dims:  # stored e.g. x, y, z: the same voxels, seen as z, y, x
        data = data.transpose(order)
    sdims = spatial_dims(dims)
    scale = dict(zip(info.dims, info.level_scale[level], strict=True))
    trans = dict(zip(info.dims, info.level_translation[level], strict=True))
    channel_names = info.bridge.get("channel_names")
    img = make_image(
        data,
        dims=dims,
        spacing={d: scale[d] for d in sdims},
        origin={d: trans[d] for d in sdims},
        unit=info.unit or "micrometer",
        channel_names=channel_names if "c" in info.dims else None,
        name=path,
        transforms=info.transforms,
    )
    img.attrs["ome_version"] = info.version
    img.attrs["bridge_xr"] = info.bridge
    img.attrs["level"] = level
    img.attrs["n_levels"] = len(info.level_paths)
    return img


def read_multiscale(store: Store | str, path: str) -> xr.DataTree:
    """Every level of an image as an :class:`xarray.DataTree` (children ``s0``, ``s1`` ...)."""
    group = open_group(store, path)
    info = read_multiscale_info(group)
    children = {}
    for k, lp in enumerate(info.level_paths):
        img = read_image(store, path, level=k)
        children[lp] = xr.Dataset({"image": img.drop_attrs()}, attrs=_plain_attrs(img.attrs))
    return xr.DataTree.from_dict(children, name=path.strip("/").rsplit("/", 1)[-1])


def _plain_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "unit": attrs["unit"],
        "spacing": dict(attrs["spacing"]),
        "origin": dict(attrs["origin"]),
        "level": attrs.get("level", 0),
    }
