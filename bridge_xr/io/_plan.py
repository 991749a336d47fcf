"""Storage planning: chunk and shard shapes and pyramid levels for an image, before any write."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from zarr.codecs import BloscCodec, ZstdCodec

from bridge_xr._constants import LEVEL_PREFIX, SPATIAL_AXES
from bridge_xr.errors import InvalidInputError
from bridge_xr.model.image import spatial_dims

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
    shards: Mapping[str, int] | Literal[False] | None,
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
    shards: Mapping[str, int] | Literal[False] | None = None,
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


def _compressors(name: str, dtype: np.dtype[Any], kind: str = "image") -> Any:
    """The zarr compressor ``name`` names; ``auto``: ``zstd`` for labels, else ``blosc-zstd``.

    Label images and masks are runs of a few values: plain zstd keeps them about 100x smaller
    and decodes them 5x faster than blosc's bit-shuffled zstd, which suits noisy intensities.
    """
    if name == "auto":
        name = "zstd" if kind == "labels" else "blosc-zstd"
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
    raise InvalidInputError(
        f"unknown compressor {name!r}; use auto, zstd, blosc-zstd, blosc-lz4 or none"
    )
