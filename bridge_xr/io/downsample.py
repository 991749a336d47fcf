"""Pyramid levels: block-wise mean/mode downsampling and shard-aligned writing (one writer per shard)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import dask.array as da
import numpy as np
import zarr

from bridge_xr._dask import rechunk_method, write_scheduler
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._fillcheck import FastWrites, write_region
from bridge_xr.io._plan import LevelPlan

#: how a pyramid level is reduced: intensity mean, or the mode (label images)
Method = Literal["mean", "mode"]


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
            tuple(max(s, (cs[0] // s) * s) for cs, s in zip(trimmed.chunks, steps, strict=True)),
            method=rechunk_method(),
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


def store_shard_aligned(arr: da.Array, target: zarr.Array[Any], *, compute: bool = True) -> Any:
    """Write ``arr`` into ``target`` so that each dask task owns whole shards (no lost writes)."""
    grid = target.shards or target.chunks
    if arr.shape != target.shape:
        msg = f"array shape {arr.shape} does not match target {target.shape}"
        raise InvalidInputError(msg)
    aligned = arr.rechunk(tuple(grid), method=rechunk_method())
    sink: Any = FastWrites(target)
    return da.store(aligned, sink, lock=False, compute=compute, scheduler=write_scheduler())


def _takewhile_fused(levels: Sequence[LevelPlan]) -> list[LevelPlan]:
    out = []
    for lv in levels:
        if not lv.fused:
            break
        out.append(lv)
    return out


def write_fused_levels(
    data: da.Array,
    targets: Sequence[zarr.Array[Any]],
    steps: Sequence[Sequence[int]],
    method: Method,
) -> None:
    """Write level 0 and the fused levels below it in one pass, one task per level-0 shard.

    Each task writes its shard, downsamples it in memory and writes the matching (smaller) shard
    of every fused level, so the source is read once and no shard is shared between tasks.
    """
    grid = targets[0].shards or targets[0].chunks
    aligned = data.rechunk(tuple(grid), method=rechunk_method())

    def write_shard_pyramid(
        block: np.ndarray[Any, Any], block_info: Any = None
    ) -> np.ndarray[Any, Any]:
        loc = block_info[0]["array-location"]
        write_region(targets[0], tuple(slice(a, b) for a, b in loc), block)
        cur, starts = block, [a for a, _ in loc]
        for target, st in zip(targets[1:], steps, strict=True):
            cur = downsample_block(cur, st, method)
            starts = [s // k for s, k in zip(starts, st, strict=True)]
            write_region(
                target, tuple(slice(s, s + n) for s, n in zip(starts, cur.shape, strict=True)), cur
            )
        return np.zeros((1,) * block.ndim, dtype=bool)

    done = aligned.map_blocks(
        write_shard_pyramid, dtype=bool, chunks=tuple((1,) * len(c) for c in aligned.chunks)
    )
    done.compute(scheduler=write_scheduler())
