"""Sampling one output block of a resample: where its voxels fall, what to read, interpolation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
import zarr
from scipy.ndimage import map_coordinates

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import open_group, read_image, read_multiscale_info
from bridge_xr.model.grid import Grid
from bridge_xr.model.image import origin_um, spacing_um
from bridge_xr.model.pointmaps import Model, ThinPlateSpline
from bridge_xr.model.units import conversion_factor
from bridge_xr.resampling.blocks import map_block


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
    may_nan: bool  # an inverse TPS hop: points without an inverse come back NaN
    nan_outside: bool

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
            may_nan=any(isinstance(m, ThinPlateSpline) and not fwd for m, fwd in models),
            nan_outside=nan_outside,
        )
        return sampler, mov, lvl

    @property
    def out_dtype(self) -> np.dtype[Any]:
        """float32 with ``nan_outside`` (NaN = no data), else the moving image's dtype."""
        return np.dtype(np.float32) if self.nan_outside else self.dtype

    def __call__(self, template: np.ndarray, block_info: Any = None) -> np.ndarray:
        result, inside = self._sample(block_info[0]["array-location"][-3:])
        if not self.nan_outside:
            return result
        res = result.astype(np.float32)
        res[..., ~inside] = np.nan
        return res

    def _indices(self, loc: Any) -> tuple[list[np.ndarray], np.ndarray]:
        """Moving-image voxel indices of the block's voxel centres, and which lie inside it."""
        axes = [self.out_origin_um[i] + np.arange(a, b) * self.out_spacing_um[i]
                for i, (a, b) in enumerate(loc)]  # fmt: skip
        coords = map_block(self.models, axes, self.max_err_um)  # (3, *shape) zyx µm
        idx = [(coords[i] - self.mov_origin_um[i]) / self.mov_spacing_um[i] for i in range(3)]
        inside = np.ones(coords.shape[1:], dtype=bool)
        for i in range(3):
            n = self.arr.shape[-3 + i]
            inside &= np.isfinite(idx[i]) & (idx[i] >= -0.5) & (idx[i] <= n - 0.5)
        return idx, inside

    def _sample(self, loc: Any) -> tuple[np.ndarray, np.ndarray]:
        idx, inside = self._indices(loc)
        out = np.zeros((self.n_c, *inside.shape), dtype=self.dtype)
        empty = (out if self.channels else out[0]), inside
        if self.may_nan:
            finite = np.isfinite(idx[0]) & np.isfinite(idx[1]) & np.isfinite(idx[2])
            if not finite.any():
                return empty
            idx = [np.where(finite, v, np.nanmin(v)) for v in idx]
        pad = 1 if self.order <= 1 else 3
        lo = np.array([max(int(np.floor(v.min())) - pad, 0) for v in idx])
        hi = np.minimum(np.array([int(np.ceil(v.max())) + pad + 1 for v in idx]),
                        np.asarray(self.arr.shape[-3:]))  # fmt: skip
        if np.any(hi <= lo):
            return empty
        # only the bounding box of the moving image this block needs is read
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        sub = np.asarray(self.arr[(slice(None), *sl)] if self.channels else self.arr[sl])
        sub = sub if self.channels else sub[None]
        coords = np.stack([idx[i] - lo[i] for i in range(3)])
        for c in range(self.n_c):
            out[c] = self._interpolate(sub[c], coords, inside)
        return (out if self.channels else out[0]), inside

    def _interpolate(self, sub: np.ndarray, coords: np.ndarray, inside: np.ndarray) -> np.ndarray:
        vals = map_coordinates(
            sub.astype(np.float32),
            coords,
            order=self.order,
            # the image extends half a voxel beyond its outer voxel centres: sample that rim
            # like ITK does (nearest edge value), and give 0 only outside the image
            mode="nearest",
            prefilter=self.order > 1,
        )
        vals[~inside] = 0
        if np.issubdtype(self.dtype, np.integer):
            info_i = np.iinfo(self.dtype)
            vals = np.clip(np.round(vals), info_i.min, info_i.max)
        return vals
