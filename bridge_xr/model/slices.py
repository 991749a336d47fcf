"""Slice stacks: one 2D registration per physical slice, kept together as one 3D map.

Ex vivo vibratome slices (80-100 µm thick, imaged in 2D) are registered one by one onto the
matching slices of a resliced ex vivo MRI whose slice thickness is the section thickness (the
paper's 3D-printed device gives both the same plane). :class:`SliceStackModel` is the whole
stack's map fixed -> moving (the resampling direction, like every fitted model here): a fixed
point ``(x, y, z)`` lies in fixed slice ``j`` (its nearest slice centre); if ``j`` is paired
with moving slice ``k``, its ``(x, y)`` goes through slice ``k``'s own 2D model and its depth
within the slab is kept in proportion. Points in unpaired slices map to NaN (outside), never to
a neighbour's model.

Each 2D model is an ordinary 3D model acting on ``(x, y, 0)`` with ``z`` left alone (a
:class:`~bridge_xr.model.pointmaps.LinearModel` or a
:class:`~bridge_xr.model.pointmaps.ThinPlateSpline` with centres on ``z = 0``), so evaluation,
inversion (Newton for the TPS) and the stored description are the tested 3D code's.

Examples
--------
>>> import numpy as np
>>> f = np.array([[0, 0], [100, 0], [0, 100], [100, 100.0]])
>>> m = fit_plane("affine", f, f * 2 + 5)
>>> m.forward_points(np.array([[10.0, 10.0, 0.0]])).round(9).tolist()
[[25.0, 25.0, 0.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bridge_xr.errors import EstimationError, NoAffineError, NotInvertibleError
from bridge_xr.model.pointmaps import (
    Array,
    Kernel,
    LinearModel,
    ThinPlateSpline,
    _kernel,
    _ZyxMap,
    swap_xyz_zyx,
)

__all__ = ["MIN_POINTS_2D", "SliceStackModel", "fit_plane", "slice_index"]

PlaneModel = Literal["rigid", "similarity", "affine", "tps"]

#: fewest landmarks per slice each 2D model needs
MIN_POINTS_2D = {"rigid": 2, "similarity": 2, "affine": 3, "tps": 3}


def slice_index(z: Array, z0: float, dz: float) -> Array:
    """Index of the slice (slab) holding each depth ``z`` (slice ``i`` centred at ``z0 + i dz``).

    A depth exactly on a boundary belongs to the upper slice (no banker's rounding).

    Examples
    --------
    >>> slice_index(np.array([0.0, 49.9, 50.0, 149.0]), 0.0, 100.0).tolist()
    [0, 0, 1, 1]
    """
    return np.floor((np.asarray(z, dtype=np.float64) - z0) / dz + 0.5).astype(np.int64)


def _check_plane(f: Array, m: Array, model: str) -> None:
    if model not in MIN_POINTS_2D:
        raise EstimationError(f"unknown model {model!r}; use rigid, similarity, affine or tps")
    if f.ndim != 2 or f.shape[1] != 2 or f.shape != m.shape:
        raise EstimationError(f"2D landmarks must be two (N, 2) arrays; got {f.shape}, {m.shape}")
    if not (np.isfinite(f).all() and np.isfinite(m).all()):
        raise EstimationError("landmarks contain NaN or infinite coordinates")
    need = MIN_POINTS_2D[model]
    if len(f) < need:
        raise EstimationError(f"2D {model} needs at least {need} landmarks; got {len(f)}")
    for pts, which in ((f, "fixed"), (m, "moving")):
        if len(np.unique(np.round(pts, 9), axis=0)) != len(pts):
            raise EstimationError(f"duplicate {which} landmarks (two at the same position)")
        sv = np.linalg.svd(pts - pts.mean(axis=0), compute_uv=False)
        if model in {"affine", "tps"} and sv[-1] / max(sv[0], 1e-300) < 1e-9:
            raise EstimationError(f"{which} landmarks are collinear; 2D {model} needs a spread")


def _lift(a2: Array, t2: Array, kind: PlaneModel) -> LinearModel:
    a = np.eye(3)
    a[:2, :2] = a2
    return LinearModel(kind, a, np.array([t2[0], t2[1], 0.0]))


def fit_plane(
    model: PlaneModel,
    fixed_xy: Array,
    moving_xy: Array,
    *,
    kernel: Kernel = "r2logr",
    smoothing: float = 0.0,
) -> LinearModel | ThinPlateSpline:
    """Fit a 2D map fixed -> moving (µm, x, y), returned as a 3D model acting on ``(x, y, 0)``.

    Rigid and similarity are 2D Procrustes (proper rotations only); affine is least squares; the
    TPS is the 2D thin-plate spline, kernel ``r² log r`` by default (the 2D biharmonic; ``r``
    is the 3D one that 3D Slicer uses for volumes).

    Parameters
    ----------
    model : {'rigid', 'similarity', 'affine', 'tps'}
        The 2D model.
    fixed_xy, moving_xy : array of shape (N, 2)
        Paired points, µm.
    kernel : {'r2logr', 'r'}
        TPS kernel.
    smoothing : float
        TPS regularisation (0 interpolates the landmarks).

    Returns
    -------
    LinearModel or ThinPlateSpline
        Maps ``(x, y, z)`` to ``(x', y', z)``.

    Examples
    --------
    >>> f = np.array([[0, 0], [100, 0], [0, 100.0]])
    >>> fit_plane("rigid", f, f + [3.0, 4.0]).translation.round(9).tolist()
    [3.0, 4.0, 0.0]
    """
    f = np.asarray(fixed_xy, dtype=np.float64)
    m = np.asarray(moving_xy, dtype=np.float64)
    _check_plane(f, m, model)
    if model in {"rigid", "similarity"}:
        fc, mc = f.mean(axis=0), m.mean(axis=0)
        f0, m0 = f - fc, m - mc
        u, sig, vt = np.linalg.svd(m0.T @ f0)
        d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
        rot = u @ d @ vt
        s = float(np.trace(np.diag(sig) @ d) / np.sum(f0**2)) if model == "similarity" else 1.0
        return _lift(s * rot, mc - s * rot @ fc, model)
    x = np.hstack([f, np.ones((len(f), 1))])
    if model == "affine":
        sol, *_ = np.linalg.lstsq(x, m, rcond=None)
        if abs(np.linalg.det(sol[:2])) < 1e-12:
            raise EstimationError("fitted 2D matrix is singular")
        return _lift(sol[:2].T, sol[2], "affine")
    if smoothing < 0:
        raise EstimationError(f"smoothing must be >= 0; got {smoothing}")
    n = len(f)
    k = _kernel(np.linalg.norm(f[:, None] - f[None], axis=2), kernel) + smoothing * np.eye(n)
    p = np.hstack([np.ones((n, 1)), f])
    lhs = np.zeros((n + 3, n + 3))
    lhs[:n, :n], lhs[:n, n:], lhs[n:, :n] = k, p, p.T
    try:
        sol = np.linalg.solve(lhs, np.vstack([m, np.zeros((3, 2))]))
    except np.linalg.LinAlgError as exc:
        raise EstimationError(f"2D TPS system is singular: {exc}") from exc
    centres = np.hstack([f, np.zeros((n, 1))])
    weights = np.hstack([sol[:n], np.zeros((n, 1))])
    aff = np.zeros((4, 3))  # rows [1, x, y, z] -> moving x, y, z
    aff[:3, :2] = sol[n:]
    aff[3, 2] = 1.0
    return ThinPlateSpline.from_description(
        {
            "centres": centres,
            "weights": weights,
            "affine": aff,
            "kernel": kernel,
            "smoothing": smoothing,
        }
    )


def _plane_from(d: dict[str, Any]) -> LinearModel | ThinPlateSpline:
    if d["kind"] == "tps":
        return ThinPlateSpline.from_description(d)
    return LinearModel(d["kind"], np.asarray(d["matrix"]), np.asarray(d["translation"]))


@dataclass(frozen=True)
class SliceStackModel(_ZyxMap):
    """Fixed slice ``j`` -> moving slice ``k`` through slice ``k``'s own 2D model.

    ``fixed_z`` and ``moving_z`` are (centre of slice 0, slice spacing) in µm; ``planes`` holds
    ``(moving slice, fixed slice, 2D model fixed -> moving)``, one per registered slice.
    """

    plane_model: PlaneModel
    fixed_z: tuple[float, float]
    moving_z: tuple[float, float]
    planes: tuple[tuple[int, int, LinearModel | ThinPlateSpline], ...]
    kind: Literal["slices"] = "slices"

    def __post_init__(self) -> None:
        ks = [k for k, _, _ in self.planes]
        js = [j for _, j, _ in self.planes]
        if len(set(ks)) != len(ks) or len(set(js)) != len(js):
            raise EstimationError("each slice may be paired once on each side")

    def _map(self, pts: Array, *, inverse: bool, strict: bool) -> Array:
        p = np.asarray(pts, dtype=np.float64)
        out = np.full_like(p, np.nan)
        (a0, da_), (b0, db) = (
            (self.moving_z, self.fixed_z) if inverse else (self.fixed_z, self.moving_z)
        )
        idx = slice_index(p[:, 2], a0, da_)
        for k, j, model in self.planes:
            src, dst = (k, j) if inverse else (j, k)
            sel = np.flatnonzero(idx == src)
            if not sel.size:
                continue
            flat = np.hstack([p[sel, :2], np.zeros((sel.size, 1))])
            if not inverse:
                xy = model.forward_points(flat)
            elif isinstance(model, ThinPlateSpline):
                xy = model.inverse_points(flat, strict=strict)
            else:
                xy = model.inverse_points(flat)
            out[sel, :2] = xy[:, :2]
            out[sel, 2] = b0 + dst * db + (p[sel, 2] - (a0 + src * da_)) * (db / da_)
        return out

    def forward_points(self, fixed: Array) -> Array:
        """Fixed -> moving (x, y, z µm); NaN in fixed slices without a registered partner."""
        return self._map(fixed, inverse=False, strict=False)

    def inverse_points(self, moving: Array, *, strict: bool = True) -> Array:
        """Moving -> fixed (x, y, z µm); NaN in moving slices that were not registered."""
        return self._map(moving, inverse=True, strict=strict)

    def transform_points(
        self, points: Array, *, inverse: bool = False, strict: bool = True
    ) -> Array:
        """Map ``(N, 3)`` z, y, x µm points fixed -> moving (or back with ``inverse``).

        Examples
        --------
        >>> f = np.array([[0, 0], [100, 0], [0, 100.0]])
        >>> m = SliceStackModel("rigid", (50.0, 100.0), (50.0, 100.0),
        ...                     ((0, 1, fit_plane("rigid", f, f + [2.0, 0.0])),))
        >>> m.transform_points(np.array([[150.0, 0.0, 0.0]])).round(9).tolist()  # fixed slice 1 -> 0
        [[50.0, 0.0, 2.0]]
        """
        xyz = swap_xyz_zyx(np.asarray(points, dtype=np.float64))
        res = self._map(xyz, inverse=inverse, strict=strict)
        return swap_xyz_zyx(res)

    def to_affine(self) -> Array:
        """A slice stack is not one affine: always raises."""
        raise NoAffineError("a slice-by-slice registration is not affine; use its points")

    def inverse(self) -> SliceStackModel:
        """Not available in closed form: raises; use ``transform_points(..., inverse=True)``."""
        raise NotInvertibleError("use `transform_points(inverse=True)` for a slice stack")

    def describe(self) -> dict[str, Any]:
        """Exact definition (JSON): slice geometry on both sides and every slice's 2D model."""
        return {
            "kind": "slices",
            "plane_model": self.plane_model,
            "direction": "fixed->moving (resampling)",
            "units": "micrometer",
            "axis_order": "xyz",
            "fixed_z_um": list(self.fixed_z),
            "moving_z_um": list(self.moving_z),
            "planes": [
                {"moving_slice": k, "fixed_slice": j, "definition": m.describe()}
                for k, j, m in self.planes
            ],
        }

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> SliceStackModel:
        """Rebuild from :meth:`describe` output."""
        return cls(
            d["plane_model"],
            (float(d["fixed_z_um"][0]), float(d["fixed_z_um"][1])),
            (float(d["moving_z_um"][0]), float(d["moving_z_um"][1])),
            tuple(
                (int(p["moving_slice"]), int(p["fixed_slice"]), _plane_from(p["definition"]))
                for p in d["planes"]
            ),
        )
