"""Expansion factor of an expanded sample from landmarks before and after expansion.

Expansion microscopy swells the tissue about 4x in every direction; the post-expansion image's
micrometres are gel micrometres. The factor comes from paired landmarks between a
pre-expansion image (tissue µm) and the post-expansion image (gel µm): a similarity fit
``post = s R pre + t`` (Umeyama) gives ``s``, and its uncertainty is the jackknife standard
error over the landmarks (each left out once), with a 95 % interval from Student's t.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> pre = rng.uniform(0, 200, size=(10, 3))
>>> est = estimate_expansion(pre, 4.1 * pre + [5.0, 0.0, 0.0])
>>> round(est["factor"], 6), est["sd"] < 1e-9
(4.1, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bridge_xr.errors import EstimationError
from bridge_xr.model.pointmaps import Array, LinearModel, fit

__all__ = ["estimate_expansion"]


def _similarity(pre: Array, post: Array) -> LinearModel:
    model = fit("similarity", pre, post)
    assert isinstance(model, LinearModel)
    return model


def _scale(pre: Array, post: Array) -> float:
    return float(np.cbrt(abs(np.linalg.det(_similarity(pre, post).matrix))))


def estimate_expansion(pre_xyz_um: Array, post_xyz_um: Array) -> dict[str, Any]:
    """Expansion factor (similarity scale pre -> post) with its jackknife uncertainty.

    Parameters
    ----------
    pre_xyz_um : array of shape (N, 3)
        Landmarks in the pre-expansion image (tissue µm).
    post_xyz_um : array of shape (N, 3)
        The same landmarks in the post-expansion image (gel µm).

    Returns
    -------
    dict
        ``factor``, ``sd`` (jackknife standard error), ``ci95`` (low, high), ``n_landmarks``,
        ``rmse_um`` (residual of the fit, tissue µm) and ``method``.

    Raises
    ------
    EstimationError
        Fewer than 4 landmarks (no uncertainty without them), or degenerate ones.
    """
    from scipy import stats

    pre = np.asarray(pre_xyz_um, dtype=np.float64)
    post = np.asarray(post_xyz_um, dtype=np.float64)
    n = len(pre)
    if n < 4:
        raise EstimationError(
            f"an expansion factor with an uncertainty needs >= 4 landmarks; got {n}"
        )
    model = _similarity(pre, post)
    s = float(np.cbrt(abs(np.linalg.det(model.matrix))))
    res = model.forward_points(pre) - post
    loo = np.array([_scale(np.delete(pre, i, 0), np.delete(post, i, 0)) for i in range(n)])
    sd = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    half = float(stats.t.ppf(0.975, n - 1)) * sd
    return {
        "factor": s,
        "sd": sd,
        "ci95": [s - half, s + half],
        "n_landmarks": n,
        "rmse_um": float(np.sqrt(np.mean(np.sum(res**2, axis=1)))) / s,
        "method": "similarity fit pre -> post (Umeyama), jackknife SE",
    }
