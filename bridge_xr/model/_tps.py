"""Compiled thin-plate spline inversion: Newton's method point by point, in bounded memory.

The vectorised form evaluates every point against every centre at once (a (points, centres, 3)
array per step: gigabytes for the millions of nodes a whole-brain footprint maps). Here each
point iterates on its own, with the forward map and its Jacobian formed together (the centres'
terms on vector registers), a 3 x 3 solve by cofactors and the same backtracking. Consecutive
points are usually neighbours (nodes of a grid): each starts from the previous solution moved
by the inverse Jacobian there, so that most converge in one step; one that does not starts
again from the affine part's inverse.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numba as nb
import numpy as np

#: points per run of continuation (runs go to a few threads)
_RUN = 4096


#: a squared distance no smaller than this (a point on a centre: its terms vanish without a branch)
_TINY = 1e-300


@nb.njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _residual(
    x: Any, y: Any, p: int, centres: Any, weights: Any, affine: Any, log_kernel: bool, jac: Any,
    tmp: Any,
) -> tuple[float, float, float]:  # fmt: skip
    """``F(x) - y[p]``, and ``jac`` (3, 3) = dF/dx at ``x``, in two passes over the centres.

    ``centres`` and ``weights`` are (3, N), one row per coordinate; ``tmp`` (4, N) scratch.
    The first pass forms each centre's kernel value and gradient, the second sums them
    against the weights; neither has a branch (a point on a centre gets that centre's terms
    as zeros from a floored distance) and both index without wrap-around, so the compiler
    runs them on vector registers (all but the logarithm of the ``r^2 log r`` kernel).
    """
    x0, x1, x2 = x[0], x[1], x[2]
    n = np.uint64(centres.shape[1])
    if log_kernel:  # r^2 log r = r2 log(r2) / 2; its gradient factor 2 log r + 1
        for c in range(n):
            d0, d1, d2 = x0 - centres[0, c], x1 - centres[1, c], x2 - centres[2, c]
            r2 = max(d0 * d0 + d1 * d1 + d2 * d2, _TINY)
            lr = math.log(r2)
            g = lr + 1.0
            tmp[0, c], tmp[1, c], tmp[2, c], tmp[3, c] = 0.5 * r2 * lr, g * d0, g * d1, g * d2
    else:  # r; its gradient factor 1 / r
        for c in range(n):
            d0, d1, d2 = x0 - centres[0, c], x1 - centres[1, c], x2 - centres[2, c]
            u = math.sqrt(max(d0 * d0 + d1 * d1 + d2 * d2, _TINY))
            g = 1.0 / u
            tmp[0, c], tmp[1, c], tmp[2, c], tmp[3, c] = u, g * d0, g * d1, g * d2
    f0 = affine[0, 0] + x0 * affine[1, 0] + x1 * affine[2, 0] + x2 * affine[3, 0]
    f1 = affine[0, 1] + x0 * affine[1, 1] + x1 * affine[2, 1] + x2 * affine[3, 1]
    f2 = affine[0, 2] + x0 * affine[1, 2] + x1 * affine[2, 2] + x2 * affine[3, 2]
    j00, j01, j02 = affine[1, 0], affine[2, 0], affine[3, 0]
    j10, j11, j12 = affine[1, 1], affine[2, 1], affine[3, 1]
    j20, j21, j22 = affine[1, 2], affine[2, 2], affine[3, 2]
    for c in range(n):
        u, g0, g1, g2 = tmp[0, c], tmp[1, c], tmp[2, c], tmp[3, c]
        w0, w1, w2 = weights[0, c], weights[1, c], weights[2, c]
        f0 += u * w0
        f1 += u * w1
        f2 += u * w2
        j00 += w0 * g0
        j01 += w0 * g1
        j02 += w0 * g2
        j10 += w1 * g0
        j11 += w1 * g1
        j12 += w1 * g2
        j20 += w2 * g0
        j21 += w2 * g1
        j22 += w2 * g2
    jac[0, 0], jac[0, 1], jac[0, 2] = j00, j01, j02
    jac[1, 0], jac[1, 1], jac[1, 2] = j10, j11, j12
    jac[2, 0], jac[2, 1], jac[2, 2] = j20, j21, j22
    return f0 - y[p, 0], f1 - y[p, 1], f2 - y[p, 2]


@nb.njit(inline="always", nogil=True, cache=True)
def _solve3(jac: Any, r0: float, r1: float, r2: float) -> tuple[float, float, float, bool]:
    """``jac^-1 r`` by cofactors, and whether ``jac`` was invertible."""
    a, b, c = jac[0], jac[1], jac[2]
    c00 = b[1] * c[2] - b[2] * c[1]
    c01 = b[2] * c[0] - b[0] * c[2]
    c02 = b[0] * c[1] - b[1] * c[0]
    det = a[0] * c00 + a[1] * c01 + a[2] * c02
    if det == 0.0 or not math.isfinite(det):
        return r0, r1, r2, False
    s0 = c00 * r0 + (a[2] * c[1] - a[1] * c[2]) * r1 + (a[1] * b[2] - a[2] * b[1]) * r2
    s1 = c01 * r0 + (a[0] * c[2] - a[2] * c[0]) * r1 + (a[2] * b[0] - a[0] * b[2]) * r2
    s2 = c02 * r0 + (a[1] * c[0] - a[0] * c[1]) * r1 + (a[0] * b[1] - a[1] * b[0]) * r2
    return s0 / det, s1 / det, s2 / det, True


@nb.njit(inline="always", nogil=True, cache=True)
def _newton(
    y: Any, p: int, x: Any, centres: Any, weights: Any, affine: Any, log_kernel: bool,
    tol: float, max_iter: int, jac: Any, cand: Any, cjac: Any, tmp: Any,
) -> float:  # fmt: skip
    """Refine ``x`` (3,) toward ``F(x) = y[p]``; the final residual's length.

    ``jac`` holds the Jacobian at the final ``x`` on return. A candidate's Jacobian is formed
    with its residual (into ``cjac``), so an accepted step costs one evaluation.
    """
    r0, r1, r2 = _residual(x, y, p, centres, weights, affine, log_kernel, jac, tmp)
    err = math.sqrt(r0 * r0 + r1 * r1 + r2 * r2)
    for _ in range(max_iter):
        if err < tol:
            break
        s0, s1, s2, _ok = _solve3(jac, r0, r1, r2)
        t = 1.0
        moved = False
        for _ in range(30):  # backtracking: accept a step only where the residual shrinks
            cand[0], cand[1], cand[2] = x[0] - t * s0, x[1] - t * s1, x[2] - t * s2
            q0, q1, q2 = _residual(cand, y, p, centres, weights, affine, log_kernel, cjac, tmp)
            ec = math.sqrt(q0 * q0 + q1 * q1 + q2 * q2)
            if ec < err:
                moved = True
                break
            t *= 0.5
        if not moved:
            break
        x[0], x[1], x[2] = cand[0], cand[1], cand[2]
        for a in range(3):
            for b in range(3):
                jac[a, b] = cjac[a, b]
        r0, r1, r2, err = q0, q1, q2, ec
    return err


def tps_inverse(
    y: Any, centres: Any, weights: Any, affine: Any, inv_linear: Any, log_kernel: bool,
    tol: float, max_iter: int,
) -> tuple[Any, Any]:  # fmt: skip
    """``x`` (P, 3) with ``F(x) = y`` for a TPS ``F`` (x, y, z), and each final residual (P,).

    Runs of ``_RUN`` consecutive points go to a few Python threads (the compiled loop holds no
    GIL; numba's own parallel layers are not safe to call from several threads, nor across a
    fork). Within a run each point starts from the previous solution moved by the inverse
    Jacobian there (one Newton step usually finishes it); the first, and one where that fails,
    from the affine part's inverse.
    """
    from concurrent.futures import ThreadPoolExecutor

    n = y.shape[0]
    x = np.empty((n, 3))
    err = np.empty(n)
    runs = (n + _RUN - 1) // _RUN
    workers = max(1, min(os.cpu_count() or 1, 8, runs // 4))
    bounds = [int(b) for b in np.linspace(0, runs, workers + 1)]
    rows = tuple(
        np.ascontiguousarray(np.transpose(a), dtype=np.float64) for a in (centres, weights)
    )
    args = (y, *rows, affine, inv_linear, log_kernel, tol, max_iter, x, err)
    if workers == 1:
        _invert_runs(0, runs, *args)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda k: _invert_runs(bounds[k], bounds[k + 1], *args), range(workers)))
    return x, err


@nb.njit(nogil=True, cache=True)
def _invert_runs(
    first: int, last: int, y: Any, centres: Any, weights: Any, affine: Any, inv_linear: Any,
    log_kernel: bool, tol: float, max_iter: int, x: Any, err: Any,
) -> None:  # fmt: skip
    """Runs ``first .. last`` of :func:`tps_inverse`, into ``x`` and ``err``."""
    n = y.shape[0]
    for run in range(first, last):
        jac, cjac = np.empty((3, 3)), np.empty((3, 3))
        tmp = np.empty((4, centres.shape[1]))
        xi, cand = np.empty(3), np.empty(3)
        lo, hi = run * _RUN, min(n, (run + 1) * _RUN)
        for p in range(lo, hi):
            if p > lo and err[p - 1] < tol:  # jac: the Jacobian at the last solution
                d0, d1, d2, ok = _solve3(
                    jac, y[p, 0] - y[p - 1, 0], y[p, 1] - y[p - 1, 1], y[p, 2] - y[p - 1, 2]
                )
                if ok:
                    xi[0], xi[1], xi[2] = x[p - 1, 0] + d0, x[p - 1, 1] + d1, x[p - 1, 2] + d2
                    e = _newton(y, p, xi, centres, weights, affine, log_kernel, tol, max_iter,
                                jac, cand, cjac, tmp)  # fmt: skip
                    if e < tol:
                        x[p, 0], x[p, 1], x[p, 2] = xi[0], xi[1], xi[2]
                        err[p] = e
                        continue
            for m in range(3):  # the affine part's inverse
                xi[m] = (inv_linear[m, 0] * y[p, 0] + inv_linear[m, 1] * y[p, 1]
                         + inv_linear[m, 2] * y[p, 2] + inv_linear[m, 3])  # fmt: skip
            err[p] = _newton(y, p, xi, centres, weights, affine, log_kernel, tol, max_iter, jac,
                             cand, cjac, tmp)  # fmt: skip
            x[p, 0], x[p, 1], x[p, 2] = xi[0], xi[1], xi[2]
