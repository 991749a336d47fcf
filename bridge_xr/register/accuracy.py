"""Registration error figures: the paper's RMSE, leave-one-out TRE, Fitzpatrick TRE, inter-rater.

All distances are micrometres. The paper's RMSE (Methods, "RMSE quantification") is
``sqrt(1/n * sum_i |p_i,2 - p_i,1|^2)`` between corresponding landmarks after registration. It is
evaluated where the fitted map is always single-valued: each fixed landmark is mapped through the
registration (fixed -> moving, the resampling direction) and compared with its moving partner.
Leave-one-out TRE uses the same space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge_xr.errors import EstimationError
from bridge_xr.model.pointmaps import Kernel, Model, ThinPlateSpline, fit, folding

Array = NDArray[Any]


def rmse_um(model: Model, fixed: Array, moving: Array) -> float:
    """The paper's RMSE over the given landmark pairs (moving space).

    Parameters
    ----------
    model : LinearModel or ThinPlateSpline
        Fitted fixed -> moving.
    fixed, moving : ndarray of shape (N, 3)
        Landmark pairs, x, y, z µm.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from bridge_xr.model.pointmaps import LinearModel
    >>> rmse_um(LinearModel.identity(), np.zeros((2, 3)), np.array([[3.0, 4, 0], [0, 0, 5]]))
    5.0
    """
    d = model.forward_points(fixed) - np.asarray(moving)
    return float(np.sqrt(np.mean(np.sum(d * d, axis=1))))


def loo_residuals_um(
    model: str, fixed: Array, moving: Array, *, kernel: Kernel = "r", smoothing: float = 0.0
) -> Array:
    """Leave-one-out residual vectors, shape (N, 3).

    Leave-one-out residual vectors (N, 3): landmark i mapped by the fit without it, minus its
    moving partner (moving space, xyz µm).
    """
    f, m = np.asarray(fixed, dtype=np.float64), np.asarray(moving, dtype=np.float64)
    out = np.empty_like(f)
    for i in range(len(f)):
        keep = np.arange(len(f)) != i
        sub = fit(model, f[keep], m[keep], kernel=kernel, smoothing=smoothing)
        out[i] = sub.forward_points(f[i : i + 1])[0] - m[i]
    return out


def loo_tre_um(
    model: str, fixed: Array, moving: Array, *, kernel: Kernel = "r", smoothing: float = 0.0
) -> Array:
    """Leave-one-out target registration error of each landmark (moving space), in order.

    Parameters
    ----------
    model : {'rigid', 'similarity', 'affine', 'tps'}
        Model refitted without each landmark in turn.
    fixed, moving : ndarray of shape (N, 3)
        Landmarks, x, y, z µm.
    kernel, smoothing
        TPS kernel and regularisation.

    Returns
    -------
    ndarray of shape (N,)
        µm.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.random.default_rng(0).uniform(0, 100, (8, 3))
    >>> bool(np.allclose(loo_tre_um("rigid", f, f + 3.0), 0.0, atol=1e-9))
    True
    """
    res = loo_residuals_um(model, fixed, moving, kernel=kernel, smoothing=smoothing)
    return np.asarray(np.linalg.norm(res, axis=1))


def fitzpatrick_tre_um(fixed: Array, fle_rms_um: float, targets: Array) -> Array:
    """Predicted RMS TRE at ``targets`` for a rigid fit (Fitzpatrick, West & Maurer 1998).

    ``<TRE^2(r)> = <FLE^2>/N * (1 + 1/3 * sum_k d_k^2 / f_k^2)`` with ``d_k`` the target's distance
    from principal axis ``k`` of the landmark configuration and ``f_k`` the landmarks' RMS distance
    from that axis. ``fle_rms_um`` is the RMS fiducial localisation error (3D).
    """
    f = np.asarray(fixed, dtype=np.float64)
    c = f.mean(axis=0)
    _, _, vt = np.linalg.svd(f - c)

    def axis_dist2(p: Array) -> Array:
        q = (p - c) @ vt.T  # coordinates along principal axes
        return np.stack(
            [q[:, 1] ** 2 + q[:, 2] ** 2, q[:, 0] ** 2 + q[:, 2] ** 2, q[:, 0] ** 2 + q[:, 1] ** 2],
            axis=1,
        )

    fk2 = axis_dist2(f).mean(axis=0)
    dk2 = axis_dist2(np.asarray(targets, dtype=np.float64).reshape(-1, 3))
    tre2 = fle_rms_um**2 / len(f) * (1 + np.sum(dk2 / fk2, axis=1) / 3)
    return np.sqrt(tre2)


def fle_from_fre(fre_rms_um: float, n: int) -> float:
    """RMS FLE from the observed RMS FRE of a rigid fit: ``<FRE^2> = (1 - 2/N) <FLE^2>``."""
    return float(fre_rms_um / np.sqrt(max(1e-12, 1 - 2 / n)))


def grid_points(extent_xyz: Array, n: int = 50, *, per_slice_z: Array | None = None) -> Array:
    """The paper's inter-rater grid: ``n`` x ``n`` points per slice over the (x, y) extent.

    ``extent_xyz`` is ``[[x0, x1], [y0, y1], [z0, z1]]``; ``per_slice_z`` lists slice positions
    (default: 5 evenly spaced).
    """
    e = np.asarray(extent_xyz, dtype=np.float64)
    xs = np.linspace(e[0, 0], e[0, 1], n)
    ys = np.linspace(e[1, 0], e[1, 1], n)
    zs = per_slice_z if per_slice_z is not None else np.linspace(e[2, 0], e[2, 1], 5)
    xx, yy, zz = np.meshgrid(xs, ys, zs, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1)


def inter_rater_rmse_um(model_a: Model, model_b: Model, moving_points: Array) -> dict[str, Any]:
    """Distance between two raters' registrations of the same moving points (fixed space).

    Points that a folded TPS cannot map back are left out and counted in ``n_unmapped``.
    """

    def back(model: Model) -> Array:
        if isinstance(model, ThinPlateSpline):
            return model.inverse_points(moving_points, strict=False)
        return model.inverse_points(moving_points)

    d_all = np.linalg.norm(back(model_a) - back(model_b), axis=1)
    d = d_all[np.isfinite(d_all)]
    if len(d) == 0:
        raise EstimationError("no grid point could be mapped by both registrations")
    return {
        "n_unmapped": int(len(d_all) - len(d)),
        "rmse_um": float(np.sqrt(np.mean(d * d))),
        "mean_um": float(d.mean()),
        "p95_um": float(np.percentile(d, 95)),
        "max_um": float(d.max()),
        "n_points": len(d),
    }


def choose_smoothing(
    fixed: Array, moving: Array, *, kernel: Kernel = "r", grid: Array | None = None
) -> tuple[float, dict[str, Any]]:
    """Pick the TPS smoothing λ minimising the leave-one-out TRE RMS over a log-spaced grid."""
    f = np.asarray(fixed, dtype=np.float64)
    scale = float(np.median(np.linalg.norm(f[:, None] - f[None], axis=2)))
    lambdas = (
        grid
        if grid is not None
        else np.r_[0.0, np.logspace(-3, 2, 11) * (scale if kernel == "r" else scale**2)]
    )
    scores = []
    for lam in lambdas:
        loo = loo_tre_um("tps", fixed, moving, kernel=kernel, smoothing=float(lam))
        scores.append(float(np.sqrt(np.mean(loo**2))))
    best = int(np.argmin(scores))
    return float(lambdas[best]), {
        "method": "leave-one-out",
        "lambdas": [float(v) for v in lambdas],
        "loo_tre_rms_um": scores,
        "chosen": float(lambdas[best]),
    }


def registration_report(
    model_name: str,
    fixed: Array,
    moving: Array,
    *,
    kernel: Kernel = "r",
    smoothing: float = 0.0,
    names: list[str] | None = None,
) -> tuple[Model, dict[str, Any]]:
    """Fit a model and compute the figures of ``bridge register --report``.

    ``smoothing=-1`` chooses the TPS smoothing λ by leave-one-out TRE (see :func:`choose_smoothing`).
    Folding is checked on a 20^3 grid over the landmarks' bounding box (fixed space).

    Parameters
    ----------
    model_name : {'rigid', 'similarity', 'affine', 'tps'}
        Model to fit.
    fixed, moving : ndarray of shape (N, 3)
        Landmarks, x, y, z µm.
    kernel, smoothing
        TPS kernel and regularisation (``-1``: chosen by LOO).
    names : list of str, optional
        Landmark names for the per-landmark figures.

    Returns
    -------
    (model, dict)
        The fitted model, and ``rmse_um``, ``loo_tre_um``, ``loo_tre_rms_um``, folding ...

    Examples
    --------
    >>> import numpy as np
    >>> f = np.random.default_rng(0).uniform(0, 100, (8, 3))
    >>> m, rep = registration_report("affine", f, f * 1.01)
    >>> rep["rmse_um"] < 1e-9
    True
    """
    chosen = None
    if model_name == "tps" and smoothing < 0:
        smoothing, chosen = choose_smoothing(fixed, moving, kernel=kernel)
    model = fit(model_name, fixed, moving, kernel=kernel, smoothing=smoothing)
    loo = loo_tre_um(model_name, fixed, moving, kernel=kernel, smoothing=smoothing)
    report: dict[str, Any] = {
        "model": model_name,
        "kernel": kernel if model_name == "tps" else None,
        "smoothing": smoothing if model_name == "tps" else None,
        "n_landmarks": len(fixed),
        "rmse_um": rmse_um(model, fixed, moving),
        "loo_tre_um": [float(v) for v in loo],
        "loo_tre_rms_um": float(np.sqrt(np.mean(loo**2))),
        "landmark_names": names,
    }
    if chosen is not None:
        report["smoothing_selection"] = chosen
    lo, hi = np.min(fixed, axis=0), np.max(fixed, axis=0)
    g = np.stack(
        np.meshgrid(*[np.linspace(a, b, 20) for a, b in zip(lo, hi, strict=True)], indexing="ij"),
        -1,
    )
    report["folding"] = folding(model, g.reshape(-1, 3))
    if model_name in {"rigid", "similarity", "affine"}:
        fle = fle_from_fre(report["rmse_um"], len(fixed))
        centroid = np.asarray(fixed).mean(axis=0, keepdims=True)
        report["fle_estimate_um"] = fle
        report["predicted_tre_at_centroid_um"] = float(fitzpatrick_tre_um(fixed, fle, centroid)[0])
    return model, report


def bootstrap_tre_map(
    model_name: str,
    fixed: Array,
    moving: Array,
    points: Array,
    *,
    fle_rms_um: float,
    kernel: Kernel = "r",
    smoothing: float = 0.0,
    n_boot: int = 30,
    seed: int = 0,
) -> Array:
    """RMS target error at ``points`` (fixed space, x y z µm) by a parametric bootstrap.

    The moving landmarks are perturbed by isotropic Gaussian fiducial error of RMS ``fle_rms_um``
    (3D), the model refitted ``n_boot`` times, and the RMS displacement of each mapped point from
    the unperturbed fit reported (moving space, µm).
    """
    f = np.asarray(fixed, dtype=np.float64)
    m = np.asarray(moving, dtype=np.float64)
    base = fit(model_name, f, m, kernel=kernel, smoothing=smoothing).forward_points(points)
    rng = np.random.default_rng(seed)
    acc = np.zeros(len(points))
    used = 0
    for _ in range(n_boot):
        noisy = m + rng.normal(0.0, fle_rms_um / np.sqrt(3.0), size=m.shape)
        try:
            boot = fit(model_name, f, noisy, kernel=kernel, smoothing=smoothing)
        except EstimationError:
            continue
        acc += np.sum((boot.forward_points(points) - base) ** 2, axis=1)
        used += 1
    if used == 0:
        raise EstimationError("every bootstrap refit failed")
    return np.sqrt(acc / used)
