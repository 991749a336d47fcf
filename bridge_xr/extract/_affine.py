"""Exact footprint integration through a linear chain that is not axis-aligned (rotations, shears).

Every microscopy voxel is then the same parallelepiped, ``p0 + a @ (k, j, i) + a @ u`` with ``u``
in the unit cube, so its overlap with the MRI voxels needs no corners and no tetrahedra for most
voxels:

* along a row the voxel's box moves linearly, so the voxels inside one MRI voxel come in runs
  whose ends are solved for, and each run is a plain sum of values;
* the fraction of the voxel below one MRI face ``x_m = p`` is ``P(w . u < t)`` for the widths
  ``w = |a[m]|`` (a sum of uniform variables): a piecewise polynomial of degree ``d``, the number
  of edges with a height along ``m``, ``(1 / (d! prod w)) sum_s (-1)^|s| (t - s.w)^d_+`` over
  the cube's vertices ``s``. Its pieces are expanded once per chain in exact rational
  arithmetic, so each voxel costs a search among at most 8 knots and a Horner step, accurate
  however unequal the widths (a voxel nearly aligned with the MRI);
* a run of voxels crossing the same faces, which stay level along the row (an axis-aligned
  voxel, or a rotation about the MRI axis of the crossed face), shares one fraction: one sum;
* below two faces of different axes: the product of the two fractions when the faces' heights
  come from different edges (a rotation about an MRI axis); the area of the unit square cut by
  two lines when two edges carry them; otherwise the voxel is swept along an edge that climbs
  both faces, the unit square of the other two edges' coordinates times ``[0, 1]``, where the
  part below both faces above each point is ``clamp(min(La, Lb), 0, 1)`` of two linear
  functions: integrated exactly over the polygons where each is the least. Three faces: the
  same with three functions, the eight MRI voxels by inclusion-exclusion. Only voxels crossing
  more faces, or two faces that no edge climbs steeply enough, go to the tetrahedra
  (:mod:`bridge_xr.extract._kuhn`).
"""

from __future__ import annotations

import fractions
import functools
import itertools
import math
from typing import Any

import numba as nb
import numpy as np

from bridge_xr.extract._kuhn import (
    _KUHN_CORNER,
    _PARITY,
    _STACK,
    MAX_SPAN,
    _flush,
    _kuhn_volume,
    _scratch,
    _straddler,
)

#: heights below this fraction of the largest are taken as zero (error ~ its square)
_ZERO = 1e-12

#: two faces sharing all three edges are integrated along an edge climbing both at least this
#: steeply (relative to their steepest edges); otherwise with the tetrahedra
_MIN_STEEP = 1e-6


@nb.njit(inline="always", nogil=True, cache=True)
def _below(
    m: int, r: float, vol: float, knots: Any, coef: Any, neg: Any
) -> float:  # fmt: skip
    """Volume of the voxel below the plane ``x_m = p``, ``r = p - x_m(corner 0)``.

    ``P(w . u < t)`` with ``t = r - neg_m``, a piecewise polynomial: its piece ``q`` starts at
    ``knots[m, q]`` (ascending, ``inf`` after the last) and has the coefficients
    ``coef[m, q]`` in ``t - knots[m, q]`` (see :func:`_face_tables`).
    """
    t = r - neg[m]
    if t <= 0.0:
        return 0.0
    q = 0
    while knots[m, q + 1] <= t:
        q += 1
    x = t - knots[m, q]
    return vol * (coef[m, q, 0] + x * (coef[m, q, 1] + x * (coef[m, q, 2] + x * coef[m, q, 3])))


@nb.njit(inline="always", nogil=True, cache=True)
def _leaves(
    end: float, s: float, inv: float, base: float, f: float, bl: float, bh: float
) -> float:  # fmt: skip
    """``end``, or the first index along a row past which a box leaves MRI voxel ``f``.

    The box's lower end is ``base + bl`` and its upper end ``base + bh`` at index 0; it moves
    ``s = 1 / inv`` an index along this axis.
    """
    if s > 0.0:
        return min(end, math.floor((f + 1.0 - bh - base) * inv) + 1.0)
    if s < 0.0:
        return min(end, math.floor((f - bl - base) * inv) + 1.0)
    return end


@nb.njit(inline="always", nogil=True, cache=True)
def _row_sum(values: Any, k: int, j: int, start: int, stop: int) -> float:
    """``values[k, j, start:stop].sum()``: in integers for integer values (no float chain)."""
    acc = 0
    for q in range(start, stop):
        acc += values[k, j, q]
    return float(acc)


@nb.njit(inline="always", nogil=True, cache=True)
def _put(out: Any, z: int, y: int, x: int, acc: float, n: float, w: float) -> None:
    """Add ``n`` voxels of volume ``w`` in MRI voxel ``(z, y, x)`` whose values sum to ``acc``."""
    _flush(out, z, y, x, acc * w, n * w)


@nb.njit(inline="always", nogil=True, cache=True)
def _half_plane(
    buf: Any, src: int, n: int, dst: int, p: float, q: float, r: float
) -> int:  # fmt: skip
    """Clip the convex polygon ``buf[src:src + n]`` to ``p u + q v <= r`` into ``buf[dst:]``."""
    m = 0
    for e in range(n):
        ua, va = buf[src + e, 0], buf[src + e, 1]
        f = (e + 1) % n
        ub, vb = buf[src + f, 0], buf[src + f, 1]
        fa, fb = p * ua + q * va - r, p * ub + q * vb - r
        if fa <= 0.0:
            buf[dst + m, 0], buf[dst + m, 1] = ua, va
            m += 1
        if (fa < 0.0 < fb) or (fb < 0.0 < fa):
            w = fa / (fa - fb)
            buf[dst + m, 0], buf[dst + m, 1] = ua + w * (ub - ua), va + w * (vb - va)
            m += 1
    return m


@nb.njit(inline="always", nogil=True, cache=True)
def _square_below_two(
    p1: float, q1: float, r1: float, p2: float, q2: float, r2: float, buf: Any
) -> float:  # fmt: skip
    """Area of the unit square where ``p1 u + q1 v < r1`` and ``p2 u + q2 v < r2``."""
    buf[0, 0], buf[0, 1], buf[1, 0], buf[1, 1] = 0.0, 0.0, 1.0, 0.0
    buf[2, 0], buf[2, 1], buf[3, 0], buf[3, 1] = 1.0, 1.0, 0.0, 1.0
    n = _half_plane(buf, 0, 4, 8, p1, q1, r1)
    if n < 3:
        return 0.0
    n = _half_plane(buf, 8, n, 0, p2, q2, r2)
    area = 0.0
    for e in range(n):
        f = (e + 1) % n
        area += buf[e, 0] * buf[f, 1] - buf[f, 0] * buf[e, 1]
    return 0.5 * abs(area)


@nb.njit(inline="always", nogil=True, cache=True)
def _clamped_integral(buf: Any, src: int, n: int, c0: float, c1: float, c2: float) -> float:
    """Integral of ``clamp(c0 + c1 u + c2 v, 0, 1)`` over the polygon ``buf[src:src + n]``.

    The polygon (counter-clockwise) is cut where the function is 0 and 1: the part above 1
    counts its area, the part in between its area times the function at its centroid (from
    the first moments, so a sliver divides by nothing). Uses ``buf[30:50]``.
    """
    lo_l, hi_l = math.inf, -math.inf  # the function's range over the polygon: cut only where
    for e in range(n):  # it crosses 0 or 1
        val = c0 + c1 * buf[src + e, 0] + c2 * buf[src + e, 1]
        lo_l, hi_l = min(lo_l, val), max(hi_l, val)
    if hi_l <= 0.0:
        return 0.0
    if lo_l < 0.0:
        n = _half_plane(buf, src, n, 30, -c1, -c2, c0)  # where >= 0
        src = 30
        if n < 3:
            return 0.0
    above0 = 0.0
    for e in range(n):
        f = (e + 1) % n
        above0 += buf[src + e, 0] * buf[src + f, 1] - buf[src + f, 0] * buf[src + e, 1]
    if lo_l >= 1.0:
        return 0.5 * above0
    if hi_l > 1.0:
        n = _half_plane(buf, src, n, 40, c1, c2, 1.0 - c0)  # and <= 1
        src = 40
    area, mu, mv = 0.0, 0.0, 0.0
    for e in range(n):
        f = (e + 1) % n
        ue, ve, uf, vf = buf[src + e, 0], buf[src + e, 1], buf[src + f, 0], buf[src + f, 1]
        cross = ue * vf - uf * ve
        area += cross
        mu += (ue + uf) * cross
        mv += (ve + vf) * cross
    return 0.5 * (above0 - area) + 0.5 * c0 * area + (c1 * mu + c2 * mv) / 6.0


@nb.njit(inline="always", nogil=True, cache=True)
def _sweep_min(lines: Any, k_lines: int, buf: Any) -> float:
    """``integral over the unit square of clamp(min_k L_k, 0, 1)``, ``L_k = lines[k] . (1, u, v)``.

    The fraction of a voxel below several faces, swept along an edge that climbs all of them:
    the voxel is the unit square of the other two edges' coordinates times ``[0, 1]``, and
    above ``(u, v)`` the part below face ``k`` is ``u_e < L_k(u, v)``. Each ``L_k`` is
    integrated where it is the least (the square cut by the lines ``L_k = L_m``).
    """
    total = 0.0
    for k in range(k_lines):
        buf[0, 0], buf[0, 1], buf[1, 0], buf[1, 1] = 0.0, 0.0, 1.0, 0.0
        buf[2, 0], buf[2, 1], buf[3, 0], buf[3, 1] = 1.0, 1.0, 0.0, 1.0
        n, src, dst = 4, 0, 10
        for m in range(k_lines):
            if m != k and n >= 3:
                n = _half_plane(buf, src, n, dst, lines[k, 1] - lines[m, 1],
                                lines[k, 2] - lines[m, 2], lines[m, 0] - lines[k, 0])  # fmt: skip
                src, dst = dst, 30 - dst
        if n >= 3:
            total += _clamped_integral(buf, src, n, lines[k, 0], lines[k, 1], lines[k, 2])
    return total


@nb.njit(inline="always", nogil=True, cache=True)
def _swept(sweeps: Any, g: int, r: Any, k_lines: int, lines: Any, buf: Any) -> float:
    """:func:`_sweep_min` of face group ``g`` at ``r`` (see :func:`_sweep_rows`)."""
    for k in range(k_lines):
        m = int(sweeps[g, k, 5])
        lines[k, 0] = (sweeps[g, k, 4] * r[m] + sweeps[g, k, 1]) * sweeps[g, k, 0]
        lines[k, 1] = sweeps[g, k, 2]
        lines[k, 2] = sweeps[g, k, 3]
    return _sweep_min(lines, k_lines, buf)


@nb.njit(nogil=True, cache=True)
def _joint(
    ma: int, mb: int, r: Any, fv: Any, vol: float, mode: Any, flipped: Any, sweeps: Any,
    pair_u: Any, h: Any, lines: Any, buf: Any,
) -> float:  # fmt: skip
    """Volume of the voxel below faces ``ma < mb`` (``fv``: its volume below each one)."""
    g = ma + mb - 1
    if mode[g] == 0:  # heights from different edges: independent
        return fv[ma] * fv[mb] / vol
    if mode[g] == 1:  # two edges between them: the unit square cut by two lines
        u0, u1 = pair_u[g, 0], pair_u[g, 1]
        return vol * _square_below_two(
            h[ma, u0], h[ma, u1], r[ma], h[mb, u0], h[mb, u1], r[mb], buf
        )
    # below a and b (or a and b's other side): below a, less where La > Lb the part between
    a0 = (sweeps[g, 0, 4] * r[ma] + sweeps[g, 0, 1]) * sweeps[g, 0, 0]
    b0 = (sweeps[g, 1, 4] * r[mb] + sweeps[g, 1, 1]) * sweeps[g, 1, 0]
    a1, a2, b1, b2 = sweeps[g, 0, 2], sweeps[g, 0, 3], sweeps[g, 1, 2], sweeps[g, 1, 3]
    buf[0, 0], buf[0, 1], buf[1, 0], buf[1, 1] = 0.0, 0.0, 1.0, 0.0
    buf[2, 0], buf[2, 1], buf[3, 0], buf[3, 1] = 1.0, 1.0, 0.0, 1.0
    n = _half_plane(buf, 0, 4, 10, b1 - a1, b2 - a2, a0 - b0)  # La >= Lb
    swept = fv[ma]
    if n >= 3:
        swept -= vol * (
            _clamped_integral(buf, 10, n, a0, a1, a2) - _clamped_integral(buf, 10, n, b0, b1, b2)
        )
    return fv[ma] - swept if flipped[g] >= 0 else swept  # b's other side: the rest of a


#: the same, inlined into the kernel for voxels crossing two faces (2-3 % of them; a call
#: passes a dozen arrays and their reference counts, ~100 ns)
_joint_inline = nb.njit(inline="always", nogil=True, cache=True)(_joint.py_func)


@nb.njit(nogil=True, cache=True)
def _corner(
    out: Any, z: int, y: int, x: int, acc: float, n: float, vol: float, cell_n: Any, r: Any,
    faces: tuple[Any, ...], pairs: tuple[Any, ...], scratch: tuple[Any, ...],
) -> None:  # fmt: skip
    """Add ``n`` voxels (values summing to ``acc``) crossing one face of each axis.

    Below each face, each pair and all three in closed form; the 8 MRI voxels' shares by
    inclusion-exclusion. Compiled once for every dtype of the image (not inlined into the
    kernel: it is rare, and inlined it multiplied the kernel's compile time).
    """
    mode, flipped, sweeps, pair_u, h = pairs
    knots, coef, neg = faces
    fv, jv, lines, poly_buf = scratch
    for m in range(3):
        fv[m] = _below(m, r[m], vol, knots, coef, neg)
    j01 = _joint(0, 1, r, fv, vol, mode, flipped, sweeps, pair_u, h, lines, poly_buf)
    j02 = _joint(0, 2, r, fv, vol, mode, flipped, sweeps, pair_u, h, lines, poly_buf)
    j12 = _joint(1, 2, r, fv, vol, mode, flipped, sweeps, pair_u, h, lines, poly_buf)
    jv[0], jv[1], jv[2] = j01, j02, j12
    if mode[3] == 4:  # one face independent of the other two
        m = int(sweeps[3, 0, 5])
        t3 = fv[m] * jv[2 - m] / vol
    else:
        t3 = vol * _swept(sweeps, 3, r, 3, lines, poly_buf)
        if flipped[3] >= 0:  # swept above that face: the rest of the others
            t3 = jv[2 - int(sweeps[3, flipped[3], 5])] - t3
    f0, f1, f2 = fv[0], fv[1], fv[2]
    _put(out, z, y, x, acc, n, t3)
    _put(out, z, y, x + 1, acc, n, j01 - t3)
    _put(out, z, y + 1, x, acc, n, j02 - t3)
    _put(out, z + 1, y, x, acc, n, j12 - t3)
    _put(out, z, y + 1, x + 1, acc, n, f0 - j01 - j02 + t3)
    _put(out, z + 1, y, x + 1, acc, n, f1 - j01 - j12 + t3)
    _put(out, z + 1, y + 1, x, acc, n, f2 - j02 - j12 + t3)
    _put(out, z + 1, y + 1, x + 1, acc, n,
         vol - f0 - f1 - f2 + j01 + j02 + j12 - t3)  # fmt: skip
    return


@nb.njit(nogil=True, cache=True)
def general_kernel_affine(
    values: Any,
    a: Any,
    p0: Any,
    off8: Any,
    box_lo: Any,
    box_hi: Any,
    tv: Any,
    vol: float,
    lo: Any,
    shape: Any,
    kuhn: Any,
    faces: tuple[Any, ...],
    pairs: tuple[Any, ...],
    scratch: Any,
) -> Any:
    """Sum a block through the affine index map ``a`` (3, 3) with voxel (0, 0, 0)'s corner ``p0``.

    Voxel ``(k, j, i)``'s corner 0 is ``p0 + a @ (k, j, i)`` (MRI index units); its 8 corners
    are that plus ``off8``, its box that plus ``box_lo`` .. ``box_hi``, its tetrahedra have the
    volumes ``tv`` (sum ``vol``). ``faces``: :func:`_face_tables`; ``pairs``:
    :func:`_pair_tables`.

    A row is walked in runs: voxels inside one MRI voxel up to where a box first leaves it (a
    sum); voxels crossing one face that moves along the row up to where the box reaches another
    face (each its own fraction, one write per run); voxels crossing faces that stay level (the
    same fractions all along); and single voxels near MRI voxel edges and corners.
    """
    mode, flipped, sweeps, pair_u, h = pairs
    knots, coef, neg = faces
    out = np.zeros((2, shape[0], shape[1], shape[2]))
    stack = np.empty((_STACK, 4, 3))
    c8 = np.empty((8, 3))
    scratch2 = (np.empty(3), np.empty(3), np.empty((3, 3)), np.empty((50, 2)))
    fv, lines, poly_buf = scratch2[0], scratch2[2], scratch2[3]
    r = np.empty(3)
    cell_lo = np.empty(3, np.int64)
    cell_n = np.empty(3, np.int64)
    nz, ny, nx = values.shape
    sz, sy, sx = a[0, 2], a[1, 2], a[2, 2]  # the box's motion per step along a row
    level_z, level_y, level_x = h[0, 2] == 0.0, h[1, 2] == 0.0, h[2, 2] == 0.0
    inv_z, inv_y, inv_x = (
        (1.0 / sz if sz else 0.0),
        (1.0 / sy if sy else 0.0),
        (1.0 / sx if sx else 0.0),
    )
    for k in range(nz):
        for j in range(ny):
            bz = p0[0] + a[0, 0] * k + a[0, 1] * j
            by = p0[1] + a[1, 0] * k + a[1, 1] * j
            bx = p0[2] + a[2, 0] * k + a[2, 1] * j
            i = 0
            while i < nx:
                cz, cy, cx = bz + sz * i, by + sy * i, bx + sx * i
                lz, ly, lx = cz + box_lo[0], cy + box_lo[1], cx + box_lo[2]
                hz, hy, hx = cz + box_hi[0], cy + box_hi[1], cx + box_hi[2]
                fz, fy, fx = math.floor(lz), math.floor(ly), math.floor(lx)
                if hz <= fz + 1 and hy <= fy + 1 and hx <= fx + 1:
                    # a run inside MRI voxel (fz, fy, fx): up to where a box first leaves it
                    end = _leaves(float(nx), sz, inv_z, bz, fz, box_lo[0], box_hi[0])
                    end = _leaves(end, sy, inv_y, by, fy, box_lo[1], box_hi[1])
                    end = _leaves(end, sx, inv_x, bx, fx, box_lo[2], box_hi[2])
                    stop = max(int(end), i + 1)
                    acc = _row_sum(values, k, j, i, stop)
                    _flush(out, int(fz) - lo[0], int(fy) - lo[1], int(fx) - lo[2], acc * vol,
                           (stop - i) * vol)  # fmt: skip
                    i = stop
                    continue
                # the MRI voxels its box covers: from (ez, ey, ex), (nz_, ny_, nx_) faces on
                ez, ey, ex = int(fz), int(fy), int(fx)
                nz_ = max(int(math.ceil(hz)) - 1 - ez, 0)
                ny_ = max(int(math.ceil(hy)) - 1 - ey, 0)
                nx_ = max(int(math.ceil(hx)) - 1 - ex, 0)
                relevant = (
                    ez + nz_ >= lo[0] and ez < lo[0] + shape[0]
                    and ey + ny_ >= lo[1] and ey < lo[1] + shape[1]
                    and ex + nx_ >= lo[2] and ex < lo[2] + shape[2]
                )  # fmt: skip
                if nz_ + ny_ + nx_ == 1 and not (
                    (nz_ and level_z) or (ny_ and level_y) or (nx_ and level_x)
                ):  # one face, moving along the row (most straddlers): up to where the box
                    # reaches the next face or leaves the two MRI voxels, voxel by voxel
                    end = float(nx)
                    for s, inv, base, e0, e1, bl, bh in (
                        (sz, inv_z, bz, ez, ez + nz_, box_lo[0], box_hi[0]),
                        (sy, inv_y, by, ey, ey + ny_, box_lo[1], box_hi[1]),
                        (sx, inv_x, bx, ex, ex + nx_, box_lo[2], box_hi[2]),
                    ):
                        if s > 0.0:
                            end = min(end, (min(e0 + 1.0 - bl, e1 + 1.0 - bh) - base) * inv)
                        elif s < 0.0:
                            end = min(end, (max(e0 - bl, e1 - bh) - base) * inv)
                    first = i
                    i = min(max(int(math.ceil(end)), i + 1), nx)
                    if not relevant:
                        continue
                    m = 0 if nz_ else (1 if ny_ else 2)
                    face = (ez if nz_ else (ey if ny_ else ex)) + 1.0
                    base_m = bz if nz_ else (by if ny_ else bx)
                    s_m = sz if nz_ else (sy if ny_ else sx)
                    acc, wv, ww = 0.0, 0.0, 0.0
                    for p in range(first, i):
                        below = _below(m, face - (base_m + s_m * p), vol, knots, coef, neg)
                        v = float(values[k, j, p])
                        acc += v
                        wv += v * below
                        ww += below
                    n = float(i - first)
                    z, y, x = ez - lo[0], ey - lo[1], ex - lo[2]
                    _flush(out, z, y, x, wv, ww)
                    _flush(out, z + nz_, y + ny_, x + nx_, acc * vol - wv, n * vol - ww)
                    continue
                cell_lo[0], cell_lo[1], cell_lo[2] = ez, ey, ex
                cell_n[0], cell_n[1], cell_n[2] = nz_, ny_, nx_
                # a run of voxels crossing the same faces: one voxel, or all up to where a box
                # leaves its MRI voxel when the crossed faces stay level along the row
                stop = i + 1
                if (not nz_ or level_z) and (not ny_ or level_y) and (not nx_ or level_x):
                    end = float(nx)  # the crossed axes stay put: only the others can leave
                    if not nz_:
                        end = _leaves(end, sz, inv_z, bz, ez, box_lo[0], box_hi[0])
                    if not ny_:
                        end = _leaves(end, sy, inv_y, by, ey, box_lo[1], box_hi[1])
                    if not nx_:
                        end = _leaves(end, sx, inv_x, bx, ex, box_lo[2], box_hi[2])
                    stop = max(int(end), stop)
                first = i
                i = stop
                if not relevant:
                    continue
                acc = _row_sum(values, k, j, first, stop)
                n = float(stop - first)
                z, y, x = cell_lo[0] - lo[0], cell_lo[1] - lo[1], cell_lo[2] - lo[2]
                crossed = cell_n[0] + cell_n[1] + cell_n[2]
                if crossed == 1:  # one face (most straddlers)
                    m = 0 if cell_n[0] else (1 if cell_n[1] else 2)
                    c = cz if m == 0 else (cy if m == 1 else cx)
                    below = _below(m, cell_lo[m] + 1.0 - c, vol, knots, coef, neg)
                    _put(out, z, y, x, acc, n, below)
                    _put(out, z + (m == 0), y + (m == 1), x + (m == 2), acc, n, vol - below)
                    continue
                closed = max(cell_n[0], cell_n[1], cell_n[2]) == 1 and (
                    (crossed == 2 and mode[cell_n[1] + 2 * cell_n[2] - 1] != 2)
                    or (crossed == 3 and mode[3] != 2)
                )
                if closed:  # two or three faces of different axes, in closed form
                    r[0] = cell_lo[0] + 1.0 - cz
                    r[1] = cell_lo[1] + 1.0 - cy
                    r[2] = cell_lo[2] + 1.0 - cx
                    if crossed == 2:
                        ma = 0 if cell_n[0] else 1
                        mb = 2 if cell_n[2] else 1
                        fv[ma] = _below(ma, r[ma], vol, knots, coef, neg)
                        fv[mb] = _below(mb, r[mb], vol, knots, coef, neg)
                        vab = _joint_inline(ma, mb, r, fv, vol, mode, flipped, sweeps, pair_u,
                                            h, lines, poly_buf)  # fmt: skip
                        va, vb = fv[ma], fv[mb]
                        za, ya, xa = z + (ma == 0), y + (ma == 1), x  # across face ma
                        _put(out, z, y, x, acc, n, vab)
                        _put(out, z + (mb == 0), y + (mb == 1), x + (mb == 2), acc, n, va - vab)
                        _put(out, za, ya, xa, acc, n, vb - vab)
                        _put(out, za + (mb == 0), ya + (mb == 1), xa + (mb == 2), acc, n,
                             vol - va - vb + vab)  # fmt: skip
                    else:  # three (rare): not inlined
                        _corner(out, z, y, x, acc, n, vol, cell_n, r, faces, pairs, scratch2)
                    continue
                for q in range(first, stop):  # the tetrahedra, voxel by voxel
                    qz, qy, qx = bz + sz * q, by + sy * q, bx + sx * q
                    for b in range(8):
                        c8[b, 0] = qz + off8[b, 0]
                        c8[b, 1] = qy + off8[b, 1]
                        c8[b, 2] = qx + off8[b, 2]
                    stack = _straddler(
                        out, c8, float(values[k, j, q]), vol, cell_lo, cell_n, lo, shape, kuhn,
                        tv, scratch, stack,
                    )  # fmt: skip
    return out


@functools.lru_cache(maxsize=16)
def _face_tables(heights: tuple[float, ...]) -> tuple[Any, ...]:
    """Per MRI axis ``m``: ``P(w . u < t)`` as pieces of a polynomial, exact to rounding.

    With the ``d`` non-zero widths ``w = |h[m]|`` it is ``(1 / (d! prod w)) sum_s (-1)^|s|
    (t - s.w)^d_+``. Piece ``q`` starts at the ``q``-th smallest knot ``s.w``; its coefficients
    in ``x = t - knot_q`` are expanded in exact rational arithmetic and rounded once, so a
    piece is as accurate as its Horner form however unequal the widths are (the expanded sum
    itself would cancel). Returns the knots (3, 9), coefficients (3, 8, 4) and the offset
    ``neg`` (3,): ``t = r - neg`` for the signed heights.
    """
    h = np.asarray(heights).reshape(3, 3)
    knots = np.full((3, 9), np.inf)
    coef = np.zeros((3, 8, 4))
    for m in range(3):
        w = [fractions.Fraction(float(v)) for v in np.abs(h[m]) if v != 0]
        d = len(w)
        norm = fractions.Fraction(1, math.factorial(d)) / math.prod(w, start=fractions.Fraction(1))
        terms = sorted(
            (sum((wi for wi, si in zip(w, s, strict=True) if si), fractions.Fraction(0)),
             (-1) ** sum(s))
            for s in itertools.product((0, 1), repeat=d)
        )  # fmt: skip
        for q, (kq, _) in enumerate(terms):
            knots[m, q] = float(kq)
            c = [fractions.Fraction(0)] * 4
            for kr, sign in terms[: q + 1]:
                for e in range(d + 1):
                    c[e] += sign * math.comb(d, e) * (kq - kr) ** (d - e)
            coef[m, q] = [float(ce * norm) for ce in c]
    neg = np.where(h < 0, h, 0.0).sum(axis=1)
    return knots, coef, neg


def _sweep_rows(h: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, int] | None:
    """Rows of :func:`_swept` for the faces ``axes``, or None without an edge climbing all.

    The edge swept along is the one climbing every face most steeply relative to that face's
    steepest edge. It must climb them all the same way: a face it descends is replaced by its
    other side (at most one: the majority sets the way; with two faces the first), whose index
    is returned (-1: none). If it descends them all, ``u_e -> 1 - u_e`` turns it round.
    Row: 1 / height along the edge, the shift of ``r``, the two slopes, the side (+-1), axis.
    """
    hs = h[list(axes)]
    scale = np.abs(hs).max(axis=1)
    if not scale.all():
        return None
    steep = (np.abs(hs) / scale[:, None]).min(axis=0)
    e = int(np.argmax(steep))
    if steep[e] < _MIN_STEEP:
        return None
    signs = np.sign(hs[:, e])
    way = signs[0] if len(axes) == 2 else np.sign(signs.sum())
    rows = np.zeros((3, 6))
    flipped = -1
    j1, j2 = (q for q in range(3) if q != e)
    for k, m in enumerate(axes):
        side = 1.0 if signs[k] == way else -1.0
        if side < 0:
            flipped = k
        hm = h[m] * side
        up = abs(hm[e])
        rows[k] = (1 / up, -hm[e] if way < 0 else 0.0, -hm[j1] / up, -hm[j2] / up, side, m)
    return rows, flipped


def _pair_tables(h: np.ndarray) -> tuple[Any, ...]:
    """How a voxel's volume below two faces or three is found, per group of faces.

    Groups 0-2: the axes 01, 02, 12; group 3: all three. Modes: 0 independent, 1 two edges
    between them (the square cut by two lines), 2 the tetrahedra, 3 swept along an edge,
    4 (three) one face independent of the other two.
    """
    mode = np.full(4, 2, np.int64)
    flipped = np.full(4, -1, np.int64)
    sweeps = np.zeros((4, 3, 6))
    pair_u = np.zeros((3, 2), np.int64)
    support = h != 0
    for ma, mb in itertools.combinations(range(3), 2):
        g = ma + mb - 1
        sa, sb = support[ma], support[mb]
        edges = np.nonzero(sa | sb)[0]
        if not (sa & sb).any():
            mode[g] = 0
        elif len(edges) <= 2:
            mode[g] = 1
            pair_u[g] = (edges[0], edges[-1] if len(edges) == 2 else (edges[0] + 1) % 3)
        elif (swept := _sweep_rows(h, (ma, mb))) is not None:
            mode[g] = 3
            sweeps[g], flipped[g] = swept
    if (mode[:3] != 2).all():
        alone = [m for m in range(3) if not (support[m] & support[np.arange(3) != m]).any()]
        if alone:
            mode[3] = 4
            sweeps[3, 0, 5] = alone[0]
        elif (swept := _sweep_rows(h, (0, 1, 2))) is not None:
            mode[3] = 3
            sweeps[3], flipped[3] = swept
    return mode, flipped, sweeps, pair_u, h


def general_block_affine(
    values: np.ndarray,
    index_map: np.ndarray,
    lo: tuple[int, ...],
    bbox_lo: np.ndarray,
    bbox_shape: tuple[int, ...],
) -> np.ndarray:
    """:func:`~bridge_xr.extract._kuhn.general_block` of block ``lo:...`` for an affine chain.

    ``index_map`` (3, 4): microscopy index (z, y, x) -> MRI index, where MRI voxel ``v`` spans
    ``[v, v + 1)`` and microscopy voxel ``k`` spans ``[k - 0.5, k + 0.5)``. Folded (flat) or
    over-wide voxels are left out as in the general kernel: here all of them or none.
    """
    if values.dtype == np.bool_:
        values = values.view(np.uint8)
    a = np.ascontiguousarray(index_map[:, :3], dtype=np.float64)
    bits = np.array([[(b >> 2) & 1, (b >> 1) & 1, b & 1] for b in range(8)], dtype=np.float64)
    off8 = bits @ a.T  # (8, 3) corner offsets from corner 0 (C-ordered)
    tv = np.empty(6)
    vol, folded = _kuhn_volume(off8, _PARITY.astype(np.float64), np.empty((8, 3)), tv)
    span = float((off8.max(axis=0) - off8.min(axis=0)).max())
    if folded or span > MAX_SPAN:
        return np.zeros((2, *bbox_shape))
    h = np.where(np.abs(a) > _ZERO * np.abs(a).max(), a, 0.0)  # the voxel's edges' heights
    p0 = a @ (np.asarray(lo, dtype=np.float64) - 0.5) + index_map[:, 3]
    return general_kernel_affine(
        values,
        a,
        p0,
        off8,
        off8.min(axis=0),
        off8.max(axis=0),
        tv,
        float(vol),
        np.asarray(bbox_lo, dtype=np.int64),
        np.asarray(bbox_shape, dtype=np.int64),
        _KUHN_CORNER.astype(np.int64),
        _face_tables(tuple(h.ravel().tolist())),
        _pair_tables(h),
        _scratch(),
    )
