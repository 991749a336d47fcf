"""Landmark transforms fitted in the resampling direction (fixed -> moving).

All points are ``(N, 3)`` arrays in micrometres, in each image's intrinsic space, ordered
``x, y, z`` (the landmark CSV order; x is the last array axis). A fitted model maps *fixed* points to
*moving* points (what a resampler needs); :meth:`inverse_points` maps moving points back to fixed
(exactly for linear models, by Newton iteration with the analytic Jacobian for the TPS).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> fixed = rng.uniform(0, 1000, size=(12, 3))
>>> moving = fixed * 1.1 + [5.0, -3.0, 2.0]
>>> m = fit("similarity", fixed, moving)
>>> bool(np.allclose(m.forward_points(fixed), moving))
True
>>> t = fit("tps", fixed, moving)
>>> bool(np.allclose(t.inverse_points(moving), fixed, atol=1e-6))
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
from numpy.typing import NDArray

from bridge_xr.errors import EstimationError, NoAffineError, NotInvertibleError

if TYPE_CHECKING:
    from bridge_xr.model.bspline import BSplineModel
    from bridge_xr.model.slices import SliceStackModel

Array = NDArray[Any]

#: The one place where x, y, z (landmark CSV, stored definitions) meets z, y, x (arrays):
#: a homogeneous 4x4 permutation, its own inverse.
SWAP_XYZ_ZYX = np.eye(4)
SWAP_XYZ_ZYX[:3, :3] = np.eye(3)[::-1]


def swap_xyz_zyx(points: Array) -> Array:
    """``(N, 3)`` points x, y, z <-> z, y, x (the same permutation both ways).

    Examples
    --------
    >>> swap_xyz_zyx(np.array([[1.0, 2.0, 3.0]])).tolist()
    [[3.0, 2.0, 1.0]]
    """
    return np.asarray(points)[:, ::-1]


class _ZyxMap:
    """The transform protocol of :mod:`bridge_xr.model.transforms`, in z, y, x, for fitted maps.

    Fitted models keep their parameters in x, y, z (the landmark order); inside the library
    every caller uses :meth:`transform_points` on ``(N, 3)`` z, y, x points.
    """

    def forward_points(self, fixed: Array) -> Array:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def inverse_points(self, moving: Array) -> Array:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def transform_points(
        self, points: Array, *, inverse: bool = False, strict: bool = True
    ) -> Array:
        """Map ``(N, 3)`` z, y, x µm points fixed -> moving (or moving -> fixed with ``inverse``).

        Against a TPS, points without an inverse (folds) raise, or are NaN when not ``strict``.

        Examples
        --------
        >>> m = LinearModel("rigid", np.eye(3), np.array([1.0, 0.0, 0.0]))  # +1 µm in x
        >>> m.transform_points(np.zeros((1, 3))).tolist()
        [[0.0, 0.0, 1.0]]
        >>> m.transform_points(np.zeros((1, 3)), inverse=True).tolist()
        [[0.0, 0.0, -1.0]]
        """
        xyz = swap_xyz_zyx(np.asarray(points, dtype=np.float64))
        if not inverse:
            return swap_xyz_zyx(self.forward_points(xyz))
        if isinstance(self, ThinPlateSpline):
            return swap_xyz_zyx(self.inverse_points(xyz, strict=strict))
        return swap_xyz_zyx(self.inverse_points(xyz))


ModelName = Literal["rigid", "similarity", "affine", "tps"]
Kernel = Literal["r", "r2logr"]

#: fewest landmarks each model needs
MIN_POINTS = {"rigid": 3, "similarity": 3, "affine": 4, "tps": 5}


def _check_points(fixed: Array, moving: Array, model: str) -> tuple[Array, Array]:
    f = np.asarray(fixed, dtype=np.float64)
    m = np.asarray(moving, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != 3 or f.shape != m.shape:
        msg = f"landmarks must be two (N, 3) arrays of equal shape; got {f.shape} and {m.shape}"
        raise EstimationError(msg)
    if not (np.isfinite(f).all() and np.isfinite(m).all()):
        raise EstimationError("landmarks contain NaN or infinite coordinates")
    need = MIN_POINTS[model]
    if len(f) < need:
        raise EstimationError(f"model {model!r} needs at least {need} landmarks; got {len(f)}")
    if len(np.unique(np.round(f, 9), axis=0)) != len(f):
        raise EstimationError("duplicate fixed landmarks (two landmarks at the same position)")
    if len(np.unique(np.round(m, 9), axis=0)) != len(m):
        raise EstimationError("duplicate moving landmarks (two landmarks at the same position)")
    for pts, which in ((f, "fixed"), (m, "moving")):
        sv = np.linalg.svd(pts - pts.mean(axis=0), compute_uv=False)
        scale = max(sv[0], 1e-300)
        if sv[1] / scale < 1e-9:
            raise EstimationError(
                f"{which} landmarks are collinear; {model} needs a spread of points"
            )
        if model in {"affine", "tps"} and sv[2] / scale < 1e-9:
            raise EstimationError(
                f"{which} landmarks are coplanar; {model} in 3D needs points off one plane"
            )
    return f, m


@dataclass(frozen=True)
class LinearModel(_ZyxMap):
    """``moving = A @ fixed + t`` (rigid, similarity or affine)."""

    kind: ModelName
    matrix: Array  # 3x3
    translation: Array  # 3

    def forward_points(self, fixed: Array) -> Array:
        """Fixed -> moving."""
        return np.asarray(fixed, dtype=np.float64) @ self.matrix.T + self.translation

    def inverse_points(self, moving: Array) -> Array:
        """Moving -> fixed (exact)."""
        inv = np.linalg.inv(self.matrix)
        return (np.asarray(moving, dtype=np.float64) - self.translation) @ inv.T

    def jacobian(self, fixed: Array) -> Array:
        """Jacobian of the forward map at each point, shape (N, 3, 3)."""
        return np.repeat(self.matrix[None], len(fixed), axis=0)

    def homogeneous(self) -> Array:
        """4x4 matrix of the forward map (xyz order)."""
        h = np.eye(4)
        h[:3, :3], h[:3, 3] = self.matrix, self.translation
        return h

    def describe(self) -> dict[str, Any]:
        """JSON-friendly parameters."""
        return {
            "kind": self.kind,
            "matrix": self.matrix.tolist(),
            "translation": self.translation.tolist(),
        }

    @classmethod
    def identity(cls) -> LinearModel:
        """The identity map (an image resampled onto its own space).

        Examples
        --------
        >>> LinearModel.identity().to_affine()[:3, 3].tolist()
        [0.0, 0.0, 0.0]
        """
        return cls("rigid", np.eye(3), np.zeros(3))

    def inverse(self) -> LinearModel:
        """The exact inverse map (moving -> fixed), as a model of the same kind.

        Examples
        --------
        >>> m = LinearModel("affine", np.diag([2.0, 1.0, 1.0]), np.array([1.0, 0.0, 0.0]))
        >>> m.inverse().forward_points(m.forward_points(np.ones((1, 3)))).round(6).tolist()
        [[1.0, 1.0, 1.0]]
        """
        inv = np.linalg.inv(self.matrix)
        return LinearModel(self.kind, inv, -inv @ self.translation)

    def to_affine(self) -> Array:
        """The 4x4 homogeneous matrix of the forward map in **z, y, x** order.

        Examples
        --------
        >>> m = LinearModel("rigid", np.eye(3), np.array([1.0, 2.0, 3.0]))  # x, y, z
        >>> m.to_affine()[:3, 3].tolist()  # z, y, x
        [3.0, 2.0, 1.0]
        """
        return SWAP_XYZ_ZYX @ self.homogeneous() @ SWAP_XYZ_ZYX


def _procrustes(f: Array, m: Array, *, scale: bool) -> tuple[Array, Array]:
    """Umeyama/Kabsch least-squares fit of m ~ s R f + t (R proper rotation)."""
    fc, mc = f.mean(axis=0), m.mean(axis=0)
    f0, m0 = f - fc, m - mc
    u, sig, vt = np.linalg.svd(m0.T @ f0)
    d = np.sign(np.linalg.det(u @ vt))
    s_mat = np.diag([1.0, 1.0, d])
    rot = u @ s_mat @ vt
    s = float(np.trace(np.diag(sig) @ s_mat) / np.sum(f0**2)) if scale else 1.0
    a = s * rot
    return a, mc - a @ fc


def _kernel(r: Array, kernel: Kernel) -> Array:
    if kernel == "r":
        return r
    with np.errstate(divide="ignore", invalid="ignore"):
        out = r * r * np.log(r)
    return np.where(r > 0, out, 0.0)


def _kernel_grad_factor(r: Array, kernel: Kernel) -> Array:
    """g(r) with dU/dx = g(r) * (x - c)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kernel == "r":
            g = 1.0 / r
        else:
            g = 2.0 * np.log(r) + 1.0
    return np.where(r > 0, g, 0.0)


@dataclass(frozen=True)
class ThinPlateSpline(_ZyxMap):
    """``moving = a0 + A fixed + sum_i w_i U(|fixed - c_i|)`` with centres ``c_i`` = fixed landmarks."""

    centres: Array  # (N, 3) fixed landmarks
    weights: Array  # (N, 3)
    affine: Array  # (4, 3): rows [1, x, y, z] -> moving
    kernel: Kernel = "r"
    smoothing: float = 0.0
    kind: ModelName = "tps"
    _inv_linear: Array = field(default_factory=lambda: np.eye(4), repr=False)

    @classmethod
    def from_estimate(
        cls, fixed: Array, moving: Array, *, kernel: Kernel = "r", smoothing: float = 0.0
    ) -> ThinPlateSpline:
        """Fit with one (N+4) solve shared by the x, y, z right-hand sides."""
        f, m = _check_points(fixed, moving, "tps")
        if smoothing < 0:
            raise EstimationError(f"smoothing must be >= 0; got {smoothing}")
        n = len(f)
        k = _kernel(np.linalg.norm(f[:, None] - f[None], axis=2), kernel) + smoothing * np.eye(n)
        p = np.hstack([np.ones((n, 1)), f])
        lhs = np.zeros((n + 4, n + 4))
        lhs[:n, :n], lhs[:n, n:], lhs[n:, :n] = k, p, p.T
        rhs = np.vstack([m, np.zeros((4, 3))])
        try:
            sol = np.linalg.solve(lhs, rhs)
        except np.linalg.LinAlgError as exc:
            raise EstimationError(f"TPS system is singular: {exc}") from exc
        if not np.isfinite(sol).all():
            raise EstimationError("TPS solve produced non-finite coefficients")
        aff = sol[n:]
        lin = np.eye(4)
        lin[:3, :3], lin[:3, 3] = aff[1:].T, aff[0]
        return cls(f, sol[:n], aff, kernel, float(smoothing), "tps", np.linalg.inv(lin))

    def forward_points(self, fixed: Array, *, chunk: int = 65536) -> Array:
        """Exact evaluation, fixed -> moving (chunked to bound memory)."""
        x = np.asarray(fixed, dtype=np.float64)
        out = np.empty_like(x)
        for i in range(0, len(x), chunk):
            xs = x[i : i + chunk]
            r = np.linalg.norm(xs[:, None, :] - self.centres[None], axis=2)
            out[i : i + chunk] = (
                self.affine[0] + xs @ self.affine[1:] + _kernel(r, self.kernel) @ self.weights
            )
        return out

    def jacobian(self, fixed: Array) -> Array:
        """Analytic Jacobian d(moving)/d(fixed), shape (N, 3, 3)."""
        x = np.asarray(fixed, dtype=np.float64)
        diff = x[:, None, :] - self.centres[None]  # (P, N, 3)
        g = _kernel_grad_factor(np.linalg.norm(diff, axis=2), self.kernel)  # (P, N)
        # J[p, out, in] = A[in, out] + sum_i w[i, out] g[p, i] diff[p, i, in]
        jac = np.einsum("pi,io,pij->poj", g, self.weights, diff)
        return jac + self.affine[1:].T[None]

    def inverse_points(
        self, moving: Array, *, tol: float = 1e-9, max_iter: int = 100, strict: bool = True
    ) -> Array:
        """Moving -> fixed by Newton iteration with the analytic Jacobian and backtracking.

        Compiled, point by point, in memory proportional to the points (see
        :mod:`bridge_xr.model._tps`). Points whose inverse cannot be found (a folded warp has
        no unique inverse there) raise :class:`EstimationError`, or come back as NaN with
        ``strict=False``.
        """
        from bridge_xr.model._tps import tps_inverse  # compiled: numba loads on first use

        y = np.ascontiguousarray(moving, dtype=np.float64).reshape(-1, 3)
        x, err = tps_inverse(
            y,
            self.centres,
            self.weights,
            np.ascontiguousarray(self.affine, dtype=np.float64),
            np.ascontiguousarray(self._inv_linear, dtype=np.float64),
            self.kernel != "r",
            float(tol),
            int(max_iter),
        )
        bad = err > 1e-4
        if bad.any():
            if strict:
                msg = (
                    f"TPS inverse did not converge for {int(bad.sum())} of {len(y)} points "
                    f"(residual up to {err.max():.3g} µm); the warp folds there"
                )
                raise EstimationError(msg)
            x[bad] = np.nan
        return x

    def to_affine(self) -> Array:
        """A TPS is not affine: always raises :class:`~bridge_xr.errors.NoAffineError`."""
        msg = "a thin-plate spline is not affine; use `transform_points` or its field"
        raise NoAffineError(msg)

    def inverse(self) -> ThinPlateSpline:
        """A TPS has no closed-form inverse: raises; use ``transform_points(..., inverse=True)``."""
        msg = "a thin-plate spline has no closed-form inverse; use `transform_points(inverse=True)`"
        raise NotInvertibleError(msg)

    def describe(self) -> dict[str, Any]:
        """Exact definition (JSON): centres, weights, affine, kernel, smoothing, direction."""
        return {
            "kind": "tps",
            "kernel": self.kernel,
            "smoothing": self.smoothing,
            "direction": "fixed->moving (resampling)",
            "units": "micrometer",
            "axis_order": "xyz",
            "centres": self.centres.tolist(),
            "weights": self.weights.tolist(),
            "affine": self.affine.tolist(),
        }

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> ThinPlateSpline:
        """Rebuild from :meth:`describe` output."""
        aff = np.asarray(d["affine"], dtype=np.float64)
        lin = np.eye(4)
        lin[:3, :3], lin[:3, 3] = aff[1:].T, aff[0]
        return cls(
            np.asarray(d["centres"], dtype=np.float64),
            np.asarray(d["weights"], dtype=np.float64),
            aff,
            d["kernel"],
            float(d["smoothing"]),
            "tps",
            np.linalg.inv(lin),
        )


#: every stored map; a slice stack (one 2D model per slice) is :mod:`bridge_xr.model.slices`,
#: an intensity B-spline registration :mod:`bridge_xr.model.bspline`
Model = Union[LinearModel, ThinPlateSpline, "SliceStackModel", "BSplineModel"]


def fit(
    model: str, fixed: Array, moving: Array, *, kernel: Kernel = "r", smoothing: float = 0.0
) -> LinearModel | ThinPlateSpline:
    """Fit ``model`` (rigid, similarity, affine, tps) mapping fixed -> moving landmarks."""
    if model not in MIN_POINTS:
        raise EstimationError(f"unknown model {model!r}; use rigid, similarity, affine or tps")
    if model == "tps":
        return ThinPlateSpline.from_estimate(fixed, moving, kernel=kernel, smoothing=smoothing)
    f, m = _check_points(fixed, moving, model)
    if model in {"rigid", "similarity"}:
        a, t = _procrustes(f, m, scale=model == "similarity")
    else:
        x = np.hstack([f, np.ones((len(f), 1))])
        sol, *_ = np.linalg.lstsq(x, m, rcond=None)
        a, t = sol[:3].T, sol[3]
    if abs(np.linalg.det(a)) < 1e-12:
        raise EstimationError("fitted matrix is singular")
    return LinearModel(model, a, t)  # type: ignore[arg-type]


def folding(model: LinearModel | ThinPlateSpline, points: Array) -> dict[str, float]:
    """Jacobian determinant statistics at ``points``; negative values mean folding."""
    det = np.linalg.det(model.jacobian(points))
    return {
        "min_jacobian_det": float(det.min()),
        "max_jacobian_det": float(det.max()),
        "fraction_folded": float(np.mean(det <= 0)),
    }
