"""Sampling one output block of a resample: where its voxels fall, what to read, interpolation."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
import zarr
from scipy.ndimage import map_coordinates

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.chunks import ChunkDecoder
from bridge_xr.io.read import open_group, read_image, read_multiscale_info
from bridge_xr.model.grid import Grid
from bridge_xr.model.image import origin_um, spacing_um
from bridge_xr.model.pointmaps import Model
from bridge_xr.model.units import conversion_factor
from bridge_xr.resampling import _kernels
from bridge_xr.resampling.blocks import BlockMap, block_map


def _pick_level(info: Any, unit: str, out_spacing_um: float, level: int | None) -> int:
    if level is not None:
        return level
    fac = conversion_factor(unit, "micrometer")
    best = 0
    for k, scale in enumerate(info.level_scale):
        sp = [s * fac for s, d in zip(scale, info.dims, strict=True) if d in ("z", "y", "x")]
        if max(sp) <= out_spacing_um * 1.0001:
            best = k
    return best


class ChunkCache:
    """Decompressed chunks of one zarr array, shared by the threads sampling its blocks.

    Neighbouring output blocks read overlapping moving regions; without a cache every chunk is
    decompressed once for each block that touches it (4-8 times through a mild warp). Chunks
    are kept whole (all channels) and the least recently used are dropped beyond ``max_bytes``,
    so memory stays bounded whatever the volume. Not pickled: a copy sent to another process
    (a dask-distributed worker) starts empty.
    """

    def __init__(self, arr: zarr.Array[Any], *, max_bytes: int = 192 * 2**20) -> None:
        self.arr = arr
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._chunks: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._bytes = 0
        self.decoded = 0  # chunks read from the store (a cache miss)
        # whole inner chunks decoded straight into the cached array where the codecs allow
        # (a local store): no zarr output array to fill and copy, no event-loop round trips
        dec = ChunkDecoder.of(arr)
        lead = arr.ndim - 3
        # a key reads every channel: only where one chunk holds them all
        fits = dec is not None and tuple(dec.inner[:lead]) == tuple(arr.shape[:lead])
        self._decoder = dec if fits else None

    def __getstate__(self) -> dict[str, Any]:
        return {"arr": self.arr, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["arr"], max_bytes=state["max_bytes"])  # type: ignore[misc]

    def _chunk(self, key: tuple[int, ...], sl: tuple[slice, ...]) -> np.ndarray:
        with self._lock:
            got = self._chunks.get(key)
            if got is not None:
                self._chunks.move_to_end(key)
                return got
        # read outside the lock (two threads may read the same chunk once each: harmless)
        if self._decoder is not None:
            whole = np.empty(self._decoder.inner, dtype=self._decoder.dtype)
            self._decoder.read((0,) * (self.arr.ndim - 3) + key, whole)
            cut: tuple[Any, ...] = (Ellipsis, *(slice(0, s.stop - s.start) for s in sl[-3:]))
            got = whole[cut]
            if got.shape != whole.shape:  # an edge chunk: its part inside the array, compact
                got = got.copy()
        else:
            got = np.asarray(self.arr[sl])
        with self._lock:
            if key not in self._chunks:
                self._chunks[key] = got
                self._bytes += got.nbytes
                self.decoded += 1
            while self._bytes > self.max_bytes and len(self._chunks) > 1:
                _, old = self._chunks.popitem(last=False)
                self._bytes -= old.nbytes
        return got

    def read(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """``arr[..., lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]`` (every leading axis whole)."""
        lead = self.arr.ndim - 3
        csize = np.asarray(self.arr.chunks[-3:])
        first, last = lo // csize, (hi - 1) // csize
        out = np.empty((*self.arr.shape[:lead], *(hi - lo)), dtype=self.arr.dtype)
        for key in np.ndindex(*(last - first + 1)):
            c = first + np.asarray(key)
            c_lo = c * csize
            c_hi = np.minimum(c_lo + csize, self.arr.shape[-3:])
            chunk = self._chunk(
                tuple(int(v) for v in c),
                (
                    *(slice(None),) * lead,
                    *(slice(int(a), int(b)) for a, b in zip(c_lo, c_hi, strict=True)),
                ),
            )
            a, b = np.maximum(lo, c_lo), np.minimum(hi, c_hi)
            dst: tuple[Any, ...] = (
                Ellipsis,
                *(slice(int(u), int(v)) for u, v in zip(a - lo, b - lo, strict=True)),
            )
            src: tuple[Any, ...] = (
                Ellipsis,
                *(slice(int(u), int(v)) for u, v in zip(a - c_lo, b - c_lo, strict=True)),
            )
            out[dst] = chunk[src]
        return out


@dataclass(frozen=True)
class _BlockSampler:
    """One output block: map its voxel centres into the moving image, read what they need, sample.

    Called by dask once per output block (``map_blocks``); holds only what every block shares.
    """

    arr: zarr.Array[Any]  # the moving pyramid level read from
    models: list[tuple[Model, bool]]  # output grid space -> moving space
    out_origin_um: np.ndarray
    out_spacing_um: np.ndarray
    mov_origin_um: np.ndarray
    mov_spacing_um: np.ndarray
    n_c: int
    channels: bool
    dtype: np.dtype[Any]
    order: int
    max_err_um: float | None
    nan_outside: bool
    cache: ChunkCache = field(compare=False, repr=False)

    @classmethod
    def open(
        cls,
        where: StoreLike,
        moving: str,
        models: list[tuple[Model, bool]],
        grid: Grid,
        *,
        order: int,
        level: int | None,
        max_error_voxels: float | None,
        nan_outside: bool,
    ) -> tuple[_BlockSampler, xr.DataArray, int]:
        """The sampler for ``moving`` at the coarsest level still as fine as ``grid``."""
        store = resolve_store(where)
        out_sp_um = np.asarray(grid.spacing) * conversion_factor(grid.unit, "micrometer")
        mov_group = open_group(store, moving)
        info = read_multiscale_info(mov_group)
        lvl = _pick_level(info, info.unit or "micrometer", float(out_sp_um.min()), level)
        mov = read_image(store, moving, level=lvl)
        arr = mov_group[info.level_paths[lvl]]
        if not isinstance(arr, zarr.Array):
            raise InvalidInputError(f"{moving!r} level {lvl} is not an array")
        if any(d not in ("c", "z", "y", "x") for d in mov.dims):
            msg = f"{moving!r} has dims {mov.dims}; resampling supports (c,) z, y, x"
            raise InvalidInputError(msg)
        sampler = cls(
            arr=arr,
            models=models,
            out_origin_um=np.asarray(grid.origin) * conversion_factor(grid.unit, "micrometer"),
            out_spacing_um=out_sp_um,
            mov_origin_um=origin_um(mov),
            mov_spacing_um=spacing_um(mov),
            n_c=int(mov.sizes["c"]) if "c" in mov.dims else 1,
            channels="c" in mov.dims,
            dtype=mov.dtype,
            order=order,
            max_err_um=None
            if max_error_voxels is None
            else max_error_voxels * float(out_sp_um.min()),
            nan_outside=nan_outside,
            cache=ChunkCache(arr),
        )
        return sampler, mov, lvl

    @property
    def out_dtype(self) -> np.dtype[Any]:
        """float32 with ``nan_outside`` (NaN = no data), else the moving image's dtype."""
        return np.dtype(np.float32) if self.nan_outside else self.dtype

    def __call__(self, template: np.ndarray, block_info: Any = None) -> np.ndarray:
        loc = block_info[0]["array-location"][-3:]
        axes = [self.out_origin_um[i] + np.arange(a, b) * self.out_spacing_um[i]
                for i, (a, b) in enumerate(loc)]  # fmt: skip
        bm = block_map(self.models, axes, self.max_err_um)
        out = np.empty((self.n_c, *bm.shape), dtype=self.out_dtype)
        kind = self.dtype.kind
        if self.order <= 1 and (kind in "uib" or (kind == "f" and self.dtype.itemsize >= 4)):
            self._sample_compiled(bm, out)
        else:
            self._sample_scipy(bm, out)
        return out if self.channels else out[0]

    def _index_map(self, bm: BlockMap) -> tuple[Any, np.ndarray, np.ndarray]:
        """The block map in moving voxel indices, and the lowest / highest index it reaches."""
        sp, org = self.mov_spacing_um, self.mov_origin_um
        if bm.affine is not None:
            h = (bm.affine - np.c_[np.zeros((3, 3)), org]) / sp[:, None]
            corners = np.array(np.meshgrid(*([0, n - 1] for n in bm.shape), [1], indexing="ij"))
            ends = h @ corners.reshape(4, -1)
            return h, ends.min(axis=1), ends.max(axis=1)
        if bm.nodes is not None:
            nodes = (bm.nodes - org[:, None, None, None]) / sp[:, None, None, None]
            exact = None if bm.exact_um is None else ((bm.exact_um - org) / sp).T
            pts = nodes.reshape(3, -1) if exact is None else np.c_[nodes.reshape(3, -1), exact]
            return (nodes, exact), pts.min(axis=1), pts.max(axis=1)
        idx = (bm.densify() - org[:, None, None, None]) / sp[:, None, None, None]
        flat = idx.reshape(3, -1)
        if not np.isfinite(flat).all(axis=0).any():  # no voxel has an inverse
            return idx, np.full(3, np.inf), np.full(3, -np.inf)
        return idx, np.nanmin(flat, axis=1), np.nanmax(flat, axis=1)

    def _read(self, lo_f: np.ndarray, hi_f: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The moving region (c, z, y, x) the block needs, and its start; None if none."""
        pad = 1 if self.order <= 1 else 3
        n = np.asarray(self.arr.shape[-3:])
        with np.errstate(invalid="ignore"):
            lo = np.maximum(np.floor(lo_f) - pad, 0)
            hi = np.minimum(np.ceil(hi_f) + pad + 1, n)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()) or np.any(hi <= lo):
            return None
        lo, hi = lo.astype(int), hi.astype(int)
        # only the bounding box of the moving image this block needs is read
        sub = self.cache.read(lo, hi)
        return (sub if self.channels else sub[None]), lo

    def _sample_compiled(self, bm: BlockMap, out: np.ndarray) -> None:
        """Order 0 / 1: positions and interpolation in one compiled pass (``_kernels``)."""
        mapping, lo_f, hi_f = self._index_map(bm)
        fill = np.nan if self.nan_outside else 0.0
        got = self._read(lo_f, hi_f)
        if got is None:
            out[...] = fill
            return
        sub, lo = got
        n = np.asarray(self.arr.shape[-3:])
        clip: tuple[float, float] | None = None
        if self.dtype.kind == "b":
            sub, clip = sub.view(np.uint8), (0.0, 1.0)
        elif self.dtype.kind in "ui":
            info = np.iinfo(self.dtype)
            clip = (float(info.min), float(info.max))
        prm = _kernels.params(-0.5 - lo, n - 0.5 - lo, self.order, clip, fill)
        target = out.view(np.uint8) if out.dtype == bool else out
        if bm.affine is not None:
            h = mapping.copy()
            h[:, 3] -= lo
            for c in range(self.n_c):
                _kernels.sample_affine(np.ascontiguousarray(sub[c]), h, target[c], prm)
        elif bm.nodes is not None:
            nodes, exact = mapping
            nodes = nodes - lo[:, None, None, None]
            for d in range(3):  # an axis with one node: the kernels want two
                if nodes.shape[1 + d] == 1:
                    nodes = np.repeat(nodes, 2, axis=1 + d)
            nodes = np.ascontiguousarray(nodes)
            cells = [
                a
                for k, i in zip(bm.shape, bm.node_idx or [], strict=True)
                for a in _kernels.cells_of(k, i)
            ]
            pts = None if exact is None else np.ascontiguousarray(exact - lo[:, None])
            for c in range(self.n_c):
                plane = np.ascontiguousarray(sub[c])
                _kernels.sample_nodes(plane, nodes, *cells, target[c], prm)
                if pts is not None and bm.exact_at is not None:
                    vals = np.empty(pts.shape[1], dtype=target.dtype)
                    _kernels.sample_points(sub[c], pts, vals, prm)
                    target[c][bm.exact_at] = vals
        else:
            pts = np.ascontiguousarray((mapping - lo[:, None, None, None]).reshape(3, -1))
            for c in range(self.n_c):
                _kernels.sample_points(sub[c], pts, target[c].reshape(-1), prm)

    def _sample_scipy(self, bm: BlockMap, out: np.ndarray) -> None:
        """Cubic B-spline (and dtypes the kernels do not take): scipy's ``map_coordinates``."""
        idx, lo_f, hi_f = self._index_map(BlockMap(shape=bm.shape, dense=bm.densify()))
        got = self._read(lo_f, hi_f)
        fill = np.nan if self.nan_outside else 0
        if got is None:
            out[...] = fill
            return
        sub, lo = got
        n = np.asarray(self.arr.shape[-3:])
        with np.errstate(invalid="ignore"):
            inside = np.all((idx >= -0.5) & (idx <= (n - 0.5)[:, None, None, None]), axis=0)
        coords = np.where(inside, idx - lo[:, None, None, None], 0.0)
        for c in range(self.n_c):
            vals = map_coordinates(
                sub[c].astype(np.float32),
                coords,
                order=self.order,
                # the image extends half a voxel beyond its outer voxel centres: sample that
                # rim like ITK does (nearest edge value), and give 0 only outside the image
                mode="nearest",
                prefilter=self.order > 1,
            )
            if np.issubdtype(self.dtype, np.integer):
                info_i = np.iinfo(self.dtype)
                vals = np.clip(np.round(vals), info_i.min, info_i.max)
            out[c] = np.where(inside, vals, fill)
