"""Microscopy density in every MRI voxel: ``fraction`` and ``coverage`` on the MRI grid, lazily.

Three front ends over one footprint plan (:mod:`bridge_xr.extract.footprint`): ``exact``
(footprint integrals, separable or Kuhn-clipped), ``resliced`` (nearest reslice onto an
MRI-aligned grid, then exact separable integration) and ``bilinear`` (the paper's way).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.delayed import Delayed

from bridge_xr._dask import rechunk_method
from bridge_xr.errors import InvalidInputError
from bridge_xr.extract._affine import general_block_affine
from bridge_xr.extract._bilinear import _bilinear
from bridge_xr.extract._kuhn import general_block_nodes, sparse_masks
from bridge_xr.extract._separable import separable_block, separable_pair
from bridge_xr.extract.footprint import (
    Footprint,
    Method,
    face_nodes,
    map_nodes,
    node_indices,
    plan_footprint,
)
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.chunks import ChunkDecoder, thread_buffer
from bridge_xr.io.read import read_image
from bridge_xr.model.image import make_image
from bridge_xr.model.pointmaps import LinearModel
from bridge_xr.model.slices import SliceStackModel
from bridge_xr.model.units import conversion_factor


def _bbox(
    fp: Footprint, node_val: np.ndarray, margin: float = 0.0
) -> tuple[np.ndarray, tuple[int, int, int]]:
    flat = node_val.reshape(3, -1)
    flat = flat[:, np.isfinite(flat).all(axis=0)]
    if flat.shape[1] == 0:
        raise InvalidInputError("the registration maps no part of the microscopy into the MRI")
    lo = np.floor(flat.min(axis=1) - margin).astype(int) - 1
    hi = np.ceil(flat.max(axis=1) + margin).astype(int) + 1
    lo = np.clip(lo, 0, np.asarray(fp.mri_shape))
    hi = np.clip(hi, 0, np.asarray(fp.mri_shape))
    if np.any(hi <= lo):
        raise InvalidInputError(
            "the microscopy image does not overlap the MRI through the registration"
        )
    return lo, tuple(int(v) for v in hi - lo)  # type: ignore[return-value]


def _inner_chunked(
    st: Any, path: str, img: xr.DataArray, read_bytes: int = 2**23
) -> tuple[da.Array, Any]:
    """The level-0 array, read in whole inner chunks; and the zarr array (None: not zarr).

    The level-0 array read in units of whole inner chunks, merged in x then y up to about
    ``read_bytes`` but never across a shard: many parallel, large-enough reads. 8 MiB stays
    below glibc's largest mmap threshold (32 MiB): a block's buffer is reused from the heap, not
    mapped and page-faulted afresh for every block (a third less time at 1 GiB here).
    """
    import zarr

    from bridge_xr.io.read import open_group, read_multiscale_info

    group = open_group(st, path)
    arr = group[read_multiscale_info(group).level_paths[0]]
    if not isinstance(arr, zarr.Array) or tuple(arr.shape) != tuple(img.sizes.values()):
        return img.data, None
    inner = list(arr.chunks)
    outer = list(arr.shards or arr.chunks)
    itemsize = np.dtype(arr.dtype).itemsize
    for axis in (len(inner) - 1, len(inner) - 2):
        while inner[axis] * 2 <= outer[axis] and np.prod(inner) * 2 * itemsize <= read_bytes:
            inner[axis] *= 2
    return da.from_zarr(arr, chunks=tuple(inner)), arr


@dataclasses.dataclass(frozen=True)
class _DirectRead:
    """A separable block's voxels decoded inner chunk by inner chunk into one per-thread buffer.

    Each chunk is reduced while it is still in cache, without zarr's output array: half the
    time of reading the block through zarr first (:mod:`bridge_xr.io.chunks`). ``threshold``
    as in :func:`footprint_sums` (``labels`` images: 0).
    """

    decoder: ChunkDecoder
    threshold: float | None
    lead: tuple[int, ...] = ()  # the chunk index on the leading axis (a channel), if any


def _direct_separable(
    direct: _DirectRead,
    diagonal: np.ndarray,
    lo: tuple[int, ...],
    hi: tuple[int, ...],
    b_lo: np.ndarray,
    b_shape: tuple[int, ...],
) -> np.ndarray:
    """:func:`separable_block` of block ``lo:hi`` (whole inner chunks), read chunk by chunk."""
    return _direct(direct, separable_block, diagonal, lo, hi, b_lo, b_shape)


def _direct_affine(
    direct: _DirectRead,
    index_map: np.ndarray,
    lo: tuple[int, ...],
    hi: tuple[int, ...],
    b_lo: np.ndarray,
    b_shape: tuple[int, ...],
) -> np.ndarray:
    """:func:`general_block_affine` of block ``lo:hi`` (whole inner chunks), chunk by chunk."""
    return _direct(direct, general_block_affine, index_map, lo, hi, b_lo, b_shape)


def _nodes_kernel(
    vals: np.ndarray,
    nodes: tuple[list[np.ndarray], np.ndarray, tuple[np.ndarray, np.ndarray] | None],
    c_lo: tuple[int, ...],
    b_lo: np.ndarray,
    b_shape: tuple[int, ...],
) -> np.ndarray:
    """:func:`general_block_nodes` of one chunk (``nodes``: corner indices, mapped, exact)."""
    c_hi = tuple(c + n for c, n in zip(c_lo, vals.shape, strict=True))
    return general_block_nodes(vals, nodes[0], nodes[1], c_lo, c_hi, b_lo, b_shape, nodes[2])


def _direct(
    direct: _DirectRead,
    kernel: Any,
    mapping: Any,
    lo: tuple[int, ...],
    hi: tuple[int, ...],
    b_lo: np.ndarray,
    b_shape: tuple[int, ...],
) -> np.ndarray:
    dec = direct.decoder
    whole = thread_buffer("density", dec.inner, dec.dtype)
    buf = whole.reshape(dec.inner[-3:])  # a leading axis (a channel) is one chunk deep
    inner = buf.shape
    mask = thread_buffer("density-mask", inner, np.bool_)
    out = np.zeros((2, *b_shape))
    spans = [range(a // i, -(-b // i)) for a, b, i in zip(lo, hi, inner, strict=True)]
    for chunk in itertools.product(*spans):
        c_lo = tuple(c * i for c, i in zip(chunk, inner, strict=True))
        part = tuple(slice(0, min(i, b - c)) for i, b, c in zip(inner, hi, c_lo, strict=True))
        dec.read(direct.lead + chunk, whole)
        vals = buf[part]
        if direct.threshold is not None:
            vals = np.greater(vals, direct.threshold, out=mask[part])
        if not vals.flags.c_contiguous:  # an edge chunk: one compiled kernel per dtype
            vals = np.ascontiguousarray(vals)
        out += kernel(vals, mapping, c_lo, b_lo, b_shape)
    return out


def _block_box(
    fp: Footprint,
    lo: tuple[int, ...],
    hi: tuple[int, ...],
    slab_lo: np.ndarray,
    slab_shape: tuple[int, ...],
    nodes: tuple[list[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """The MRI voxels (inside the slab) block ``lo:hi``'s voxel corners can reach, or None.

    A block's partial sums cover only these, not the whole slab: memory per task stays at the
    block's own footprint however wide the image is. For a linear chain the corners are bounded
    by the block's 8 outer corners; else (``nodes``: corner indices per axis, mapped values)
    they lie between the exactly mapped nodes bracketing the block (trilinear interpolation
    stays in their range).
    """
    if fp.diagonal is not None:
        ends = fp.diagonal[0][:, None] * (np.array([lo, hi], float).T - 0.5)
        ends = ends + fp.diagonal[1][:, None]
        mn, mx = ends.min(axis=1), ends.max(axis=1)
    elif fp.index_affine is not None:  # linear: the box of the block's 8 corners
        ends = _corners_of(fp.index_affine, lo, hi)
        mn, mx = ends.min(axis=1), ends.max(axis=1)
    else:
        assert nodes is not None
        node_idx, node_val = nodes
        sl = [
            slice(k0, k1 + 1) for k0, k1 in (_bracket(node_idx[a], lo[a], hi[a]) for a in range(3))
        ]
        reach = _nodes_reach(node_val[:, sl[0], sl[1], sl[2]])
        if reach is None:
            return None
        mn, mx = reach
    return _box_within(mn, mx, slab_lo, slab_shape)


def _bracket(idx: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """First and last node (indices into ``idx``, corner indices) bracketing corners ``lo..hi``."""
    k0 = max(int(np.searchsorted(idx, lo, side="right")) - 1, 0)
    return k0, min(int(np.searchsorted(idx, hi, side="left")), len(idx) - 1)


def _nodes_reach(nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Lowest and highest MRI index the trilinear interpolant of ``nodes`` takes (finite only)."""
    sub = nodes.reshape(3, -1)
    sub = sub[:, np.isfinite(sub).all(axis=0)]
    if sub.shape[1] == 0:
        return None
    return sub.min(axis=1), sub.max(axis=1)


def _box_within(
    mn: np.ndarray, mx: np.ndarray, slab_lo: np.ndarray, slab_shape: tuple[int, ...]
) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """The MRI voxels between MRI index ``mn`` and ``mx`` (one voxel more) inside the slab."""
    b_lo = np.maximum(np.floor(mn).astype(int) - 1, slab_lo)
    b_hi = np.minimum(np.ceil(mx).astype(int) + 1, np.asarray(slab_lo) + np.asarray(slab_shape))
    if np.any(b_hi <= b_lo):
        return None
    return b_lo, tuple(int(v) for v in b_hi - b_lo)


def _corners_of(index_map: np.ndarray, lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    """(3, 8) MRI index positions of the outer corners of microscopy block ``lo:hi``."""
    corners = np.array(list(itertools.product(*zip(lo, hi, strict=True))), float).T - 0.5
    return index_map[:, :3] @ corners + index_map[:, 3:]


def _boxed(lo: np.ndarray, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(lo, int), part


def _merge(
    *boxed: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Sum boxed partials ``(lo, (2, *shape))`` over the union of their boxes (None: nothing)."""
    parts = [p for p in boxed if p is not None]
    if not parts:
        return None
    lo = np.min([p[0] for p in parts], axis=0)
    hi = np.max([p[0] + np.asarray(p[1].shape[1:]) for p in parts], axis=0)
    out = np.zeros((parts[0][1].shape[0], *(hi - lo)))
    for b_lo, arr in parts:
        o = b_lo - lo
        out[
            :, o[0] : o[0] + arr.shape[1], o[1] : o[1] + arr.shape[2], o[2] : o[2] + arr.shape[3]
        ] += arr
    return lo, out


def _place(
    part: tuple[np.ndarray, np.ndarray] | None, slab_lo: np.ndarray, slab_shape: tuple[int, ...]
) -> np.ndarray:
    """A boxed partial placed into the whole (channels, *slab_shape) slab."""
    channels = 2 if part is None else part[1].shape[0]
    placed = _merge(part, (np.asarray(slab_lo, int), np.zeros((channels, *slab_shape))))
    assert placed is not None
    return placed[1]


def footprint_sums(
    store: StoreLike,
    *,
    microscopy: str,
    mri: str,
    channel: str | int | None = None,
    threshold: float | None = None,
    block_voxels: int = 2**20,
    force_general: bool = False,
    direct_reads: bool = True,
) -> tuple[da.Array, np.ndarray, dict[str, Any]]:
    """Lazy (2, *bbox) sums over the MRI bounding box, its offset, and a description.

    ``direct_reads=False`` reads every block through zarr even where the separable path could
    decode the inner chunks itself (``info["reads"]`` says which ran).
    """
    st = resolve_store(store)
    fp = plan_footprint(st, microscopy, mri)
    if any(isinstance(m, SliceStackModel) for m, _ in fp.models):
        # a section is a 2D image standing for its whole slab: an MRI voxel's corners sit on
        # slab faces, where two sections' maps meet, so the footprint polyhedra are not defined
        raise InvalidInputError(
            f"the chain from {microscopy!r} to {mri!r} goes through a slice-by-slice "
            "registration; use method 'resliced' (--method resliced) for its densities"
        )
    if force_general:
        fp = dataclasses.replace(fp, diagonal=None)
    mic = read_image(st, microscopy)
    data, level0 = _inner_chunked(st, microscopy, mic)
    lead: tuple[int, ...] = ()
    if "c" in mic.dims:
        if channel is None:
            raise InvalidInputError(
                f"{microscopy!r} has channels {list(mic.c.values)}; choose one with `channel`"
            )
        names = [str(v) for v in mic.c.values]
        if not isinstance(channel, int) and str(channel) not in names:
            raise InvalidInputError(f"{microscopy!r} has no channel {channel!r}; it has {names}")
        ci = channel if isinstance(channel, int) else names.index(str(channel))
        if mic.dims.index("c") == 0:
            data, lead = data[ci], (ci,)
        else:
            data, level0 = mic.isel(c=ci).data, None
        mic = mic.isel(c=ci)
    if any(str(d) not in ("z", "y", "x") for d in mic.dims):
        raise InvalidInputError(f"{microscopy!r} has dims {mic.dims}; expected (c,) z, y, x")
    kind = mic.attrs.get("bridge_xr", {}).get("kind", "image")
    # a binary mask in one byte a voxel: a quarter of float32's memory, and summed as integers
    if threshold is not None:
        data = (data > threshold).astype(np.uint8)
    elif kind == "labels":
        data = (data > 0).astype(np.uint8)
    affine = fp.diagonal is None and fp.index_affine is not None
    shape = tuple(int(s) for s in data.shape)
    if fp.diagonal is not None:  # the mapping is exact per axis: corner nodes only
        node_idx = [np.array([0, n]) for n in shape]
        ends = [fp.diagonal[0, a] * (node_idx[a] - 0.5) + fp.diagonal[1, a] for a in range(3)]
        node_val = np.stack(np.meshgrid(*ends, indexing="ij"))
        bbox_lo, bbox_shape = _bbox(fp, node_val)
    elif fp.index_affine is not None:  # linear: the volume's corners bound it (no nodes)
        node_idx = [np.array([0, n]) for n in shape]
        node_val = _corners_of(fp.index_affine, (0, 0, 0), shape).reshape(3, 2, 2, 2)
        bbox_lo, bbox_shape = _bbox(fp, node_val)
    else:  # nodes mapped in the blocks' own tasks: the faces' nodes bound the footprint
        node_idx = node_indices(fp, shape)  # type: ignore[arg-type]
        faces, step, grids = face_nodes(fp, node_idx)
        bbox_lo, bbox_shape = _bbox(fp, faces, margin=step)
    direct = None
    if level0 is not None and direct_reads:  # every kernel: blocks decode their own chunks
        dec = ChunkDecoder.of(level0)
        aligned = dec is not None and all(
            c % i == 0 for cs, i in zip(data.chunks, dec.inner[-3:], strict=True) for c in cs[:-1]
        )
        # a channel's chunks hold that channel alone (bridge_xr chunks channels one by one)
        if dec is not None and aligned and all(n == 1 for n in dec.inner[: len(lead)]):
            cut = threshold if threshold is not None else (0 if kind == "labels" else None)
            direct = _DirectRead(dec, cut, lead)
    if direct is None and fp.diagonal is None and not affine:
        # blocks read through zarr: the node kernel's go to tasks of about block_voxels
        bz, by, bx = (int(c[0]) for c in data.chunks)
        while bz * by * bx > block_voxels and by > 16:
            by //= 2
        while bz * by * bx > block_voxels and bz > 1:
            bz //= 2
        data = data.rechunk((bz, by, bx), method=rechunk_method())
    if fp.diagonal is None and not affine:
        # sparse (direct reads): zero voxels summed only where their volume is needed
        plan = None if direct is None else _sparse_plan(grids, bbox_lo, bbox_shape)
        total = _node_total(data, fp, node_idx, bbox_lo, bbox_shape, direct, plan)
    else:
        total = _slab_total(data, None, fp, bbox_lo, bbox_shape, direct=direct)
    n_blocks = int(np.prod([len(c) for c in data.chunks]))
    info = {
        "microscopy": microscopy,
        "mri": mri,
        "path": "separable" if fp.diagonal is not None else "general",
        "kernel": "separable"
        if fp.diagonal is not None
        else ("affine" if fp.index_affine is not None else "nodes"),
        "chain": [type(m).__name__ + ("" if f else "^-1") for m, f in fp.models],
        "threshold": threshold,
        "blocks": n_blocks,
        "reads": "chunks" if direct is not None else "zarr",
    }
    if info["kernel"] == "nodes":
        info["sparse"] = plan is not None
    return total, bbox_lo, info


def _slab_total(
    data: da.Array,
    valid: da.Array | None,
    fp: Footprint,
    bbox_lo: np.ndarray,
    bbox_shape: tuple[int, ...],
    direct: _DirectRead | None = None,
) -> da.Array:
    """Sum the blocks' partials z-slab by z-slab into the bounding box (lazily), linear chains.

    With ``direct`` (no ``valid``) each block decodes its own inner chunks, for every kernel.
    """
    # one graph node for the reader: as a plain argument dask would walk its fields per task
    direct_key = None if direct is None else dask.delayed(direct, pure=True, traverse=False)
    offsets = [np.cumsum((0, *c)) for c in data.chunks]
    blocks = data.to_delayed(optimize_graph=False)
    valid_blocks = (
        None
        if valid is None
        else valid.rechunk(data.chunks, method=rechunk_method()).to_delayed(optimize_graph=False)
    )
    # one partial per z-slab of blocks, each only as deep (in MRI z) as that slab reaches, so
    # memory stays at a few MRI slices per task whatever the volume
    slabs = []
    for iz in range(len(data.chunks[0])):
        z0, z1 = int(offsets[0][iz]), int(offsets[0][iz + 1])
        if fp.diagonal is not None:
            zvals = fp.diagonal[0, 0] * (np.array([z0, z1]) - 0.5) + fp.diagonal[1, 0]
        else:
            assert fp.index_affine is not None
            zvals = _corners_of(fp.index_affine, (z0, 0, 0), (z1, *data.shape[1:]))[0]
        s_lo = max(int(np.floor(zvals.min())) - 1, int(bbox_lo[0]))
        s_hi = min(int(np.ceil(zvals.max())) + 1, int(bbox_lo[0]) + bbox_shape[0])
        if s_hi <= s_lo:
            continue
        slab_lo = np.array([s_lo, bbox_lo[1], bbox_lo[2]])
        slab_shape = (s_hi - s_lo, bbox_shape[1], bbox_shape[2])
        parts = []
        for iy, ix in itertools.product(range(len(data.chunks[1])), range(len(data.chunks[2]))):
            idx = (iz, iy, ix)
            lo = tuple(int(offsets[a][i]) for a, i in enumerate(idx))
            hi = tuple(int(offsets[a][i + 1]) for a, i in enumerate(idx))
            box = _block_box(fp, lo, hi, slab_lo, slab_shape)
            if box is None:  # the block maps nowhere in the slab
                continue
            b_lo, b_shape = box
            block = blocks[idx]
            if direct is not None and valid_blocks is None and fp.diagonal is not None:
                part = dask.delayed(_direct_separable)(
                    direct_key, fp.diagonal, lo, hi, b_lo, b_shape
                )
            elif direct is not None and valid_blocks is None and fp.index_affine is not None:
                part = dask.delayed(_direct_affine)(
                    direct_key, fp.index_affine, lo, hi, b_lo, b_shape
                )
            elif valid_blocks is not None:
                part = dask.delayed(separable_pair)(
                    block, valid_blocks[idx], fp.diagonal, lo, b_lo, b_shape
                )
            elif fp.diagonal is not None:
                part = dask.delayed(separable_block)(block, fp.diagonal, lo, b_lo, b_shape)
            else:  # every voxel the same shape: no corners
                part = dask.delayed(general_block_affine)(block, fp.index_affine, lo, b_lo, b_shape)
            parts.append(dask.delayed(_boxed)(b_lo, part))
        if not parts:
            continue
        while len(parts) > 1:  # a tree of sums, each over the union of its parts' boxes
            parts = [dask.delayed(_merge)(*parts[i : i + 8]) for i in range(0, len(parts), 8)]
        slabs.append(parts[0])
    if not slabs:
        raise InvalidInputError(
            "the microscopy image does not overlap the MRI through the registration"
        )
    while len(slabs) > 1:  # the slabs' boxed sums added in a tree too, then placed in the bbox
        slabs = [dask.delayed(_merge)(*slabs[i : i + 8]) for i in range(0, len(slabs), 8)]
    placed = dask.delayed(_place)(slabs[0], bbox_lo, bbox_shape)
    return da.from_delayed(placed, shape=(2, *bbox_shape), dtype=np.float64)


def _node_total(
    data: da.Array,
    fp: Footprint,
    node_idx: list[np.ndarray],
    bbox_lo: np.ndarray,
    bbox_shape: tuple[int, ...],
    direct: _DirectRead | None,
    plan: _SparsePlan | None = None,
) -> da.Array:
    """Sum the node kernel's blocks into the bounding box (lazily), mapping the nodes lazily too.

    Each block maps, in a task of its own, the nodes it owns (corner index in its own range; the
    last block along an axis also the far end), and reads from the blocks around it the ones it
    needs: every node is mapped once, so blocks sharing a node see the same value. Nodes first
    needed by z-slab ``i`` of blocks are mapped only once slab ``i - 1`` is summed (schedulers
    run such cheap root tasks first, and would hold every node of the volume): memory is
    bounded by the slabs in flight, not by the volume. A block's MRI box comes from its own
    nodes, at run time. With ``plan`` (direct reads only) the blocks run sparse, and the sum's
    volumes are completed by :func:`_complete_volumes`.
    """
    name = "footprint-nodes-" + tokenize(fp, node_idx, data.name, bbox_lo, bbox_shape, direct, plan)
    # a graph by hand: as delayed objects, every task waiting on a slab would copy that slab's
    # whole graph (time quadratic in the blocks)
    dsk: dict[Any, Any] = {(name, "fp"): fp, (name, "plan"): plan}
    if direct is None:
        dsk.update(data.__dask_graph__())
    else:
        dsk[(name, "direct")] = direct
    offsets = [np.cumsum((0, *c)) for c in data.chunks]
    own = []  # block i along an axis owns nodes own[i] .. own[i + 1] - 1
    for a in range(3):
        bounds = np.searchsorted(node_idx[a], offsets[a], side="left")
        bounds[-1] = len(node_idx[a])
        own.append(bounds)
    slabs: list[Any] = []
    blocks: list[tuple[tuple[int, ...], tuple[int, ...], list[np.ndarray]]] = []
    for iz in range(len(data.chunks[0])):
        gate = None  # nodes first needed here wait until the slab before is summed
        if iz >= 1:
            gate = (name, "gate", iz)
            dsk[gate] = (_done, slabs[iz - 1])
        parts = []
        for iy, ix in itertools.product(range(len(data.chunks[1])), range(len(data.chunks[2]))):
            idx = (iz, iy, ix)
            lo = tuple(int(offsets[a][i]) for a, i in enumerate(idx))
            hi = tuple(int(offsets[a][i + 1]) for a, i in enumerate(idx))
            k0, k1, near = [], [], []
            for a in range(3):  # the nodes bracketing the block, and the blocks owning them
                first, last = _bracket(node_idx[a], lo[a], hi[a])
                k0.append(first)
                k1.append(last)
                j0 = int(np.searchsorted(own[a], first, side="right")) - 1
                near.append(range(j0, int(np.searchsorted(own[a], last, side="right"))))
            owned = []
            for j in itertools.product(*near):
                key = (name, "nodes", *j)
                if key not in dsk:
                    sub = [node_idx[a][own[a][i] : own[a][i + 1]] for a, i in enumerate(j)]
                    dsk[key] = (_map_after, (name, "fp"), sub, gate)
                owned.append([tuple(int(own[a][i]) for a, i in enumerate(j)), key])
            source = (data.name, *idx) if direct is None else (name, "direct")
            window = [node_idx[a][k0[a] : k1[a] + 1] for a in range(3)]
            parts.append((name, "block", *idx))
            dsk[parts[-1]] = (_node_block, source, window, k0, owned, lo, hi, bbox_lo,
                              bbox_shape, fp.mri_shape, (name, "plan"))  # fmt: skip
            blocks.append((lo, hi, window))
        parts = _tree(dsk, (name, "slab", iz), parts)
        slabs.append(parts)
    total = _tree(dsk, (name, "total"), slabs)
    dsk[(name, "placed")] = (_place, total, bbox_lo, bbox_shape)
    if plan is not None:
        assert direct is not None
        redo = _Redo(fp, direct, tuple(blocks))
        dsk[(name, "sums")] = dsk.pop((name, "placed"))
        dsk[(name, "placed")] = (_complete_volumes, (name, "sums"), plan, redo, bbox_lo)
    placed = Delayed((name, "placed"), dsk)
    return da.from_delayed(placed, shape=(2, *bbox_shape), dtype=np.float64)


def _tree(dsk: dict[Any, Any], prefix: tuple[Any, ...], keys: list[Any]) -> Any:
    """The key of a tree of :func:`_merge` sums over ``keys`` (8 at a time), added to ``dsk``."""
    level = 0
    while len(keys) > 1:
        merged = []
        for i in range(0, len(keys), 8):
            merged.append((*prefix, level, i))
            dsk[merged[-1]] = (_merge, *keys[i : i + 8])
        keys, level = merged, level + 1
    return keys[0]


def _done(_: Any) -> None:
    """Nothing, once its argument is computed (orders tasks without passing data on)."""


def _map_after(fp: Footprint, idx: list[np.ndarray], _gate: None) -> np.ndarray:
    """:func:`map_nodes`, once ``_gate`` is computed."""
    return map_nodes(fp, idx)


def _node_block(
    source: np.ndarray | _DirectRead,
    window: list[np.ndarray],
    k0: tuple[int, ...],
    owned: list[tuple[tuple[int, ...], np.ndarray]],
    lo: tuple[int, ...],
    hi: tuple[int, ...],
    bbox_lo: np.ndarray,
    bbox_shape: tuple[int, ...],
    mri_shape: tuple[int, ...],
    plan: _SparsePlan | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Block ``lo:hi``'s boxed partial, from the nodes ``window`` (corner indices) it needs.

    ``owned`` holds (first node index, mapped nodes) of the blocks owning them. Refuses where
    the block reaches MRI voxels outside the bounding box the volume's faces gave (a fold near
    the image's edge can do that): its sums would be cut off there.
    """
    nodes = np.empty((3, *(len(w) for w in window)))
    for start, arr in owned:  # each node of the window is owned by exactly one of them
        src, dst = [], []
        for a in range(3):
            s = max(k0[a], start[a])
            e = min(k0[a] + len(window[a]), start[a] + arr.shape[1 + a])
            src.append(slice(s - start[a], e - start[a]))
            dst.append(slice(s - k0[a], e - k0[a]))
        nodes[(slice(None), *dst)] = arr[(slice(None), *src)]
    reach = _nodes_reach(nodes)
    if reach is None:
        return None
    whole = _box_within(*reach, np.zeros(3, int), mri_shape)
    box = _box_within(*reach, bbox_lo, bbox_shape)
    if whole is not None and (
        box is None or np.any(whole[0] != box[0]) or tuple(whole[1]) != tuple(box[1])
    ):
        raise InvalidInputError(
            f"microscopy voxels {lo}..{hi} map outside the footprint the image's faces bound "
            "(the registration folds near its edge?); use method 'resliced' (--method resliced)"
        )
    if box is None:
        return None
    if plan is not None:  # sparse; a third channel marks the MRI voxels no volume is sure in
        assert isinstance(source, _DirectRead)
        b_lo, b_shape = box
        o = b_lo - np.asarray(bbox_lo)
        exact = plan.exact[o[0] : o[0] + b_shape[0], o[1] : o[1] + b_shape[1],
                           o[2] : o[2] + b_shape[2]]  # fmt: skip
        *masks, unsure = sparse_masks(exact, nodes, b_lo, plan.orient)  # once for the chunks
        sums = _direct(source, _nodes_kernel, (window, nodes, tuple(masks)), lo, hi, *box)
        return b_lo, np.concatenate([sums, unsure[None].astype(np.float64)])
    if isinstance(source, _DirectRead):
        return box[0], _direct(source, _nodes_kernel, (window, nodes, None), lo, hi, *box)
    return box[0], general_block_nodes(source, window, nodes, lo, hi, *box)


#: the sparse plan's witnesses: one MRI voxel in this many along each axis (see _sparse_plan)
_WITNESS_STEP = 8


@dataclasses.dataclass(frozen=True, eq=False)
class _SparsePlan:
    """Where a sparse node kernel must sum every voxel's volume (see :func:`_sparse_plan`).

    Masks over the MRI bounding box: ``boundary`` (MRI voxels the image of the volume's faces
    can touch), ``witness`` (voxels elsewhere whose volume is summed to learn how often the
    map covers their part of the MRI), ``exact`` (either). ``orient``: the sign of the map's
    orientation (of the determinant of its three edge vectors).
    """

    boundary: np.ndarray
    witness: np.ndarray
    exact: np.ndarray
    orient: float


def _sparse_plan(
    grids: list[np.ndarray], bbox_lo: np.ndarray, bbox_shape: tuple[int, ...]
) -> _SparsePlan | None:
    """The sparse node kernel's plan from the faces' mapped nodes, or None (not applicable).

    Why zero voxels can be skipped: away from the image of the volume's faces (and from node
    cells that may fold, found per block at run time: :func:`sparse_masks`) the footprint's
    tetrahedra all have one orientation, so the number of them covering a point is constant
    on every connected region of MRI voxels the faces' image does not touch. A voxel's volume
    is then that count (its whole volume, or none), learnt from the summed volume of the
    region's witness voxels. The image of a face's node cell lies in the box of its four
    nodes (its voxel corners interpolate them), so those boxes bound the faces' image.
    """
    from scipy import ndimage

    shape = tuple(int(n) for n in bbox_shape)
    if any(not np.isfinite(g).all() for g in grids) or any(
        sorted(g.shape[1:])[1] < 2 for g in grids
    ):
        return None
    boundary = np.zeros(shape, bool)
    top = np.asarray(shape) - 1
    for gi, grid in enumerate(grids):
        sq = np.squeeze(grid, axis=1 + gi // 2)  # (3, p, q): the face's nodes
        cells = [sq[:, i : i + sq.shape[1] - 1, j : j + sq.shape[2] - 1] for i, j in
                 itertools.product((0, 1), repeat=2)]  # fmt: skip
        lo = np.floor(np.min(cells, axis=0) - 1e-9).astype(int) - bbox_lo[:, None, None]
        hi = np.floor(np.max(cells, axis=0) + 1e-9).astype(int) - bbox_lo[:, None, None]
        lo, hi = np.maximum(lo, 0), np.minimum(hi, top[:, None, None])
        ok = (lo <= hi).all(axis=0)
        lo, hi = lo[:, ok], hi[:, ok]
        ext = (hi - lo).max(axis=1) if lo.size else np.zeros(3, int)
        for d in itertools.product(*(range(int(e) + 1) for e in ext)):
            sel = (lo + np.asarray(d)[:, None] <= hi).all(axis=0)
            boundary[tuple(lo[m, sel] + d[m] for m in range(3))] = True
    free = ~boundary
    lattice = np.zeros(shape, bool)
    lattice[tuple(slice(_WITNESS_STEP // 2, None, _WITNESS_STEP) for _ in range(3))] = True
    witness = free & lattice
    labels, n = ndimage.label(free)
    if n:  # a region without a lattice witness gets its first voxel as one
        has = np.zeros(n + 1, bool)
        has[labels[witness]] = True
        flat = labels.ravel()
        ids, first = np.unique(flat, return_index=True)
        witness.ravel()[first[(ids > 0) & ~has[ids]]] = True
    c000 = grids[0][:, 0, 0, 0]
    edges = np.stack([grids[1][:, 0, 0, 0], grids[3][:, 0, 0, 0], grids[5][:, 0, 0, 0]]) - c000
    orient = float(np.sign(np.linalg.det(edges)))
    if orient == 0.0:
        return None
    return _SparsePlan(boundary, witness, boundary | witness, orient)


@dataclasses.dataclass(frozen=True, eq=False)
class _Redo:
    """What redoing the blocks' volumes needs (see :func:`_complete_volumes`)."""

    fp: Footprint
    direct: _DirectRead
    blocks: tuple[tuple[tuple[int, ...], tuple[int, ...], list[np.ndarray]], ...]  # lo, hi, nodes


def _complete_volumes(
    sums: np.ndarray, plan: _SparsePlan, redo: _Redo, bbox_lo: np.ndarray
) -> np.ndarray:
    """(2, *bbox) sums of a sparse run, its volumes completed.

    ``sums``: value-weighted volume (complete: a zero voxel adds nothing), volume (exact in
    ``plan.exact`` and where marked unsure), unsure. In each connected region of MRI voxels
    neither on the faces' image nor unsure, every voxel's volume is the count its witnesses
    show (an integer, the same for all of them). Unsure voxels, and regions whose witnesses
    disagree or that have none, get their volumes summed again, every voxel of every block
    reaching them (serially, here: folds are rare).
    """
    from scipy import ndimage

    num, den = sums[0], sums[1].copy()
    unsure = sums[2] > 0 if len(sums) > 2 else np.zeros(den.shape, bool)  # (2: no block's part)
    free = ~(plan.boundary | unsure)
    labels, n = ndimage.label(free)
    redo_mask = unsure
    if n:
        w = plan.witness & free
        lab, got = labels[w], den[w]
        count = np.rint(got)
        lowest, highest = np.full(n + 1, np.inf), np.full(n + 1, -np.inf)
        np.minimum.at(lowest, lab, count)
        np.maximum.at(highest, lab, count)
        off = np.zeros(n + 1, bool)
        off[lab[np.abs(got - count) > 1e-6]] = True
        good = np.isfinite(lowest) & (lowest == highest) & ~off
        good[0] = False
        den = np.where(free & good[labels], np.where(good, lowest, 0.0)[labels], den)
        redo_mask = redo_mask | (free & ~good[labels])
    if redo_mask.any():
        den[redo_mask] = _volumes_again(redo, redo_mask, bbox_lo)[redo_mask]
    return np.stack([num, den])


def _volumes_again(redo: _Redo, need: np.ndarray, bbox_lo: np.ndarray) -> np.ndarray:
    """Every voxel's volume summed into the MRI voxels ``need`` marks (every block reaching them)."""
    acc = np.zeros(need.shape)
    for lo, hi, window in redo.blocks:
        nodes = map_nodes(redo.fp, window)
        reach = _nodes_reach(nodes)
        box = None if reach is None else _box_within(*reach, bbox_lo, need.shape)
        if box is None:
            continue
        b_lo, b_shape = box
        o = b_lo - bbox_lo
        sl = tuple(slice(int(o[m]), int(o[m]) + b_shape[m]) for m in range(3))
        if need[sl].any():
            part = _direct(redo.direct, _nodes_kernel, (window, nodes, None), lo, hi, *box)
            acc[sl] += part[1]
    return acc


def resliced_sums(
    store: StoreLike,
    *,
    microscopy: str,
    mri: str,
    channel: str | int | None = None,
    threshold: float | None = None,
    chunks: tuple[int, int, int] = (32, 256, 256),
) -> tuple[da.Array, np.ndarray, dict[str, Any]]:
    """Near-exact density for any chain (slice stacks too): reslice, then integrate exactly.

    The microscopy is resampled (nearest neighbour, through the registrations, by the certified
    lazy resampler) onto an MRI-aligned grid at its own voxel size covering its footprint, then
    integrated exactly with the separable path. The only approximation is the nearest-neighbour
    reslicing, so the error per MRI voxel is of the order of one microscopy voxel layer along
    structure boundaries (microscopy voxel / MRI voxel), with no bias.
    """
    # long by design: the reslice and the exact separable integration share the planned footprint
    from bridge_xr.model.grid import Grid
    from bridge_xr.resampling.blockwise import resample_through

    st = resolve_store(store)
    fp = plan_footprint(st, microscopy, mri)
    mic = read_image(st, microscopy)
    mr = read_image(st, mri)
    shape = tuple(int(mic.sizes[d]) for d in "zyx")
    # the footprint's bounding box only: the faces' nodes (the reslicing maps every voxel)
    faces, step, _ = face_nodes(fp, node_indices(fp, shape))  # type: ignore[arg-type]
    bbox_lo, bbox_shape = _bbox(fp, faces, margin=step)
    to_unit = conversion_factor("micrometer", mr.attrs["unit"])
    fine_um = fp.mic_spacing_um
    n_fine = np.ceil(np.asarray(bbox_shape) * fp.mri_spacing_um / fine_um).astype(int)
    origin_um = fp.mri_origin_um + (bbox_lo - 0.5) * fp.mri_spacing_um + fine_um / 2
    grid = Grid(
        tuple(int(n) for n in n_fine),  # type: ignore[arg-type]
        tuple(float(v) * to_unit for v in fine_um),  # type: ignore[arg-type]
        tuple(float(v) * to_unit for v in origin_um),  # type: ignore[arg-type]
        mr.attrs["unit"],
    )
    models = [(m, not f) for m, f in fp.models[::-1]] or [(LinearModel.identity(), True)]
    # nearest-neighbour reslicing already rounds positions by up to half a voxel: the TPS is
    # mapped by exact nodes every 5 µm + trilinear, without the resampler's certification
    img = resample_through(
        st, moving=microscopy, models=models, grid=grid, order=0, chunks=chunks,
        nan_outside=True, max_error_voxels=None,
    )  # fmt: skip
    if "c" in img.dims:
        if channel is None:
            raise InvalidInputError(
                f"{microscopy!r} has channels {list(img.c.values)}; choose one with `channel`"
            )
        img = img.isel(c=channel) if isinstance(channel, int) else img.sel(c=str(channel))
    v = img.data
    valid = ~da.isnan(v)
    vals = da.where(valid, v, 0.0)
    kind = mic.attrs.get("bridge_xr", {}).get("kind", "image")
    if threshold is not None:
        vals = da.where(valid & (vals > threshold), 1.0, 0.0)
    elif kind == "labels":
        vals = da.where(valid & (vals > 0), 1.0, 0.0)
    diagonal = np.stack(
        [fine_um / fp.mri_spacing_um, (origin_um - fp.mri_origin_um) / fp.mri_spacing_um + 0.5]
    )
    fine_fp = dataclasses.replace(fp, diagonal=diagonal)
    total = _slab_total(
        vals.astype(np.float32), valid.astype(np.float32), fine_fp, bbox_lo, bbox_shape
    )
    info = {
        "microscopy": microscopy,
        "mri": mri,
        "path": "resliced",
        "reslice_spacing_um": [float(v) for v in fine_um],
        "chain": [type(m).__name__ + ("" if f else "^-1") for m, f in fp.models],
        "threshold": threshold,
        "blocks": int(np.prod(vals.numblocks)),
    }
    return total, bbox_lo, info


def density(
    store: StoreLike,
    *,
    microscopy: str,
    mri: str,
    channel: str | int | None = None,
    threshold: float | None = None,
    method: Method = "exact",
    block_voxels: int = 2**20,
    force_general: bool = False,
) -> xr.Dataset:
    """``fraction`` and ``coverage`` of every MRI voxel (lazy, on the MRI grid, NaN where uncovered).

    Parameters
    ----------
    store : Scene, str, path or zarr store
        The subject.
    microscopy : str
        Microscopy image (registered to ``mri`` through any chain).
    mri : str
        The MRI image whose grid the result is on.
    channel : str or int, optional
        Channel of a multichannel microscopy image.
    threshold : float, optional
        Binarise the microscopy above this value (volume fraction); else the mean intensity.
    method : {'exact', 'resliced', 'bilinear'}
        Footprint integral (exact), nearest reslice then exact integration (near-exact; needed
        through slice-by-slice registrations), or the paper's bilinear downsampling.
    block_voxels : int
        Microscopy voxels per task of the node kernel (a TPS) where blocks are read through zarr.
    force_general : bool
        Use the Kuhn path even where the separable one applies (for testing).

    Returns
    -------
    xarray.Dataset
        ``fraction`` and ``coverage`` (lazy, MRI grid, NaN where uncovered).

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> ds = density(tiny_scene(registered=True), microscopy="micro", mri="mri", threshold=100)
    >>> float(ds["fraction"].max()), float(ds["coverage"].max())
    (1.0, 1.0)
    """
    st = resolve_store(store)
    mr = read_image(st, mri)
    shape = tuple(int(mr.sizes[d]) for d in "zyx")
    if method == "bilinear":
        frac, cov = _bilinear(st, microscopy, mri, channel, threshold)
        info: dict[str, Any] = {"microscopy": microscopy, "mri": mri, "path": "bilinear"}
    elif method in ("exact", "resliced"):
        if method == "exact":
            sums, lo, info = footprint_sums(
                st, microscopy=microscopy, mri=mri, channel=channel, threshold=threshold,
                block_voxels=block_voxels, force_general=force_general,
            )  # fmt: skip
        else:
            sums, lo, info = resliced_sums(
                st, microscopy=microscopy, mri=mri, channel=channel, threshold=threshold
            )
        pad = [(int(lo[a]), shape[a] - int(lo[a]) - sums.shape[a + 1]) for a in range(3)]
        num = da.pad(sums[0], pad)
        den = da.pad(sums[1], pad)
        # a fully covered voxel's volume is summed from many pieces: 1 to rounding, shown as 1
        cov = da.where(abs(den - 1.0) <= 1e-9, 1.0, den)
        frac = da.where(den > 0, num / da.where(den > 0, den, 1.0), np.nan)
    else:
        raise InvalidInputError(f"unknown method {method!r}; use exact, resliced or bilinear")
    sp = tuple(mr.attrs["spacing"][d] for d in "zyx")
    org = tuple(mr.attrs["origin"][d] for d in "zyx")
    kw = {"dims": ("z", "y", "x"), "spacing": sp, "origin": org, "unit": mr.attrs["unit"]}
    ds = xr.Dataset({"fraction": make_image(frac, **kw), "coverage": make_image(cov, **kw)})
    from bridge_xr.scene.chains import chain_error
    from bridge_xr.scene.mapping import path_between

    chain = path_between(st, mri, microscopy) if microscopy != mri else []
    ds.attrs["density"] = {**info, "method": method, "chain_error": chain_error(chain)}
    return ds
