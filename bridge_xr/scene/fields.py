"""Non-linear maps rasterised as OME-Zarr displacement fields (forward and inverse), with their error.

A TPS is sampled on a regular grid (trilinear, certified error); a slice stack one plane per
slice (nearest, measured error).
"""

from __future__ import annotations

import numpy as np

from bridge_xr.errors import InvalidInputError
from bridge_xr.model.pointmaps import Model, ThinPlateSpline, swap_xyz_zyx
from bridge_xr.model.slices import SliceStackModel


def default_field_spacing(
    extent: dict[str, tuple[float, float]], voxel_um: float, *, max_points: float = 8e6
) -> float:
    """Half the fixed voxel size, coarsened until the field has at most ``max_points`` points."""
    spacing = voxel_um / 2
    span = np.array([hi - lo for lo, hi in extent.values()])
    while np.prod(np.ceil(span / spacing) + 1) > max_points:
        spacing *= 1.25
    return float(spacing)


def _regular_grid(
    extent_zyx_um: dict[str, tuple[float, float]], spacing_um: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, shape, points (n, 3) zyx)`` of a grid covering ``extent`` at ``spacing_um``."""
    lo = np.array([extent_zyx_um[d][0] for d in "zyx"])
    hi = np.array([extent_zyx_um[d][1] for d in "zyx"])
    shape = np.maximum(2, np.ceil((hi - lo) / spacing_um).astype(int) + 1)
    axes = [lo[i] + np.arange(shape[i]) * spacing_um for i in range(3)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    return lo, shape, np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)


def rasterise_tps_inverse(
    tps: ThinPlateSpline,
    extent_zyx_um: dict[str, tuple[float, float]],
    spacing_um: float,
    *,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Inverse (moving -> fixed) displacements on a grid over the moving image, by Newton inversion.

    Grid points where a folded TPS has no inverse take the nearest valid value and are counted.
    Returns ``(field, origin_zyx, max_error_um, n_without_inverse)``; the error is the largest
    ``|TPS(field-mapped probe) - probe|`` at random probes away from folds.
    """
    from scipy.ndimage import distance_transform_edt, map_coordinates

    lo, shape, q = _regular_grid(extent_zyx_um, spacing_um)
    p = tps.transform_points(q, inverse=True, strict=False)
    disp = (p - q).T.reshape(3, *shape)
    bad = ~np.isfinite(disp).all(axis=0)
    n_bad = int(bad.sum())
    if n_bad:
        if n_bad == bad.size:
            raise InvalidInputError("the TPS has no inverse anywhere on the moving image")
        _, idx = distance_transform_edt(bad, return_indices=True)
        disp = disp[(slice(None), *idx)]
    field = disp.astype(np.float32)
    rng = np.random.default_rng(seed)
    probe = lo + rng.uniform(0, 1, size=(4000, 3)) * (shape - 1) * spacing_um
    pidx = ((probe - lo) / spacing_um).T
    near_bad = map_coordinates(bad.astype(np.float32), pidx, order=1) > 0
    inv = probe + np.stack(
        [map_coordinates(c.astype(np.float64), pidx, order=1) for c in field], axis=1
    )
    back = tps.transform_points(inv)
    err = np.linalg.norm(back - probe, axis=1)[~near_bad]
    return field, lo, float(err.max(initial=0.0)), n_bad


def rasterise_tps(
    tps: ThinPlateSpline,
    extent_zyx_um: dict[str, tuple[float, float]],
    spacing_um: float,
    *,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact TPS displacements (zyx µm, float32) on a grid covering ``extent``; certified error.

    Returns ``(field (3, nz, ny, nx), origin_zyx, max_error_um)``; the error is the largest
    deviation between trilinear interpolation of the stored field and the exact TPS at random
    points plus points around every landmark.
    """
    from scipy.ndimage import map_coordinates

    lo, shape, pts_zyx = _regular_grid(extent_zyx_um, spacing_um)
    moved = tps.transform_points(pts_zyx)
    field = (moved - pts_zyx).T.reshape(3, *shape).astype(np.float32)
    rng = np.random.default_rng(seed)
    span = (shape - 1) * spacing_um
    probe = lo + rng.uniform(0, 1, size=(4000, 3)) * span
    near = swap_xyz_zyx(tps.centres)[:, None, :] + rng.normal(
        0, spacing_um, size=(len(tps.centres), 20, 3)
    )
    probe = np.vstack([probe, np.clip(near.reshape(-1, 3), lo, lo + span)])
    idx = ((probe - lo) / spacing_um).T
    interp = np.stack([map_coordinates(c.astype(np.float64), idx, order=1) for c in field], axis=1)
    exact = tps.transform_points(probe) - probe
    err = float(np.linalg.norm(interp - exact, axis=1).max())
    return field, lo, err


def rasterise_slices(
    model: SliceStackModel,
    extent_zyx_um: dict[str, tuple[float, float]],
    spacing_um: float,
    *,
    inverse: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], float]:
    """A slice stack's displacements (zyx µm, float32), one plane per slice, read by nearest.

    The field's z planes are the slice centres of the side it starts from (fixed, or moving with
    ``inverse``), so nearest interpolation puts every point in its own slice; in-plane samples are
    ``spacing_um`` apart. NaN where a slice has no registered partner. Returns ``(field, origin,
    spacing (z, y, x), max_error_um)``: the error is the largest deviation of the nearest-sampled
    field from the exact map at random points inside registered slices.
    """
    z0, dz = model.moving_z if inverse else model.fixed_z
    lo = np.array([extent_zyx_um[d][0] for d in "zyx"])
    hi = np.array([extent_zyx_um[d][1] for d in "zyx"])
    first = int(np.ceil((lo[0] - z0) / dz - 0.5))
    last = int(np.floor((hi[0] - z0) / dz + 0.5))
    zs = z0 + np.arange(first, max(first, last) + 1) * dz
    yx = [lo[i] + np.arange(max(2, int(np.ceil((hi[i] - lo[i]) / spacing_um)) + 1)) * spacing_um
          for i in (1, 2)]  # fmt: skip
    zz, yy, xx = np.meshgrid(zs, *yx, indexing="ij")
    q = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)
    moved = model.transform_points(q, inverse=inverse, strict=False)
    field = (moved - q).T.reshape(3, *zz.shape).astype(np.float32)
    origin = np.array([zs[0], yx[0][0], yx[1][0]])
    spacing = (float(dz), float(spacing_um), float(spacing_um))
    rng = np.random.default_rng(seed)
    probe = lo + rng.uniform(0, 1, size=(4000, 3)) * (hi - lo)
    idx = np.rint((probe - origin) / np.array(spacing)).astype(int)
    idx = np.clip(idx, 0, np.array(field.shape[1:]) - 1)
    near = field[:, idx[:, 0], idx[:, 1], idx[:, 2]].T
    exact = model.transform_points(probe, inverse=inverse, strict=False) - probe
    ok = np.isfinite(exact).all(axis=1) & np.isfinite(near).all(axis=1)
    err = np.linalg.norm(near[ok] - exact[ok], axis=1)
    return field, origin, spacing, float(err.max(initial=0.0))


def rasterise_model(
    model: Model,
    extent_zyx_um: dict[str, tuple[float, float]],
    spacing_um: float,
    *,
    inverse: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Any smooth map's displacements (zyx µm, float32) on a regular grid, trilinear.

    Returns ``(field, origin_zyx, max_error_um)``: the error is the largest deviation of the
    trilinearly interpolated field from the exact map at 4000 random points (measured, not a
    bound). Points without an image (NaN) are filled from their nearest valid neighbour.
    """
    from scipy.ndimage import distance_transform_edt, map_coordinates

    lo, shape, q = _regular_grid(extent_zyx_um, spacing_um)
    disp = (model.transform_points(q, inverse=inverse, strict=False) - q).T.reshape(3, *shape)
    bad = ~np.isfinite(disp).all(axis=0)
    if bad.all():
        raise InvalidInputError("the map has no value anywhere on the grid")
    if bad.any():
        _, idx = distance_transform_edt(bad, return_indices=True)
        disp = disp[(slice(None), *idx)]
    field = disp.astype(np.float32)
    rng = np.random.default_rng(seed)
    probe = lo + rng.uniform(0, 1, size=(4000, 3)) * (shape - 1) * spacing_um
    pidx = ((probe - lo) / spacing_um).T
    interp = np.stack([map_coordinates(c.astype(np.float64), pidx, order=1) for c in field], 1)
    exact = model.transform_points(probe, inverse=inverse, strict=False) - probe
    ok = np.isfinite(exact).all(axis=1)
    err = np.linalg.norm(interp[ok] - exact[ok], axis=1)
    return field, lo, float(err.max(initial=0.0))
