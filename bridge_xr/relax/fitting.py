"""Mono-exponential T2 / T2* fits of multi-echo magnitude data, every voxel at once.

``S(TE) = S0 · exp(-TE / T2)``, fitted as ``(S0, R2 = 1/T2)`` by a log-linear start (weighted by
the signal, as Bevington suggests for log-transformed data) and Levenberg-Marquardt steps done
for all voxels together (2 x 2 normal equations per voxel, numpy), in float64.

Three models of what a magnitude image measures:

* ``loglinear``: the start alone; biased where late echoes reach the noise floor;
* ``lsq``: least squares on the magnitude (the noise floor still pulls T2* long);
* ``rician`` (default): the magnitude's *expected value* under Rician noise of std ``sigma``,
  ``E[M] = sigma·sqrt(pi/2)·L_1/2(-A²/2 sigma²)`` (as FijiRelax fits), so echoes at the noise
  floor no longer bias T2*. It is the default because short T2* (lesions, blood) is where the
  other two diverge: at T2* = 10 ms, SNR 50, 16 echoes from 2.6 ms every 4 ms, log-linear is
  biased by tens of percent, plain least squares by a few, the Rician fit by about none (tests).

Fit quality per voxel: the RMS residual relative to the fitted S0 (``nrmse``).

Examples
--------
>>> import numpy as np
>>> te = np.arange(1, 9) * 5.0
>>> s = 1000 * np.exp(-te / 30.0)[:, None]
>>> t2, s0, q = fit_t2(s, te, model="lsq")
>>> round(float(t2[0]), 6), round(float(s0[0]), 3)
(30.0, 1000.0)
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.special import i0e, i1e

from bridge_xr.errors import InvalidInputError

Model = Literal["rician", "lsq", "loglinear"]
MODELS = ("rician", "lsq", "loglinear")
_SQRT_PI_2 = float(np.sqrt(np.pi / 2))


def rician_mean(a: np.ndarray, sigma: float) -> np.ndarray:
    """Expected magnitude of a signal ``a`` under Rician noise (std ``sigma`` per channel).

    Examples
    --------
    >>> float(rician_mean(np.array(0.0), 1.0)) == float(np.sqrt(np.pi / 2))   # Rayleigh mean
    True
    """
    z = np.asarray(a, dtype=np.float64) ** 2 / (4 * sigma**2)
    return sigma * _SQRT_PI_2 * ((1 + 2 * z) * i0e(z) + 2 * z * i1e(z))


def rician_slope(a: np.ndarray, sigma: float) -> np.ndarray:
    """D E[M] / d a (-> 1 for a >> sigma)."""
    a = np.asarray(a, dtype=np.float64)
    z = a**2 / (4 * sigma**2)
    return _SQRT_PI_2 * a / (2 * sigma) * (i0e(z) + i1e(z))


def _loglinear(s: np.ndarray, te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted log-linear fit (weights S², the variance of log S is 1/S²): (S0, R2)."""
    y = np.log(np.maximum(s, 1e-6 * np.maximum(s.max(axis=0, keepdims=True), 1e-30)))
    w = np.maximum(s, 0) ** 2 + 1e-30
    sw, sx, sy = w.sum(0), (w * te[:, None]).sum(0), (w * y).sum(0)
    sxx, sxy = (w * te[:, None] ** 2).sum(0), (w * te[:, None] * y).sum(0)
    den = sw * sxx - sx**2
    slope = np.where(den > 0, (sw * sxy - sx * sy) / np.where(den > 0, den, 1), 0.0)
    icpt = (sy - slope * sx) / sw
    return np.exp(icpt), np.maximum(-slope, 1e-6)


def _predict(te: np.ndarray, s0: np.ndarray, r2: np.ndarray,
             sigma: float | None) -> tuple[np.ndarray, ...]:  # fmt: skip
    e = np.exp(-te[:, None] * r2)
    a = s0 * e
    if sigma is not None:
        return rician_mean(a, sigma), rician_slope(a, sigma), e, a
    return a, np.ones_like(a), e, a


def _refine(s: np.ndarray, te: np.ndarray, s0: np.ndarray, r2: np.ndarray, sigma: float | None,
            iterations: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Levenberg-Marquardt from (s0, r2); each voxel stops when its cost stops falling."""
    s0, r2 = s0.copy(), r2.copy()
    lam = np.full(s0.shape, 1e-3)
    f, _, _, _ = _predict(te, s0, r2, sigma)
    cost = ((s - f) ** 2).sum(0)
    idx = np.arange(s0.size)
    for _ in range(iterations):
        if not idx.size:
            break
        si, s0i, r2i, lami, ci = s[:, idx], s0[idx], r2[idx], lam[idx], cost[idx]
        f, g, e, a = _predict(te, s0i, r2i, sigma)
        j0, j1 = g * e, -g * a * te[:, None]  # d f / d S0, d f / d R2
        r = si - f
        h00, h01, h11 = (j0 * j0).sum(0), (j0 * j1).sum(0), (j1 * j1).sum(0)
        b0, b1 = (j0 * r).sum(0), (j1 * r).sum(0)
        h00d, h11d = h00 * (1 + lami), h11 * (1 + lami)
        det = h00d * h11d - h01**2
        ok = det > 0
        det = np.where(ok, det, 1.0)
        ns0 = np.maximum(s0i + np.where(ok, (h11d * b0 - h01 * b1) / det, 0.0), 1e-12)
        nr2 = np.maximum(r2i + np.where(ok, (h00d * b1 - h01 * b0) / det, 0.0), 1e-9)
        nf = _predict(te, ns0, nr2, sigma)[0]
        ncost = ((si - nf) ** 2).sum(0)
        better = ncost < ci
        s0[idx] = np.where(better, ns0, s0i)
        r2[idx] = np.where(better, nr2, r2i)
        cost[idx] = np.where(better, ncost, ci)
        lam[idx] = np.where(better, lami / 3, lami * 4)
        gain = (ci - ncost) / np.maximum(ci, 1e-300)
        done = (better & (gain < 1e-9)) | (lam[idx] > 1e8)
        idx = idx[~done]
    return s0, r2


def fit_t2(
    signal: np.ndarray,
    te_ms: np.ndarray,
    *,
    model: Model = "rician",
    sigma: float | None = None,
    iterations: int = 40,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T2 (ms), S0 and nrmse for ``signal`` of shape (echoes, ...), all voxels at once.

    Voxels without signal (all echoes <= 0) and fits that do not decay give NaN.
    """
    te = np.asarray(te_ms, dtype=np.float64)
    if model not in MODELS:
        raise InvalidInputError(f"model {model!r}: use one of {', '.join(MODELS)}")
    if model == "rician" and not (sigma and sigma > 0):
        raise InvalidInputError("the Rician fit needs the noise level `noise_sigma` (> 0)")
    s = np.asarray(signal, dtype=np.float64)
    if s.shape[0] != te.size or te.size < 2:
        raise InvalidInputError(f"{s.shape[0]} echoes but {te.size} echo times (need >= 2)")
    shape = s.shape[1:]
    s = s.reshape(te.size, -1)
    s0, r2 = _loglinear(s, te)
    if model != "loglinear":
        s0, r2 = _refine(s, te, s0, r2, sigma if model == "rician" else None, iterations)
    fitted = _predict(te, s0, r2, sigma if model == "rician" else None)[0]
    nrmse = np.sqrt(((s - fitted) ** 2).mean(0)) / np.maximum(s0, 1e-30)
    valid = (s.max(0) > 0) & (r2 > 1e-8) & np.isfinite(r2)
    t2 = np.where(valid, 1.0 / r2, np.nan)
    return (
        t2.reshape(shape),
        np.where(valid, s0, np.nan).reshape(shape),
        np.where(valid, nrmse, np.nan).reshape(shape),
    )
