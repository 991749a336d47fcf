"""A cubic B-spline deformation after an affine: intensity registrations kept exactly.

``moving = A (p + d(p)) + t`` for a fixed point ``p`` (x, y, z µm), where ``d`` is ITK's cubic
B-spline displacement (the tensor product of cubic B-splines over a control lattice with its
own origin and spacing, zero where a point's 4 x 4 x 4 support leaves the lattice, as ITK's
``BSplineTransform``) and ``A, t`` the affine it was started from. The lattice coefficients are
kept inline, so the map is evaluated exactly without SimpleITK (and checked against it). The
inverse is found by Newton iteration with the analytic Jacobian.

Examples
--------
>>> import numpy as np
>>> c = np.zeros((3, 5, 5, 5)); c[0, 2, 2, 2] = 6.0  # one control point moves x by 6 µm
>>> m = BSplineModel(np.eye(3), np.zeros(3), c, origin=np.zeros(3), spacing=np.full(3, 10.0))
>>> m.forward_points(np.array([[20.0, 20.0, 20.0]])).round(6).tolist()  # weight (4/6)^3 there
[[21.777778, 20.0, 20.0]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from bridge_xr.errors import EstimationError, NoAffineError, NotInvertibleError
from bridge_xr.model.pointmaps import Array, _ZyxMap

__all__ = ["BSplineModel"]


def _b3(t: Array) -> Array:
    a = np.abs(t)
    return np.where(a < 1, (4 - 6 * a**2 + 3 * a**3) / 6, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def _db3(t: Array) -> Array:
    a = np.abs(t)
    g = np.where(a < 1, (-12 * a + 9 * a**2) / 6, np.where(a < 2, -((2 - a) ** 2) / 2, 0.0))
    return g * np.sign(t)


@dataclass(frozen=True)
class BSplineModel(_ZyxMap):
    """``moving = matrix @ (p + d(p)) + translation``; coefficients (3, nz, ny, nx), x/y/z first."""

    matrix: Array  # 3x3, xyz
    translation: Array  # 3, µm
    coefficients: Array  # (3: dx, dy, dz, nz, ny, nx) µm
    origin: Array  # lattice point (0, 0, 0), x, y, z µm
    spacing: Array  # lattice spacing, x, y, z µm
    kind: Literal["bspline"] = "bspline"
    _inv: Array = field(default_factory=lambda: np.eye(3), repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inv", np.linalg.inv(np.asarray(self.matrix, float)))

    def _support(self, p: Array) -> tuple[Array, Array, Array]:
        u = (p - self.origin) / self.spacing
        base = np.floor(u).astype(np.int64) - 1
        size = np.array(self.coefficients.shape[1:][::-1])  # x, y, z
        inside = np.all((base >= 0) & (base + 3 < size), axis=1)
        return u, base, inside

    def _terms(self, p: Array, *, grad: bool) -> tuple[Array, Array, list[Array]]:
        """Supported points, their 64 flat lattice indices, and per-axis weights (4, n)."""
        u, base, inside = self._support(p)
        u, base = u[inside], base[inside]
        t = [u[:, a][None] - (base[:, a][None] + np.arange(4)[:, None]) for a in range(3)]
        w = [_b3(ta) for ta in t] + ([_db3(ta) / self.spacing[a] for a, ta in enumerate(t)]
                                     if grad else [])  # fmt: skip
        _nz, ny, nx = self.coefficients.shape[1:]
        i = base[:, 0][None] + np.arange(4)[:, None]
        j = base[:, 1][None] + np.arange(4)[:, None]
        k = base[:, 2][None] + np.arange(4)[:, None]
        flat = (k[:, None, None] * ny + j[None, :, None]) * nx + i[None, None, :]  # (4k,4j,4i,n)
        return inside, flat, w

    def displacement(self, fixed: Array) -> Array:
        """``d(p)``, (N, 3) µm, zero where the lattice does not support ``p``."""
        p = np.asarray(fixed, dtype=np.float64)
        out = np.zeros_like(p)
        inside, flat, (wx, wy, wz) = self._terms(p, grad=False)
        if not inside.any():
            return out
        w = wz[:, None, None] * wy[None, :, None] * wx[None, None, :]  # (4, 4, 4, n)
        c = self.coefficients.reshape(3, -1)
        out[inside] = np.einsum("kjin,ckjin->nc", w, c[:, flat])
        return out

    def forward_points(self, fixed: Array) -> Array:
        """Fixed -> moving (x, y, z µm), exact."""
        p = np.asarray(fixed, dtype=np.float64)
        return (p + self.displacement(p)) @ self.matrix.T + self.translation

    def jacobian(self, fixed: Array) -> Array:
        """d(moving)/d(fixed), (N, 3, 3)."""
        p = np.asarray(fixed, dtype=np.float64)
        jd = np.zeros((len(p), 3, 3))
        inside, flat, (wx, wy, wz, gx, gy, gz) = self._terms(p, grad=True)
        if inside.any():
            vals = self.coefficients.reshape(3, -1)[:, flat]  # (3, 4, 4, 4, n)
            for col, (ax, ay, az) in enumerate(((gx, wy, wz), (wx, gy, wz), (wx, wy, gz))):
                w = az[:, None, None] * ay[None, :, None] * ax[None, None, :]
                jd[inside, :, col] = np.einsum("kjin,ckjin->nc", w, vals)
        return np.einsum("ij,njk->nik", self.matrix, np.eye(3)[None] + jd)

    def inverse_points(self, moving: Array, *, strict: bool = True, tol: float = 1e-9) -> Array:
        """Moving -> fixed: fixed-point iteration, then Newton where it has not converged.

        Unconverged points (where the deformation folds) raise, or are NaN if not ``strict``.
        """
        y = np.asarray(moving, dtype=np.float64)
        target = (y - self.translation) @ self._inv.T  # = p + d(p)
        x = target - self.displacement(target)
        for _ in range(30):  # contracts wherever |grad d| < 1, i.e. wherever it does not fold
            nxt = target - self.displacement(x)
            moved = np.abs(nxt - x).max(axis=1)
            x = nxt
            if moved.max(initial=0.0) < tol:
                break
        res = x + self.displacement(x) - target
        todo = np.flatnonzero(np.linalg.norm(res, axis=1) >= tol)
        for _ in range(20):
            if not todo.size:
                break
            jd = np.einsum("ij,njk->nik", self._inv, self.jacobian(x[todo]))
            try:
                step = np.linalg.solve(jd, res[todo][..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = res[todo]
            x[todo] -= step
            res[todo] = x[todo] + self.displacement(x[todo]) - target[todo]
            todo = todo[np.linalg.norm(res[todo], axis=1) >= tol]
        bad = np.linalg.norm(res, axis=1) > 1e-4
        if bad.any():
            if strict:
                raise EstimationError(
                    f"B-spline inverse did not converge for {int(bad.sum())} of {len(y)} points "
                    "(the deformation folds there)"
                )
            x[bad] = np.nan
        return x

    def transform_points(
        self, points: Array, *, inverse: bool = False, strict: bool = True
    ) -> Array:
        """``(N, 3)`` z, y, x µm fixed -> moving (or back with ``inverse``).

        Examples
        --------
        >>> m = BSplineModel(np.eye(3), np.array([1.0, 0, 0]), np.zeros((3, 4, 4, 4)),
        ...                  origin=np.zeros(3), spacing=np.ones(3))
        >>> m.transform_points(np.zeros((1, 3))).tolist()
        [[0.0, 0.0, 1.0]]
        """
        xyz = np.asarray(points, dtype=np.float64)[:, ::-1]
        out = self.inverse_points(xyz, strict=strict) if inverse else self.forward_points(xyz)
        return out[:, ::-1]

    def to_affine(self) -> Array:
        """A B-spline is not affine: raises."""
        raise NoAffineError("a B-spline registration is not affine; use its points")

    def inverse(self) -> BSplineModel:
        """No closed form: raises; use ``transform_points(..., inverse=True)``."""
        raise NotInvertibleError("use `transform_points(inverse=True)` for a B-spline")

    def describe(self) -> dict[str, Any]:
        """Exact definition (JSON): affine, lattice origin/spacing, coefficients."""
        return {
            "kind": "bspline",
            "direction": "fixed->moving (resampling)",
            "units": "micrometer",
            "axis_order": "xyz",
            "form": "moving = matrix @ (p + d(p)) + translation; d: ITK cubic B-spline",
            "matrix": np.asarray(self.matrix).tolist(),
            "translation": np.asarray(self.translation).tolist(),
            "lattice_origin": np.asarray(self.origin).tolist(),
            "lattice_spacing": np.asarray(self.spacing).tolist(),
            "coefficients_shape": list(self.coefficients.shape),
            "coefficients": np.asarray(self.coefficients).ravel().tolist(),
        }

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> BSplineModel:
        """Rebuild from :meth:`describe` output."""
        return cls(
            np.asarray(d["matrix"], dtype=np.float64),
            np.asarray(d["translation"], dtype=np.float64),
            np.asarray(d["coefficients"], dtype=np.float64).reshape(d["coefficients_shape"]),
            np.asarray(d["lattice_origin"], dtype=np.float64),
            np.asarray(d["lattice_spacing"], dtype=np.float64),
        )
