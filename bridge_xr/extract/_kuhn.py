"""Exact footprint integration for general chains: Kuhn tetrahedra clipped against MRI voxels.

Every microscopy voxel is cut into the 6 tetrahedra of the Kuhn triangulation, mapped through
the chain at its corners and clipped exactly against the MRI voxel faces. Compiled (numba), one
pass over a block's voxels without temporaries: a voxel inside one MRI voxel adds its volume
there directly (most voxels: an MRI voxel is ~20 microscopy voxels wide); one whose box crosses
a single MRI voxel face splits each tetrahedron's volume at that face in closed form; one near
an MRI voxel edge (two faces) or corner (three) shares it out by inclusion-exclusion of closed
forms; the rest (a voxel spanning three MRI voxels along an axis) split their tetrahedra on a
small stack of pieces, the lowest crossing face first, and every piece adds its volume to the MRI
voxel holding its centroid.

Through a TPS the corners are interpolated from exactly mapped nodes, in tiles of
``_TY x _TX`` voxels whose corner slab and per-voxel geometry have strides fixed at compile
time: every voxel's box, cell, volume and fold test are then computed on vector registers, row
by row, before the voxels are summed.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numba as nb
import numpy as np

# Kuhn (Freudenthal) triangulation of the unit cube: 6 tetrahedra, corner bits (z, y, x)
_KUHN = np.array(
    [
        [
            (0, 0, 0),
            tuple(int(i in p[:1]) for i in range(3)),
            tuple(int(i in p[:2]) for i in range(3)),
            (1, 1, 1),
        ]
        for p in itertools.permutations(range(3))
    ]
)  # (6, 4, 3)


#: the Kuhn tetrahedra as indices into the 8 corners in itertools.product((0, 1), repeat=3) order
_KUHN_CORNER = _KUHN[..., 0] * 4 + _KUHN[..., 1] * 2 + _KUHN[..., 2]


#: orientation of each Kuhn tetrahedron (the parity of its axis permutation)
_PARITY = np.array(
    [np.sign(np.linalg.det(np.diff(t, axis=0).astype(float))) for t in _KUHN], dtype=np.float64
)


#: a microscopy voxel mapped wider than this many MRI voxels is left out (see general_block)
MAX_SPAN = 4.0

#: room for the pieces of one tetrahedron while it is being split (grown when needed)
_STACK = 256


@nb.njit(inline="always", nogil=True, cache=True)
def _det(p: Any, a: int, b: int, c: int, d: int) -> float:
    """Six times the signed volume of the tetrahedron of rows a, b, c, d of ``p`` (n, 3)."""
    u0, u1, u2 = p[b, 0] - p[a, 0], p[b, 1] - p[a, 1], p[b, 2] - p[a, 2]
    v0, v1, v2 = p[c, 0] - p[a, 0], p[c, 1] - p[a, 1], p[c, 2] - p[a, 2]
    w0, w1, w2 = p[d, 0] - p[a, 0], p[d, 1] - p[a, 1], p[d, 2] - p[a, 2]
    return u0 * (v1 * w2 - v2 * w1) - u1 * (v0 * w2 - v2 * w0) + u2 * (v0 * w1 - v1 * w0)


@nb.njit(inline="always", nogil=True, cache=True)
def _put(stack: Any, n: int, w: Any, a: int, b: int, c: int, d: int) -> int:
    """Push the tetrahedron of rows a, b, c, d of ``w`` onto ``stack`` (n pieces so far)."""
    for m in range(3):
        stack[n, 0, m] = w[a, m]
        stack[n, 1, m] = w[b, m]
        stack[n, 2, m] = w[c, m]
        stack[n, 3, m] = w[d, m]
    return n + 1


@nb.njit(inline="always", nogil=True, cache=True)
def _prism(stack: Any, n: int, w: Any, a1: int, a2: int, a3: int, b1: int, b2: int, b3: int) -> int:
    """Three tetrahedra tiling the prism with triangles a and b (a_k -- b_k edges; rows of w)."""
    n = _put(stack, n, w, a1, a2, a3, b1)
    n = _put(stack, n, w, a2, a3, b1, b2)
    return _put(stack, n, w, a3, b1, b2, b3)


@nb.njit(inline="always", nogil=True, cache=True)
def _cut(w: Any, dst: int, p: int, q: int, d: Any) -> None:
    """``w[dst]`` = the point where the edge ``w[p] -- w[q]`` meets the plane (distances ``d``)."""
    t = d[p] / (d[p] - d[q])
    for m in range(3):
        w[dst, m] = w[p, m] + t * (w[q, m] - w[p, m])


@nb.njit(inline="always", nogil=True, cache=True)
def _order_and_cut(tet: Any, axis: int, plane: float, w: Any, d: Any) -> int:
    """Sort ``tet``'s vertices below ``x[axis] = plane`` first into ``w[:4]`` and cut its edges.

    Returns how many lie below (1, 2 or 3: the plane crosses ``tet``). ``w[4:]`` receive the
    cut points: two below, edges 0-2, 0-3, 1-2, 1-3; one vertex alone on its side, the edges
    from it to the other three. ``d`` (8,) scratch: the vertices' distances to the plane.
    """
    n_below = 0
    for m in range(4):  # below-plane vertices first, in order (then the others)
        if tet[m, axis] < plane:
            for c in range(3):
                w[n_below, c] = tet[m, c]
            n_below += 1
    q = n_below
    for m in range(4):
        if not tet[m, axis] < plane:
            for c in range(3):
                w[q, c] = tet[m, c]
            q += 1
    for m in range(4):
        d[m] = w[m, axis] - plane
    if n_below == 2:
        _cut(w, 4, 0, 2, d)
        _cut(w, 5, 0, 3, d)
        _cut(w, 6, 1, 2, d)
        _cut(w, 7, 1, 3, d)
    else:
        s, r0, r1, r2 = (0, 1, 2, 3) if n_below == 1 else (3, 0, 1, 2)
        _cut(w, 4, s, r0, d)
        _cut(w, 5, s, r1, d)
        _cut(w, 6, s, r2, d)
    return n_below


@nb.njit(inline="always", nogil=True, cache=True)
def _split(tet: Any, axis: int, plane: float, stack: Any, n: int, w: Any, d: Any) -> int:
    """Push the pieces of ``tet`` on both sides of ``x[axis] = plane`` (it crosses it).

    ``w`` (8, 3), ``d`` (8,) scratch (see :func:`_order_and_cut`).
    """
    n_below = _order_and_cut(tet, axis, plane, w, d)
    if n_below == 2:
        n = _prism(stack, n, w, 0, 4, 5, 1, 6, 7)
        return _prism(stack, n, w, 2, 4, 6, 3, 5, 7)
    s, r0, r1, r2 = (0, 1, 2, 3) if n_below == 1 else (3, 0, 1, 2)
    n = _put(stack, n, w, s, 4, 5, 6)
    return _prism(stack, n, w, 4, 5, 6, r0, r1, r2)


@nb.njit(inline="always", nogil=True, cache=True)
def _load_tet(c8: Any, kuhn: Any, t: int, tet: Any) -> None:
    """``tet`` = the voxel's Kuhn tetrahedron ``t`` (rows of ``c8``, the corners in bit order)."""
    for q in range(4):
        for m in range(3):
            tet[q, m] = c8[kuhn[t, q], m]


@nb.njit(inline="always", nogil=True, cache=True)
def _add(out: Any, z: int, y: int, x: int, value: float, vol: float) -> None:
    if 0 <= z < out.shape[1] and 0 <= y < out.shape[2] and 0 <= x < out.shape[3]:
        out[0, z, y, x] += value * vol
        out[1, z, y, x] += vol


@nb.njit(inline="always", nogil=True, cache=True, fastmath=True)
def _sort4(h0: float, h1: float, h2: float, h3: float) -> tuple[float, float, float, float]:
    """The four values in ascending order (a sorting network: no branches)."""
    a, b = min(h0, h1), max(h0, h1)
    c, d = min(h2, h3), max(h2, h3)
    s0, t = min(a, c), max(a, c)
    u, s3 = min(b, d), max(b, d)
    return s0, min(t, u), max(t, u), s3


@nb.njit(inline="always", nogil=True, cache=True, fastmath=True)
def _frac_sorted(h0: float, h1: float, h2: float, h3: float) -> float:
    """Fraction of a tetrahedron's volume where a linear function is < 0, from its 4 values.

    The volume fraction below a level is the divided difference of ``(-h)^3_+`` over the
    vertex values; in the forms below every term is non-negative, so near-equal values (a
    nearly axis-aligned voxel) lose no precision. With the values sorted: one vertex below at
    depth ``u``, the others at heights ``v``: ``u^3 / prod(u + v)``; three below: one minus the
    mirror image; two below (depths ``u1, u2``, heights ``v1, v2``)::

        (u1^2 u2^2 + (v1 + v2) u1 u2 (u1 + u2) + v1 v2 (u1^2 + u1 u2 + u2^2))
        / ((u1 + v1) (u1 + v2) (u2 + v1) (u2 + v2))
    """
    s0, s1, s2, s3 = _sort4(h0, h1, h2, h3)
    if s0 >= 0.0:
        return 0.0
    if s3 < 0.0:
        return 1.0
    if s1 >= 0.0:  # one below, at depth w
        w = -s0
        return w * w * w / ((s1 + w) * (s2 + w) * (s3 + w))
    if s2 < 0.0:  # one above, at height w
        w = s3
        return 1.0 - w * w * w / ((w - s0) * (w - s1) * (w - s2))
    u1, u2, v1, v2 = -s0, -s1, s2, s3
    num = u1 * u1 * u2 * u2 + (v1 + v2) * u1 * u2 * (u1 + u2)
    num += v1 * v2 * (u1 * u1 + u1 * u2 + u2 * u2)
    return num / ((u1 + v1) * (u1 + v2) * (u2 + v1) * (u2 + v2))


@nb.njit(inline="always", nogil=True, cache=True)
def _one_face(c8: Any, ax: int, plane: float, tv: Any) -> float:
    """Volume of a voxel (corners ``c8``, tetrahedra volumes ``tv``) below ``x[ax] = plane``.

    The Kuhn tetrahedra are (0, a, b, 7) with (a, b) in the order of :data:`_KUHN`.
    """
    h0, h1, h2, h3 = c8[0, ax] - plane, c8[1, ax] - plane, c8[2, ax] - plane, c8[3, ax] - plane
    h4, h5, h6, h7 = c8[4, ax] - plane, c8[5, ax] - plane, c8[6, ax] - plane, c8[7, ax] - plane
    return (
        tv[0] * _frac_sorted(h0, h4, h6, h7)
        + tv[1] * _frac_sorted(h0, h4, h5, h7)
        + tv[2] * _frac_sorted(h0, h2, h6, h7)
        + tv[3] * _frac_sorted(h0, h2, h3, h7)
        + tv[4] * _frac_sorted(h0, h1, h5, h7)
        + tv[5] * _frac_sorted(h0, h1, h3, h7)
    )


@nb.njit(inline="always", nogil=True, cache=True, fastmath=True)
def _frac_select(h0: float, h1: float, h2: float, h3: float) -> float:
    """:func:`_frac_sorted` without branches, so that a loop of them vectorises.

    Every case's numerator and denominator are formed, the right pair chosen, then divided
    once; the chosen denominator is positive.
    """
    s0, s1, s2, s3 = _sort4(h0, h1, h2, h3)
    w = -s0  # one below, at depth w
    num1, den1 = w * w * w, (s1 + w) * (s2 + w) * (s3 + w)
    den3 = (s3 - s0) * (s3 - s1) * (s3 - s2)  # one above, at height s3
    num3 = den3 - s3 * s3 * s3
    u2 = -s1  # two below (depths w, u2), two above (heights s2, s3)
    num2 = w * w * u2 * u2 + (s2 + s3) * w * u2 * (w + u2)
    num2 += s2 * s3 * (w * w + w * u2 + u2 * u2)
    den2 = (w + s2) * (w + s3) * (u2 + s2) * (u2 + s3)
    # choose by 0/1 weights (every candidate is finite, so the choice is exact)
    c1, c3 = np.float64(s1 >= 0.0), np.float64(s2 < 0.0) * np.float64(s1 < 0.0)
    c2 = 1.0 - c1 - c3
    none, every = np.float64(s0 >= 0.0), np.float64(s3 < 0.0)
    some = 1.0 - none - every
    num = some * (c1 * num1 + c3 * num3 + c2 * num2) + every
    den = some * (c1 * den1 + c3 * den3 + c2 * den2) + none + every
    return num / den


@nb.njit(nogil=True, cache=True, fastmath=True, boundscheck=False, error_model="numpy")
def _one_faces(geo: Any, n: int) -> None:
    """Volume below its face for each of ``n`` voxels batched in ``geo`` (vectorised).

    Rows ``_GEO_ROWS + b`` hold corner ``b``'s height above the face (b = 0..7, bit order),
    ``_GEO_ROWS + 8 + t`` tetrahedron ``t``'s volume; the result goes to ``_GEO_ROWS + 14``.
    The Kuhn tetrahedra are (0, a, b, 7) with (a, b) in the order of :data:`_KUHN`.
    """
    tx = np.uint64(_TX)
    h = np.uint64(_GEO_ROWS) * tx
    v = h + np.uint64(8) * tx
    for i in range(np.uint64(n)):
        h0, h1, h2, h3 = geo[h + i], geo[h + tx + i], geo[h + 2 * tx + i], geo[h + 3 * tx + i]
        h4, h5 = geo[h + 4 * tx + i], geo[h + 5 * tx + i]
        h6, h7 = geo[h + 6 * tx + i], geo[h + 7 * tx + i]
        geo[v + 6 * tx + i] = (
            geo[v + i] * _frac_select(h0, h4, h6, h7)
            + geo[v + tx + i] * _frac_select(h0, h4, h5, h7)
            + geo[v + 2 * tx + i] * _frac_select(h0, h2, h6, h7)
            + geo[v + 3 * tx + i] * _frac_select(h0, h2, h3, h7)
            + geo[v + 4 * tx + i] * _frac_select(h0, h1, h5, h7)
            + geo[v + 5 * tx + i] * _frac_select(h0, h1, h3, h7)
        )


@nb.njit(nogil=True, cache=True, fastmath=True, boundscheck=False, error_model="numpy")
def _one_faces_row(geo: Any, n: int) -> None:
    """:func:`_one_faces` for every voxel ``0 .. n`` of a row, where they are.

    Heights from :func:`_row_heights`, tetrahedra volumes from :func:`_row_geometry`; the
    volume below goes to row ``_ROW_H + 8``.
    """
    tx = np.uint64(_TX)
    h = np.uint64(_ROW_H) * tx
    v = np.uint64(5) * tx
    o = h + np.uint64(8) * tx
    for i in range(np.uint64(n)):
        h0, h1, h2, h3 = geo[h + i], geo[h + tx + i], geo[h + 2 * tx + i], geo[h + 3 * tx + i]
        h4, h5 = geo[h + 4 * tx + i], geo[h + 5 * tx + i]
        h6, h7 = geo[h + 6 * tx + i], geo[h + 7 * tx + i]
        geo[o + i] = (
            geo[v + i] * _frac_select(h0, h4, h6, h7)
            + geo[v + tx + i] * _frac_select(h0, h4, h5, h7)
            + geo[v + 2 * tx + i] * _frac_select(h0, h2, h6, h7)
            + geo[v + 3 * tx + i] * _frac_select(h0, h2, h3, h7)
            + geo[v + 4 * tx + i] * _frac_select(h0, h1, h5, h7)
            + geo[v + 5 * tx + i] * _frac_select(h0, h1, h3, h7)
        )


@nb.njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _row_heights(c: Any, j: int, i0: int, n: int, pz: int, ax: int, geo: Any) -> None:
    """Row ``j``'s corner heights above the MRI voxel face next above each voxel's lowest corner.

    Along ``ax``, for voxels ``i0 .. i0 + n`` (corners in bit order) into rows
    ``_ROW_H .. _ROW_H + 7`` (columns from 0).
    """
    a = np.uint64(_slab_at(ax, pz, j, i0))
    b = np.uint64(_slab_at(ax, 1 - pz, j, i0))
    sx, tx = np.uint64(_SX), np.uint64(_TX)
    h = np.uint64(_ROW_H) * tx
    for i in range(np.uint64(n)):
        r = i + _U1
        q0, q1, q2, q3 = c[a + i], c[a + r], c[a + sx + i], c[a + sx + r]
        q4, q5, q6, q7 = c[b + i], c[b + r], c[b + sx + i], c[b + sx + r]
        plane = np.floor(min(min(min(q0, q1), min(q2, q3)), min(min(q4, q5), min(q6, q7)))) + 1.0
        geo[h + i] = q0 - plane
        geo[h + tx + i] = q1 - plane
        geo[h + 2 * tx + i] = q2 - plane
        geo[h + 3 * tx + i] = q3 - plane
        geo[h + 4 * tx + i] = q4 - plane
        geo[h + 5 * tx + i] = q5 - plane
        geo[h + 6 * tx + i] = q6 - plane
        geo[h + 7 * tx + i] = q7 - plane


@nb.njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _row_face_axis(geo: Any, nx: int) -> int:
    """The axis (0: z, 1: y) along which the row runs on the whole-row path, or -1.

    That is where at least an eighth of its voxels cross one MRI voxel face of that axis and
    no other: a row crossing a z (y) face along much of its length.
    """
    tx = np.uint64(_TX)
    cz, cy = 0.0, 0.0
    for i in range(np.uint64(nx)):
        a, b, c = geo[11 * tx + i], geo[12 * tx + i], geo[13 * tx + i]
        flat = np.float64(geo[3 * tx + i] == 0.0)
        cz += flat * np.float64(a == 1.0) * np.float64(b == 0.0) * np.float64(c == 0.0)
        cy += flat * np.float64(a == 0.0) * np.float64(b == 1.0) * np.float64(c == 0.0)
    if cz >= cy and 8.0 * cz >= nx:
        return 0
    if 8.0 * cy >= nx:
        return 1
    return -1


@nb.njit(inline="always", nogil=True, cache=True)
def _flush(out: Any, z: int, y: int, x: int, weighted: float, vol: float) -> None:
    if 0 <= z < out.shape[1] and 0 <= y < out.shape[2] and 0 <= x < out.shape[3]:
        out[0, z, y, x] += weighted
        out[1, z, y, x] += vol


@nb.njit(nogil=True, cache=True)
def _both_below(
    a0: float, a1: float, a2: float, a3: float, b0: float, b1: float, b2: float, b3: float,
    vol: float,
) -> tuple[float, float, float]:  # fmt: skip
    """Volumes of a tetrahedron (volume ``vol``) below face a, below face b and below both.

    ``a*``, ``b*``: its vertices' heights above the two faces. The part below face a is the
    corner at a lone vertex, the tetrahedron less the corner at a lone vertex above, or a prism
    of three tetrahedra; the edges' cut points' heights above face b and those pieces' volumes
    follow from the cut parameters ``t`` (barycentric determinants), so each piece's share
    below face b is one more closed form (:func:`_frac_sorted`). No piece is ever built.
    """
    fa, fb = _frac_sorted(a0, a1, a2, a3), _frac_sorted(b0, b1, b2, b3)
    va, vb = vol * fa, vol * fb
    if fa == 0.0 or fb == 0.0:
        return va, vb, 0.0
    if fa == 1.0 or fb == 1.0:
        return va, vb, (vb if fa == 1.0 else va)
    n = (a0 < 0.0) + (a1 < 0.0) + (a2 < 0.0) + (a3 < 0.0)
    if n != 2:  # a lone vertex p on its side: the corner at p (edges cut at t toward q, r, s)
        lone_below = n == 1
        if (a0 < 0.0) == lone_below:
            ap, bp, aq, bq, ar, br, as_, bs = a0, b0, a1, b1, a2, b2, a3, b3
        elif (a1 < 0.0) == lone_below:
            ap, bp, aq, bq, ar, br, as_, bs = a1, b1, a0, b0, a2, b2, a3, b3
        elif (a2 < 0.0) == lone_below:
            ap, bp, aq, bq, ar, br, as_, bs = a2, b2, a0, b0, a1, b1, a3, b3
        else:
            ap, bp, aq, bq, ar, br, as_, bs = a3, b3, a0, b0, a1, b1, a2, b2
        tq, tr, ts = ap / (ap - aq), ap / (ap - ar), ap / (ap - as_)
        corner = _frac_sorted(bp, bp + tq * (bq - bp), bp + tr * (br - bp), bp + ts * (bs - bp))
        if lone_below:  # the corner is the part below a
            return va, vb, va * corner
        return va, vb, vb - (vol - va) * corner  # the tetrahedron less the corner above a
    # two below (i, j), two above (k, l): the prism (i, c_ik, c_il) - (j, c_jk, c_jl)
    if a0 < 0.0:
        if a1 < 0.0:
            ai, bi, aj, bj, ak, bk, al, bl = a0, b0, a1, b1, a2, b2, a3, b3
        elif a2 < 0.0:
            ai, bi, aj, bj, ak, bk, al, bl = a0, b0, a2, b2, a1, b1, a3, b3
        else:
            ai, bi, aj, bj, ak, bk, al, bl = a0, b0, a3, b3, a1, b1, a2, b2
    elif a1 < 0.0:
        if a2 < 0.0:
            ai, bi, aj, bj, ak, bk, al, bl = a1, b1, a2, b2, a0, b0, a3, b3
        else:
            ai, bi, aj, bj, ak, bk, al, bl = a1, b1, a3, b3, a0, b0, a2, b2
    else:
        ai, bi, aj, bj, ak, bk, al, bl = a2, b2, a3, b3, a0, b0, a1, b1
    tik, til = ai / (ai - ak), ai / (ai - al)
    tjk, tjl = aj / (aj - ak), aj / (aj - al)
    bik, bil = bi + tik * (bk - bi), bi + til * (bl - bi)
    bjk, bjl = bj + tjk * (bk - bj), bj + tjl * (bl - bj)
    v1 = vol * tik * til  # (i, c_ik, c_il, j)
    v3 = vol * (1.0 - til) * tjk * tjl  # (c_il, j, c_jk, c_jl)
    v2 = va - v1 - v3  # (c_ik, c_il, j, c_jk)
    vab = v1 * _frac_sorted(bi, bik, bil, bj) + v2 * _frac_sorted(bik, bil, bj, bjk)
    return va, vb, vab + v3 * _frac_sorted(bil, bj, bjk, bjl)


@nb.njit(inline="always", nogil=True, cache=True)
def _four_cells(
    out: Any, cell_lo: Any, lo: Any, a: int, b: int, v: float, vol: float, va: float,
    vb: float, vab: float,
) -> None:  # fmt: skip
    """Share a voxel crossing faces ``a`` and ``b`` out by inclusion-exclusion."""
    z, y, x = cell_lo[0] - lo[0], cell_lo[1] - lo[1], cell_lo[2] - lo[2]
    za, ya, xa = z + (a == 0), y + (a == 1), x + (a == 2)  # across face a
    _add(out, z, y, x, v, vab)
    _add(out, z + (b == 0), y + (b == 1), x + (b == 2), v, va - vab)
    _add(out, za, ya, xa, v, vb - vab)
    _add(out, za + (b == 0), ya + (b == 1), xa + (b == 2), v, vol - va - vb + vab)


@nb.njit(nogil=True, cache=True)
def _two_faces(
    c8: Any, tv: Any, a: int, pa: float, b: int, pb: float
) -> tuple[float, float, float]:
    """Volumes of a voxel below face ``a``, below face ``b`` and below both (closed forms).

    The Kuhn tetrahedra are (0, a, b, 7) with (a, b) in the order of :data:`_KUHN`.
    """
    a0, a1, a2, a3 = c8[0, a] - pa, c8[1, a] - pa, c8[2, a] - pa, c8[3, a] - pa
    a4, a5, a6, a7 = c8[4, a] - pa, c8[5, a] - pa, c8[6, a] - pa, c8[7, a] - pa
    b0, b1, b2, b3 = c8[0, b] - pb, c8[1, b] - pb, c8[2, b] - pb, c8[3, b] - pb
    b4, b5, b6, b7 = c8[4, b] - pb, c8[5, b] - pb, c8[6, b] - pb, c8[7, b] - pb
    va, vb, vab = _both_below(a0, a4, a6, a7, b0, b4, b6, b7, tv[0])
    for x, y, z in (
        _both_below(a0, a4, a5, a7, b0, b4, b5, b7, tv[1]),
        _both_below(a0, a2, a6, a7, b0, b2, b6, b7, tv[2]),
        _both_below(a0, a2, a3, a7, b0, b2, b3, b7, tv[3]),
        _both_below(a0, a1, a5, a7, b0, b1, b5, b7, tv[4]),
        _both_below(a0, a1, a3, a7, b0, b1, b3, b7, tv[5]),
    ):  # fmt: skip
        va, vb, vab = va + x, vb + y, vab + z
    return va, vb, vab


@nb.njit(inline="always", nogil=True, cache=True)
def _piece(w: Any, i: int, j: int, k: int, m: int, acc: Any, side: int) -> None:
    """Add tetrahedron ``w[i, j, k, m]``'s volume and its volumes below z = 0, y = 0 and both.

    Into ``acc[side]`` (volume, below z, below y, below both); ``w`` rows hold heights (z, y, x)
    above the three faces.
    """
    u0, u1, u2 = w[j, 0] - w[i, 0], w[j, 1] - w[i, 1], w[j, 2] - w[i, 2]
    v0, v1, v2 = w[k, 0] - w[i, 0], w[k, 1] - w[i, 1], w[k, 2] - w[i, 2]
    t0, t1, t2 = w[m, 0] - w[i, 0], w[m, 1] - w[i, 1], w[m, 2] - w[i, 2]
    det = u0 * (v1 * t2 - v2 * t1) - u1 * (v0 * t2 - v2 * t0) + u2 * (v0 * t1 - v1 * t0)
    _shared(w, i, j, k, m, abs(det) / 6.0, acc, side)


@nb.njit(inline="always", nogil=True, cache=True)
def _shared(w: Any, i: int, j: int, k: int, m: int, vol: float, acc: Any, side: int) -> None:
    """Add tetrahedron ``w[i, j, k, m]`` (volume ``vol``) to ``acc[side]`` (see :func:`_piece`)."""
    va, vb, vab = _both_below(
        w[i, 0], w[j, 0], w[k, 0], w[m, 0], w[i, 1], w[j, 1], w[k, 1], w[m, 1], vol
    )
    acc[side, 0] += vol
    acc[side, 1] += va
    acc[side, 2] += vb
    acc[side, 3] += vab


@nb.njit(nogil=True, cache=True)
def _three_faces(
    c8: Any, tv: Any, kuhn: Any, planes: Any, tet: Any, w: Any, d: Any, acc: Any
) -> None:
    """Volumes of a voxel crossing one MRI voxel face along each axis, on both sides of each.

    ``acc`` (2, 4) receives, below (row 0) and above (row 1) the x face: the volume, the volume
    below the z face, below the y face and below both. Each tetrahedron is cut at the x face
    into at most four (a corner and the three of a prism, as :func:`_split`), and each of these
    is shared between the z and y faces in closed form (:func:`_both_below`): no stack, a few
    dozen closed forms instead of a few hundred pieces. ``tet`` (4, 3), ``w`` (8, 3) and ``d``
    (8,) are scratch.
    """
    acc[:] = 0.0
    for t in range(6):
        below = 0
        for q in range(4):
            for m in range(3):
                tet[q, m] = c8[kuhn[t, q], m] - planes[m]
            below += tet[q, 2] < 0.0
        if below == 0 or below == 4:  # on one side of the x face: itself
            _shared(tet, 0, 1, 2, 3, tv[t], acc, 0 if below == 4 else 1)
            continue
        n_below = _order_and_cut(tet, 2, 0.0, w, d)
        if n_below == 2:  # a prism on each side
            _piece(w, 0, 4, 5, 1, acc, 0)
            _piece(w, 4, 5, 1, 6, acc, 0)
            _piece(w, 5, 1, 6, 7, acc, 0)
            _piece(w, 2, 4, 6, 3, acc, 1)
            _piece(w, 4, 6, 3, 5, acc, 1)
            _piece(w, 6, 3, 5, 7, acc, 1)
        elif n_below == 1:  # the corner at w[0] below, a prism above
            _piece(w, 0, 4, 5, 6, acc, 0)
            _piece(w, 4, 5, 6, 1, acc, 1)
            _piece(w, 5, 6, 1, 2, acc, 1)
            _piece(w, 6, 1, 2, 3, acc, 1)
        else:  # the corner at w[3] above, a prism below
            _piece(w, 3, 4, 5, 6, acc, 1)
            _piece(w, 4, 5, 6, 0, acc, 0)
            _piece(w, 5, 6, 0, 1, acc, 0)
            _piece(w, 6, 0, 1, 2, acc, 0)


@nb.njit(inline="always", nogil=True, cache=True)
def _eight_cells(out: Any, cell_lo: Any, lo: Any, v: float, acc: Any) -> None:
    """Share a voxel crossing a face along every axis out (``acc`` from :func:`_three_faces`)."""
    z, y, x = cell_lo[0] - lo[0], cell_lo[1] - lo[1], cell_lo[2] - lo[2]
    for s in range(2):
        vol, va, vb, vab = acc[s, 0], acc[s, 1], acc[s, 2], acc[s, 3]
        _add(out, z, y, x + s, v, vab)
        _add(out, z, y + 1, x + s, v, va - vab)
        _add(out, z + 1, y, x + s, v, vb - vab)
        _add(out, z + 1, y + 1, x + s, v, vol - va - vb + vab)


@nb.njit(nogil=True, cache=True)
def tet_into_cells(
    tet: Any, value: float, lo: Any, shape: Any, out: Any, stack: Any, piece: Any, w: Any, d: Any
) -> Any:
    """Add ``value`` x volume and volume of the parts of ``tet`` in each unit cell to ``out``.

    ``tet`` (4, 3) in cell units; cell ``c`` covers ``[c, c + 1)``; ``out`` (2, *shape) holds
    cells ``lo .. lo + shape``. Returns the stack (grown if a split needed more room);
    ``piece`` (4, 3), ``w`` (8, 3) and ``d`` (8,) are scratch.
    """
    stack[0] = tet
    n = 1
    while n > 0:
        n -= 1
        for q in range(4):
            for m in range(3):
                piece[q, m] = stack[n, q, m]
        split = False
        for axis in range(3):
            mn = min(piece[0, axis], piece[1, axis], piece[2, axis], piece[3, axis])
            mx = max(piece[0, axis], piece[1, axis], piece[2, axis], piece[3, axis])
            p = math.floor(mn) + 1.0
            if p < mx:  # the lowest face it crosses strictly
                if n + 6 > stack.shape[0]:
                    bigger = np.empty((2 * stack.shape[0], 4, 3))
                    bigger[:n] = stack[:n]
                    stack = bigger
                n = _split(piece, axis, p, stack, n, w, d)
                split = True
                break
        if split:
            continue
        vol = abs(_det(piece, 0, 1, 2, 3)) / 6.0
        cz = int(math.floor(0.25 * (piece[0, 0] + piece[1, 0] + piece[2, 0] + piece[3, 0]))) - lo[0]
        cy = int(math.floor(0.25 * (piece[0, 1] + piece[1, 1] + piece[2, 1] + piece[3, 1]))) - lo[1]
        cx = int(math.floor(0.25 * (piece[0, 2] + piece[1, 2] + piece[2, 2] + piece[3, 2]))) - lo[2]
        if 0 <= cz < shape[0] and 0 <= cy < shape[1] and 0 <= cx < shape[2]:
            out[0, cz, cy, cx] += value * vol
            out[1, cz, cy, cx] += vol
    return stack


@nb.njit(inline="always", nogil=True, cache=True)
def _kuhn_volume(c8: Any, parity: Any, e: Any, tv: Any) -> tuple[float, bool]:
    """Volume of a voxel's 6 Kuhn tetrahedra (corners ``c8`` in bit order), and whether folded.

    Every tetrahedron is (corner 0, a, b, corner 7) with (a, b) in (4, 6), (4, 5), (2, 6),
    (2, 3), (1, 5), (1, 3) (the order of :data:`_KUHN`), so its determinant is
    ``e_a . (e_b x d)`` with ``e = c - c0`` and ``d = c7 - c0``: three cross products serve all
    six. Folded: the tetrahedra disagree in orientation (or one is flat). ``e`` (8, 3) scratch;
    ``tv`` (6,) receives each tetrahedron's volume.
    """
    d0, d1, d2 = c8[7, 0] - c8[0, 0], c8[7, 1] - c8[0, 1], c8[7, 2] - c8[0, 2]
    for b in range(1, 7):
        for m in range(3):
            e[b, m] = c8[b, m] - c8[0, m]
    x3 = (e[3, 1] * d2 - e[3, 2] * d1, e[3, 2] * d0 - e[3, 0] * d2, e[3, 0] * d1 - e[3, 1] * d0)
    x5 = (e[5, 1] * d2 - e[5, 2] * d1, e[5, 2] * d0 - e[5, 0] * d2, e[5, 0] * d1 - e[5, 1] * d0)
    x6 = (e[6, 1] * d2 - e[6, 2] * d1, e[6, 2] * d0 - e[6, 0] * d2, e[6, 0] * d1 - e[6, 1] * d0)
    dets = (
        e[4, 0] * x6[0] + e[4, 1] * x6[1] + e[4, 2] * x6[2],
        e[4, 0] * x5[0] + e[4, 1] * x5[1] + e[4, 2] * x5[2],
        e[2, 0] * x6[0] + e[2, 1] * x6[1] + e[2, 2] * x6[2],
        e[2, 0] * x3[0] + e[2, 1] * x3[1] + e[2, 2] * x3[2],
        e[1, 0] * x5[0] + e[1, 1] * x5[1] + e[1, 2] * x5[2],
        e[1, 0] * x3[0] + e[1, 1] * x3[1] + e[1, 2] * x3[2],
    )
    vol, pos, neg = 0.0, 0, 0
    for t in range(6):
        oriented = parity[t] * dets[t]
        tv[t] = abs(dets[t]) / 6.0
        vol += abs(dets[t])
        pos += oriented > 0
        neg += oriented < 0
    return vol / 6.0, not (pos == 6 or neg == 6)


#: the node kernel runs a block in tiles of this many voxels along x and y; its slab of corners
#: and its per-voxel geometry have strides fixed at compile time, so that the compiler sees every
#: corner of a row at a constant distance from the others and runs the row on vector registers
_TX, _TY = 256, 32
_SX = _TX + 8  # corners in a slab row (>= _TX + 1)
_SP = (_TY + 1) * _SX  # one coordinate's plane of corners
_U1 = np.uint64(1)
_GEO_ROWS = 15  # per-voxel geometry (see _row_geometry), then the one-face batch (_one_faces)
_ROW_H = _GEO_ROWS + 15  # then a whole row's corner heights (8 rows) and volumes below (1 row)


@nb.njit(inline="always", nogil=True, cache=True)
def _slab_at(m: int, p: int, jj: int, i: int) -> int:
    """Index of corner ``(jj, i)`` of coordinate ``m`` in plane ``p`` of a flat slab."""
    return (2 * m + p) * _SP + jj * _SX + i


@nb.njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _row_geometry(c: Any, j: int, i0: int, n: int, pz: int, parity: Any, geo: Any) -> None:
    """Per voxel ``i0 .. i0 + n`` of row ``j`` of a tile's corner slab ``c`` (flat): cell, volume.

    ``geo`` (flat, rows of ``_TX``; column ``i`` for voxel ``i0 + i``): row 0-2 the floor of the lowest corner coordinate
    (z, y, x); 3 is 1 when the voxel lies inside that MRI voxel, 0 when its box crosses MRI
    voxel faces, negative when it is folded (its tetrahedra disagree in orientation, or one is
    flat); 4 the volume; 5-10 the six Kuhn tetrahedra's volumes (the order of :data:`_KUHN`);
    11-13 how many MRI voxel faces its box crosses along z, y, x; 14 its box's widest side.
    The determinants of :func:`_kuhn_volume`, written out, in one loop without state carried
    from voxel to voxel, on unsigned indices (no wrap-around): the compiler vectorises it.
    ``pz`` is the slab half holding the row's lower plane. Only for rows without NaN (fast
    math assumes none).
    """
    p0, p1, p2, p3, p4, p5 = parity[0], parity[1], parity[2], parity[3], parity[4], parity[5]
    a = np.uint64(_slab_at(0, pz, j, 0))  # corner (plane pz, row j, column 0) of z
    b = np.uint64(_slab_at(0, 1 - pz, j, 0))
    sx, sm = np.uint64(_SX), np.uint64(2 * _SP)  # next row; next coordinate
    tx = np.uint64(_TX)
    # the span's first voxel at column 0 of geo: stores at a variable offset would keep the
    # compiler from vectorising (too many pointers to check for overlap)
    a, b = a + np.uint64(i0), b + np.uint64(i0)
    for i in range(np.uint64(n)):
        r = i + _U1
        z0, y0, x0 = c[a + i], c[a + sm + i], c[a + sm + sm + i]
        z1, y1, x1 = c[a + r], c[a + sm + r], c[a + sm + sm + r]
        z2, y2, x2 = c[a + sx + i], c[a + sx + sm + i], c[a + sx + sm + sm + i]
        z3, y3, x3 = c[a + sx + r], c[a + sx + sm + r], c[a + sx + sm + sm + r]
        z4, y4, x4 = c[b + i], c[b + sm + i], c[b + sm + sm + i]
        z5, y5, x5 = c[b + r], c[b + sm + r], c[b + sm + sm + r]
        z6, y6, x6 = c[b + sx + i], c[b + sx + sm + i], c[b + sx + sm + sm + i]
        z7, y7, x7 = c[b + sx + r], c[b + sx + sm + r], c[b + sx + sm + sm + r]
        loz = min(min(min(z0, z1), min(z2, z3)), min(min(z4, z5), min(z6, z7)))
        hiz = max(max(max(z0, z1), max(z2, z3)), max(max(z4, z5), max(z6, z7)))
        loy = min(min(min(y0, y1), min(y2, y3)), min(min(y4, y5), min(y6, y7)))
        hiy = max(max(max(y0, y1), max(y2, y3)), max(max(y4, y5), max(y6, y7)))
        lox = min(min(min(x0, x1), min(x2, x3)), min(min(x4, x5), min(x6, x7)))
        hix = max(max(max(x0, x1), max(x2, x3)), max(max(x4, x5), max(x6, x7)))
        fz, fy, fx = np.floor(loz), np.floor(loy), np.floor(lox)
        e1z, e1y, e1x = z1 - z0, y1 - y0, x1 - x0
        e2z, e2y, e2x = z2 - z0, y2 - y0, x2 - x0
        e3z, e3y, e3x = z3 - z0, y3 - y0, x3 - x0
        e4z, e4y, e4x = z4 - z0, y4 - y0, x4 - x0
        e5z, e5y, e5x = z5 - z0, y5 - y0, x5 - x0
        e6z, e6y, e6x = z6 - z0, y6 - y0, x6 - x0
        dz, dy, dx = z7 - z0, y7 - y0, x7 - x0
        c3z = e3y * dx - e3x * dy
        c3y = e3x * dz - e3z * dx
        c3x = e3z * dy - e3y * dz
        c5z = e5y * dx - e5x * dy
        c5y = e5x * dz - e5z * dx
        c5x = e5z * dy - e5y * dz
        c6z = e6y * dx - e6x * dy
        c6y = e6x * dz - e6z * dx
        c6x = e6z * dy - e6y * dz
        t0 = e4z * c6z + e4y * c6y + e4x * c6x
        t1 = e4z * c5z + e4y * c5y + e4x * c5x
        t2 = e2z * c6z + e2y * c6y + e2x * c6x
        t3 = e2z * c3z + e2y * c3y + e2x * c3x
        t4 = e1z * c5z + e1y * c5y + e1x * c5x
        t5 = e1z * c3z + e1y * c3y + e1x * c3x
        a0, a1, a2 = abs(t0) / 6.0, abs(t1) / 6.0, abs(t2) / 6.0
        a3, a4, a5 = abs(t3) / 6.0, abs(t4) / 6.0, abs(t5) / 6.0
        o0, o1, o2, o3, o4, o5 = p0 * t0, p1 * t1, p2 * t2, p3 * t3, p4 * t4, p5 * t5
        lo_o = min(min(min(o0, o1), min(o2, o3)), min(o4, o5))
        hi_o = max(max(max(o0, o1), max(o2, o3)), max(o4, o5))
        nz_ = max(np.ceil(hiz) - 1.0, fz) - fz  # MRI voxel faces the box crosses, per axis
        ny_ = max(np.ceil(hiy) - 1.0, fy) - fy
        nx_ = max(np.ceil(hix) - 1.0, fx) - fx
        inside = (hiz <= fz + 1.0) & (hiy <= fy + 1.0) & (hix <= fx + 1.0)
        folded = (lo_o <= 0.0) & (hi_o >= 0.0)
        geo[i] = fz
        geo[tx + i] = fy
        geo[2 * tx + i] = fx
        geo[3 * tx + i] = np.float64(inside) - 2.0 * np.float64(folded)
        geo[4 * tx + i] = ((a0 + a1) + (a2 + a3)) + (a4 + a5)
        geo[5 * tx + i] = a0
        geo[6 * tx + i] = a1
        geo[7 * tx + i] = a2
        geo[8 * tx + i] = a3
        geo[9 * tx + i] = a4
        geo[10 * tx + i] = a5
        geo[11 * tx + i] = nz_
        geo[12 * tx + i] = ny_
        geo[13 * tx + i] = nx_
        geo[14 * tx + i] = max(max(hiz - loz, hiy - loy), hix - lox)


@nb.njit(nogil=True, cache=True)
def _straddler(
    out: Any,
    c8: Any,
    v: float,
    vol: float,
    cell_lo: Any,
    cell_n: Any,
    lo: Any,
    shape: Any,
    kuhn: Any,
    tv: Any,
    scratch: Any,
    stack: Any,
) -> Any:
    """Add a voxel whose box crosses MRI voxel faces (corners ``c8``, tetrahedra volumes ``tv``).

    One face: each tetrahedron's volume below it in closed form (:func:`_frac_sorted`); two
    or three faces of different axes: inclusion-exclusion of closed forms
    (:func:`_two_faces`, :func:`_three_faces`); otherwise the tetrahedra are split on a stack.
    Returns the stack (grown if needed). ``scratch``: see :func:`_scratch`.
    """
    tet, piece, w, d = scratch[0], scratch[1], scratch[2], scratch[3]
    z, y, x = cell_lo[0] - lo[0], cell_lo[1] - lo[1], cell_lo[2] - lo[2]
    if cell_n[0] + cell_n[1] + cell_n[2] == 1:  # one face (most straddlers)
        ax = 0 if cell_n[0] else (1 if cell_n[1] else 2)
        plane = float(cell_lo[ax] + 1)
        below = _one_face(c8, ax, plane, tv)
        _add(out, z, y, x, v, below)
        _add(out, z + (ax == 0), y + (ax == 1), x + (ax == 2), v, vol - below)
        return stack
    if cell_n[0] + cell_n[1] + cell_n[2] == 2 and max(cell_n[0], cell_n[1], cell_n[2]) == 1:
        # two faces (near an MRI voxel edge): inclusion-exclusion of closed forms
        a = 0 if cell_n[0] else 1
        b = 2 if cell_n[2] else 1
        va, vb, vab = _two_faces(c8, tv, a, float(cell_lo[a] + 1), b, float(cell_lo[b] + 1))
        _four_cells(out, cell_lo, lo, a, b, v, vol, va, vb, vab)
        return stack
    if cell_n[0] == 1 and cell_n[1] == 1 and cell_n[2] == 1:  # three faces (at an MRI corner)
        planes, acc = scratch[4], scratch[5]
        for m in range(3):
            planes[m] = float(cell_lo[m] + 1)
        _three_faces(c8, tv, kuhn, planes, tet, w, d, acc)
        _eight_cells(out, cell_lo, lo, v, acc)
        return stack
    for t in range(6):
        _load_tet(c8, kuhn, t, tet)
        stack = tet_into_cells(tet, v, lo, shape, out, stack, piece, w, d)
    return stack


@nb.njit(inline="always", nogil=True, cache=True)
def _clean_row(
    values: Any,
    k: int,
    jv: int,
    x0: int,
    nx: int,
    slab: Any,
    j: int,
    pz: int,
    geo: Any,
    out: Any,
    lo: Any,
    shape: Any,
    max_span: float,
    kuhn: Any,
    parity: Any,
    scratch: Any,
    vox: Any,
    stack: Any,
    sparse: bool,
    exact: Any,
    quiet: Any,
    spans: Any,
) -> Any:
    """Add voxels ``x0 .. x0 + nx`` of row ``(k, jv)``, row ``j`` of the tile's corner slab.

    The row's cells, volumes and fold tests come from :func:`_row_geometry`. A voxel inside one
    MRI voxel (most) adds to a running sum that is written out when the next voxel lies in
    another MRI voxel; the rest go to :func:`_straddler`. ``sparse``: a zero-valued voxel is
    left out unless it reaches an MRI voxel marked in ``exact`` (box-relative), and groups of
    :data:`_GROUP` voxels that are all zero and all ``quiet`` (their node cell reaches no
    ``exact`` MRI voxel; per voxel of the block's row) get no geometry at all.
    """
    if sparse:
        n_spans = _active_spans(values, k, jv, x0, nx, quiet, vox[6], spans)
    else:
        spans[0, 0], spans[1, 0], n_spans = 0, nx, 1
    c8, tv, cell_lo, cell_n, which, axis, _ = vox
    run_z, run_y, run_x = -1e300, 0.0, 0.0  # the MRI voxel the current run lies in
    run_v, run_w = 0.0, 0.0
    for s in range(n_spans):  # span by span: geo's column q is the span's voxel i0 + q
        i0, n = spans[0, s], spans[1, s] - spans[0, s]
        _row_geometry(slab, j, i0, n, pz, parity, geo)
        # a row crossing one z (or y) face along much of its length: every voxel's heights and
        # volume below on vector registers, and runs of such voxels summed like inside ones
        rax = _row_face_axis(geo, n)
        if rax >= 0:
            _row_heights(slab, j, i0, n, pz, rax, geo)
            _one_faces_row(geo, n)
        n1 = 0  # voxels crossing one face, batched
        pair_z, pair_y, pair_x = -1e300, 0.0, 0.0  # the lower MRI voxel of the current pair run
        pair_v, pair_w, pair_vu, pair_wu = 0.0, 0.0, 0.0, 0.0  # below the face, then above it
        for q in range(n):
            i = i0 + q
            flag = geo[3 * _TX + q]
            if flag > 0.0:  # inside one MRI voxel
                fz, fy, fx = geo[q], geo[_TX + q], geo[2 * _TX + q]
                v = float(values[k, jv, x0 + i])
                if sparse and v == 0.0 and not _marked(exact, fz, fy, fx, lo):
                    continue
                if fz != run_z or fy != run_y or fx != run_x:
                    if run_w > 0.0:
                        _flush(out, int(run_z) - lo[0], int(run_y) - lo[1], int(run_x) - lo[2],
                               run_v, run_w)  # fmt: skip
                    run_z, run_y, run_x = fz, fy, fx
                    run_v, run_w = 0.0, 0.0
                vol = geo[4 * _TX + q]
                run_v += v * vol
                run_w += vol
                continue
            if flag < 0.0:  # folded
                continue
            if geo[14 * _TX + q] > max_span:
                continue
            relevant = True
            for m in range(3):
                a = int(geo[m * _TX + q])
                cell_lo[m] = a
                cell_n[m] = int(geo[(11 + m) * _TX + q])
                relevant = relevant and a + cell_n[m] >= lo[m] and a < lo[m] + shape[m]
            if not relevant:
                continue
            if (
                sparse
                and max(cell_n[0], cell_n[1], cell_n[2]) == 1
                and values[k, jv, x0 + i] == 0
                and not _touches(exact, cell_lo, cell_n, lo)
            ):
                continue
            if cell_n[0] + cell_n[1] + cell_n[2] == 1:  # one face (most): batched, see _one_faces
                ax = 0 if cell_n[0] else (1 if cell_n[1] else 2)
                if ax == rax:  # computed for the whole row: a run of pairs of MRI voxels
                    fz, fy, fx = geo[q], geo[_TX + q], geo[2 * _TX + q]
                    if fz != pair_z or fy != pair_y or fx != pair_x:
                        if pair_w + pair_wu > 0.0:
                            _flush_pair(out, pair_z, pair_y, pair_x, lo, rax, pair_v, pair_w,
                                        pair_vu, pair_wu)  # fmt: skip
                        pair_z, pair_y, pair_x = fz, fy, fx
                        pair_v, pair_w, pair_vu, pair_wu = 0.0, 0.0, 0.0, 0.0
                    below = geo[(_ROW_H + 8) * _TX + q]
                    above = geo[4 * _TX + q] - below
                    v = float(values[k, jv, x0 + i])
                    pair_v += v * below
                    pair_w += below
                    pair_vu += v * above
                    pair_wu += above
                    continue
                plane = float(cell_lo[ax] + 1)
                for b in range(8):
                    geo[(_GEO_ROWS + b) * _TX + n1] = (
                        slab[_slab_at(ax, pz ^ (b >> 2), j + ((b >> 1) & 1), i + (b & 1))] - plane
                    )
                for t in range(6):
                    geo[(_GEO_ROWS + 8 + t) * _TX + n1] = geo[(5 + t) * _TX + q]
                which[n1] = q
                axis[n1] = ax
                n1 += 1
                continue
            for b in range(8):
                for m in range(3):
                    c8[b, m] = slab[_slab_at(m, pz ^ (b >> 2), j + ((b >> 1) & 1), i + (b & 1))]
            for t in range(6):
                tv[t] = geo[(5 + t) * _TX + q]
            v, vol = float(values[k, jv, x0 + i]), geo[4 * _TX + q]
            if cell_n[0] + cell_n[1] + cell_n[2] == 2 and max(cell_n[0], cell_n[1], cell_n[2]) == 1:
                # two faces (near an MRI voxel edge): not through the straddler call, which passes a
                # dozen arrays (their reference counts cost more than the closed forms)
                a = 0 if cell_n[0] else 1
                b = 2 if cell_n[2] else 1
                va, vb, vab = _two_faces(c8, tv, a, float(cell_lo[a] + 1), b, float(cell_lo[b] + 1))
                _four_cells(out, cell_lo, lo, a, b, v, vol, va, vb, vab)
                continue
            stack = _straddler(
                out, c8, v, vol, cell_lo, cell_n, lo, shape, kuhn, tv, scratch, stack
            )
        _one_faces(geo, n1)
        for b in range(n1):
            q = which[b]
            ax = axis[b]
            z, y, x = int(geo[q]) - lo[0], int(geo[_TX + q]) - lo[1], int(geo[2 * _TX + q]) - lo[2]
            v = float(values[k, jv, x0 + i0 + q])
            below = geo[(_GEO_ROWS + 14) * _TX + b]
            _add(out, z, y, x, v, below)
            _add(out, z + (ax == 0), y + (ax == 1), x + (ax == 2), v, geo[4 * _TX + q] - below)
        if pair_w + pair_wu > 0.0:
            _flush_pair(out, pair_z, pair_y, pair_x, lo, rax, pair_v, pair_w, pair_vu, pair_wu)
    if run_w > 0.0:
        _flush(out, int(run_z) - lo[0], int(run_y) - lo[1], int(run_x) - lo[2], run_v, run_w)
    return stack


@nb.njit(inline="always", nogil=True, cache=True)
def _marked(mask: Any, fz: float, fy: float, fx: float, lo: Any) -> bool:
    """Whether MRI voxel ``(fz, fy, fx)`` (absolute) is marked in box-relative ``mask``.

    Outside the box: marked (the voxel is then processed, and its sums dropped as ever).
    """
    z, y, x = int(fz) - lo[0], int(fy) - lo[1], int(fx) - lo[2]
    if 0 <= z < mask.shape[0] and 0 <= y < mask.shape[1] and 0 <= x < mask.shape[2]:
        return mask[z, y, x] != 0
    return True


@nb.njit(inline="always", nogil=True, cache=True)
def _touches(mask: Any, cell_lo: Any, cell_n: Any, lo: Any) -> bool:
    """Whether any MRI voxel ``cell_lo .. cell_lo + cell_n`` (absolute) is marked in ``mask``."""
    for dz in range(cell_n[0] + 1):
        for dy in range(cell_n[1] + 1):
            for dx in range(cell_n[2] + 1):
                if _marked(mask, cell_lo[0] + dz, cell_lo[1] + dy, cell_lo[2] + dx, lo):
                    return True
    return False


#: voxels along x that the sparse node kernel keeps or leaves out together
_GROUP = 8


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _active_spans(
    values: Any, k: int, jv: int, x0: int, nx: int, quiet: Any, flags: Any, spans: Any
) -> int:
    """Spans (``spans[0, s] .. spans[1, s]``) of the row's groups that need their geometry.

    A group needs it where a voxel is nonzero or not ``quiet``. Returns the number of spans.
    One flag byte a voxel (vectorised), then a group of 8 read as one word (``flags``: uint8
    scratch, a multiple of 8 long).
    """
    row = values[k, jv]
    u0 = np.uint64(x0)
    for i in range(np.uint64(nx)):  # unsigned indices: no wrap-around test, vectorised
        flags[i] = (row[u0 + i] != 0) | (quiet[u0 + i] == 0)
    n_groups = (nx + _GROUP - 1) // _GROUP
    for i in range(nx, n_groups * _GROUP):
        flags[i] = 0
    words = flags.view(np.uint64)
    n = 0
    for g in range(n_groups):
        if words[g] != 0:
            g0, g1 = g * _GROUP, min(g * _GROUP + _GROUP, nx)
            if n > 0 and spans[1, n - 1] == g0:
                spans[1, n - 1] = g1
            else:
                spans[0, n] = g0
                spans[1, n] = g1
                n += 1
    return n


@nb.njit(inline="always", nogil=True, cache=True)
def _flush_pair(
    out: Any, fz: float, fy: float, fx: float, lo: Any, ax: int, v: float, w: float, vu: float,
    wu: float,
) -> None:  # fmt: skip
    """Add a run's sums below (``v, w``) and above (``vu, wu``) a face along ``ax``.

    Into its MRI voxel ``(fz, fy, fx)`` (absolute index) and the next one along ``ax``.
    """
    z, y, x = int(fz) - lo[0], int(fy) - lo[1], int(fx) - lo[2]
    _flush(out, z, y, x, v, w)
    _flush(out, z + (ax == 0), y + (ax == 1), x, vu, wu)


def _scratch() -> tuple[Any, ...]:
    """Scratch of :func:`_straddler`: a tetrahedron, a piece, cut points, distances, planes, sums."""
    return (
        np.empty((4, 3)), np.empty((4, 3)), np.empty((8, 3)), np.empty(8), np.empty(3),
        np.empty((2, 4)),
    )  # fmt: skip


@nb.njit(nogil=True, cache=True)
def general_kernel(
    values: Any,
    corners: Any,
    lo: Any,
    shape: Any,
    max_span: float,
    kuhn: Any,
    parity: Any,
    scratch: Any,
) -> Any:
    """(2, *shape) value-weighted volume and volume of a block's voxels in the MRI box ``lo``.

    ``corners`` (3, nz+1, ny+1, nx+1): MRI index positions of the voxel corners (NaN where the
    chain does not map). Voxels with an unmapped corner, folded (tetrahedra of mixed
    orientation) or spanning more than ``max_span`` MRI voxels are left out. Voxel by voxel:
    for blocks with unmapped corners; :func:`general_kernel_nodes` does the rest.
    """
    out = np.zeros((2, shape[0], shape[1], shape[2]))
    stack = np.empty((_STACK, 4, 3))
    c8 = np.empty((8, 3))
    cell_lo = np.empty(3, np.int64)
    cell_n = np.empty(3, np.int64)  # how many MRI voxel faces the voxel's box crosses, per axis
    e8, tv = np.empty((8, 3)), np.empty(6)
    nz, ny, nx = values.shape
    for k in range(nz):
        for j in range(ny):
            for i in range(nx):
                ok = True
                for b in range(8):
                    for m in range(3):
                        c = corners[m, k + (b >> 2), j + ((b >> 1) & 1), i + (b & 1)]
                        c8[b, m] = c
                        if not math.isfinite(c):
                            ok = False
                if not ok:
                    continue
                span = 0.0
                same = True
                relevant = True
                for m in range(3):
                    mn, mx = c8[0, m], c8[0, m]
                    for b in range(1, 8):
                        mn = min(mn, c8[b, m])
                        mx = max(mx, c8[b, m])
                    span = max(span, mx - mn)
                    a = int(math.floor(mn))
                    e = max(int(math.ceil(mx)) - 1, a)
                    cell_lo[m] = a
                    cell_n[m] = e - a
                    same = same and a == e
                    relevant = relevant and e >= lo[m] and a < lo[m] + shape[m]
                if span > max_span or not relevant:
                    continue
                vol, folded = _kuhn_volume(c8, parity, e8, tv)
                if folded:
                    continue
                v = float(values[k, j, i])
                if same:
                    _add(out, cell_lo[0] - lo[0], cell_lo[1] - lo[1], cell_lo[2] - lo[2], v, vol)
                    continue
                stack = _straddler(
                    out, c8, v, vol, cell_lo, cell_n, lo, shape, kuhn, tv, scratch, stack
                )
    return out


@nb.njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _lines_along_x(nodes: Any, xi: Any, xt: Any, ex: Any) -> None:
    """``ex`` (3, nzn, nyn, nx + 1): every node row of ``nodes`` interpolated to the corners."""
    for m in range(nodes.shape[0]):
        for a in range(nodes.shape[1]):
            for b in range(nodes.shape[2]):
                for i in range(xt.shape[0]):
                    t = xt[i]
                    ex[m, a, b, i] = (1.0 - t) * nodes[m, a, b, xi[0, i]] + t * nodes[
                        m, a, b, xi[1, i]
                    ]


@nb.njit(inline="always", nogil=True, cache=True, fastmath=True, boundscheck=False)
def _lerp(dst: Any, d0: int, a: Any, b: Any, s0: int, t: float, n: int) -> None:
    """``dst[d0:d0 + n] = (1 - t) a[s0:s0 + n] + t b[s0:s0 + n]``, on unsigned indices (vectorised)."""
    du, su = np.uint64(d0), np.uint64(s0)
    for i in range(np.uint64(n)):
        dst[du + i] = (1.0 - t) * a[su + i] + t * b[su + i]


@nb.njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _corner_plane(
    ex: Any, z0: int, z1: int, tz: float, yi: Any, yt: Any, y0: int, ny: int, x0: int, nx: int,
    ez: Any, slab: Any, p: int,
) -> None:  # fmt: skip
    """Corner rows ``y0 .. y0 + ny`` (columns ``x0 .. x0 + nx``) of a plane into slab half ``p``.

    From the node rows ``ex`` interpolated along x: along z into ``ez`` (only the node rows the
    tile's corners use), then along y.
    """
    first, last = yi[0, y0], yi[1, y0 + ny]
    for m in range(ex.shape[0]):
        for b in range(first, last + 1):
            _lerp(ez[m, b], 0, ex[m, z0, b], ex[m, z1, b], x0, tz, nx + 1)
        for jj in range(ny + 1):
            ya, yb, ty = yi[0, y0 + jj], yi[1, y0 + jj], yt[y0 + jj]
            _lerp(slab, _slab_at(m, p, jj, 0), ez[m, ya], ez[m, yb], 0, ty, nx + 1)


@nb.njit(nogil=True, cache=True)
def general_kernel_nodes(
    values: Any,
    nodes: Any,
    zi: Any,
    zt: Any,
    yi: Any,
    yt: Any,
    xi: Any,
    xt: Any,
    lo: Any,
    shape: Any,
    max_span: float,
    kuhn: Any,
    parity: Any,
    scratch: Any,
    sparse: bool,
    exact: Any,
    quiet: Any,
) -> Any:
    """:func:`general_kernel` with the corners interpolated from ``nodes``, tile by tile.

    ``nodes`` (3, nzn, nyn, nxn): the exactly mapped nodes around the block (all finite);
    per axis, ``*i`` (2, n + 1) the left and right node of every corner and ``*t`` (n + 1) the
    right node's weight (trilinear, as :func:`bridge_xr.extract.footprint.block_corners`).
    The node rows are interpolated along x once; the block then runs in tiles of
    ``_TY x _TX`` voxels, plane by plane: each plane of a tile's corners (z, then y) goes into
    one half of a two-plane slab, the other half holding the plane below. No corner array of
    the block is ever made. ``sparse``, ``exact``: see :func:`_clean_row`;
    ``quiet`` (node cells along z, along y, voxels along x): whether the voxel's node cell
    reaches no ``exact`` MRI voxel.
    """
    out = np.zeros((2, shape[0], shape[1], shape[2]))
    stack = np.empty((_STACK, 4, 3))
    nz, ny, nx = values.shape
    geo = np.empty((_ROW_H + 9) * _TX)
    slab = np.empty(6 * _SP)
    ex = np.empty((3, nodes.shape[1], nodes.shape[2], nx + 1))
    ez = np.empty((3, nodes.shape[2], _TX + 1))
    _lines_along_x(nodes, xi, xt, ex)
    vox = (
        np.empty((8, 3)),
        np.empty(6),
        np.empty(3, np.int64),
        np.empty(3, np.int64),
        np.empty(_TX, np.int64),
        np.empty(_TX, np.int64),
        np.empty(_TX, np.uint8),  # flags of _active_spans (_TX: a multiple of _GROUP = 8)
    )
    spans = np.empty((2, _TX // _GROUP + 1), np.int64)
    for y0 in range(0, ny, _TY):
        ty = min(_TY, ny - y0)
        for x0 in range(0, nx, _TX):
            tx = min(_TX, nx - x0)
            _corner_plane(ex, zi[0, 0], zi[1, 0], zt[0], yi, yt, y0, ty, x0, tx, ez, slab, 0)
            for k in range(nz):
                pz = k & 1  # the slab half holding plane k; plane k + 1 goes into the other
                _corner_plane(ex, zi[0, k + 1], zi[1, k + 1], zt[k + 1], yi, yt, y0, ty, x0, tx,
                              ez, slab, 1 - pz)  # fmt: skip
                for j in range(ty):
                    qrow = quiet[min(zi[0, k], quiet.shape[0] - 1),
                                 min(yi[0, y0 + j], quiet.shape[1] - 1)]  # fmt: skip
                    stack = _clean_row(
                        values, k, y0 + j, x0, tx, slab, j, pz, geo, out, lo, shape, max_span,
                        kuhn, parity, scratch, vox, stack, sparse, exact, qrow, spans,
                    )  # fmt: skip
    return out


def general_block(
    values: np.ndarray, corners: np.ndarray, bbox_lo: np.ndarray, bbox_shape: tuple[int, ...]
) -> np.ndarray:
    """Contribution (value-weighted volume, volume) of one block to the MRI bounding box.

    ``corners`` (3, nz+1, ny+1, nx+1): the MRI index positions of the block's voxel corners.
    A voxel whose tetrahedra disagree in orientation is folded by the warp, and one stretched
    over more than :data:`MAX_SPAN` MRI voxels lies where the (inverse) warp is meaningless:
    both are left out.
    """
    if values.dtype == np.bool_:
        values = values.view(np.uint8)
    corners = np.ascontiguousarray(corners, dtype=np.float64)
    if np.isfinite(corners).all():  # every corner a node: the fast kernel, weights 0
        nodes = [np.arange(n + 1) for n in values.shape]
        shape = values.shape
        return general_block_nodes(values, nodes, corners, (0, 0, 0), shape, bbox_lo, bbox_shape)
    return general_kernel(
        values,
        corners,
        np.asarray(bbox_lo, dtype=np.int64),
        np.asarray(bbox_shape, dtype=np.int64),
        MAX_SPAN,
        _KUHN_CORNER.astype(np.int64),
        _PARITY.astype(np.float64),
        _scratch(),
    )


def general_block_nodes(
    values: np.ndarray,
    node_idx: list[np.ndarray],
    node_val: np.ndarray,
    lo: tuple[int, ...],
    hi: tuple[int, ...],
    bbox_lo: np.ndarray,
    bbox_shape: tuple[int, ...],
    exact: np.ndarray | tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """:func:`general_block` of block ``lo:hi`` straight from the mapped nodes.

    The corners are interpolated inside the kernel, one row at a time, instead of as a
    (3, nz+1, ny+1, nx+1) float64 array (24 bytes a voxel written and read back). Where a
    node near the block is unmapped (NaN), the corner array is made after all (NaN marks the
    voxels it touches) and :func:`general_block` runs.

    ``exact`` (bool, ``bbox_shape``; or :func:`sparse_masks` of it and ``node_val``): sparse.
    The value-weighted sums stay exact everywhere (a zero voxel adds nothing to them), the
    volumes only in the MRI voxels marked: a zero-valued voxel reaching no marked MRI voxel is
    left out, most of them without their geometry (see :func:`_clean_row`).
    """
    from bridge_xr.extract.footprint import _interp, block_corners

    axes, used = [], []
    for a in range(3):
        pos = np.arange(lo[a], hi[a] + 1)
        k, t = _interp(node_idx[a], pos)
        k1 = np.minimum(k + 1, len(node_idx[a]) - 1)
        first = int(k.min())
        used.append(slice(first, int(k1.max()) + 1))
        axes.append((k - first, k1 - first, t))
    sub = node_val[:, used[0], used[1], used[2]]
    if not np.isfinite(sub).all():
        return general_block(values, block_corners(node_idx, node_val, lo, hi), bbox_lo, bbox_shape)
    if values.dtype == np.bool_:
        values = values.view(np.uint8)
    (zk, zk1, zt), (yk, yk1, yt), (xk, xk1, xt) = axes
    if exact is None:
        sparse, mark, quiet = False, _NONE, _NONE
    else:
        sparse = True
        if not isinstance(exact, tuple):
            exact = sparse_masks(exact, node_val, np.asarray(bbox_lo, int))[:2]
        mark, cells = exact
        # the node cells the block's voxels lie in (the last node of an axis ends the last cell)
        cz, cy = (slice(u.start, max(u.stop - 1, u.start + 1)) for u in used[:2])
        x_cell = np.minimum(xk[:-1] + used[2].start, cells.shape[2] - 1)
        quiet = np.ascontiguousarray(cells[cz, cy][:, :, x_cell])
    return general_kernel_nodes(
        values,
        np.ascontiguousarray(sub, dtype=np.float64),
        np.stack([zk, zk1]).astype(np.int64),
        np.asarray(zt, np.float64),
        np.stack([yk, yk1]).astype(np.int64),
        np.asarray(yt, np.float64),
        np.stack([xk, xk1]).astype(np.int64),
        np.asarray(xt, np.float64),
        np.asarray(bbox_lo, dtype=np.int64),
        np.asarray(bbox_shape, dtype=np.int64),
        MAX_SPAN,
        _KUHN_CORNER.astype(np.int64),
        _PARITY.astype(np.float64),
        _scratch(),
        sparse,
        mark,
        quiet,
    )


_NONE = np.zeros((1, 1, 1), np.uint8)


def sparse_masks(
    exact: np.ndarray, nodes: np.ndarray, box_lo: np.ndarray, orient: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sparse node kernel's masks for a block: ``exact``, quiet cells, unsure.

    ``exact`` and the box: the block's MRI voxels (``box_lo``, shape). A node cell of
    ``nodes`` is quiet where no MRI voxel from the floor of its nodes' lowest index to the
    floor of their highest is marked: no voxel inside it (its corners interpolate the cell's
    nodes) reaches one. Unsure (bool, the box): the MRI voxels that node cells not certified
    free of folds can reach (:func:`_cells`; ``orient`` the map's orientation, 0: none
    certified).
    """
    mark = np.ascontiguousarray(exact, dtype=np.uint8)
    shape = np.asarray(mark.shape)
    table = np.zeros(tuple(shape + 1), np.int64)  # summed-area table: marked voxels in a box
    table[1:, 1:, 1:] = mark.astype(np.int64).cumsum(0).cumsum(1).cumsum(2)
    cells = tuple(max(n - 1, 1) for n in nodes.shape[1:])
    quiet, unsure = np.zeros(cells, np.uint8), np.zeros(mark.shape, np.uint8)
    if min(nodes.shape[1:]) < 2:  # no cells: nothing quiet, nothing certified
        unsure[...] = 1
    else:
        _cells(np.ascontiguousarray(nodes, dtype=np.float64), float(orient), MAX_SPAN, table,
               np.asarray(box_lo, np.int64), quiet, unsure)  # fmt: skip
    return mark, quiet, unsure.view(np.bool_)


@nb.njit(nogil=True, cache=True)
def _cells(
    nodes: Any, orient: float, max_span: float, table: Any, box_lo: Any, quiet: Any, unsure: Any
) -> None:
    """Per node cell: quiet (see :func:`sparse_masks`), and whether certified free of folds.

    A voxel's edge along an axis is a convex combination of its node cell's four edges along
    it (over the number of voxels), and a Kuhn tetrahedron's orientation is the determinant
    of one edge per axis: multilinear, so over the cell it stays within the bound from each
    edge set's mean and largest deviation from it (Hadamard). Certified: finite nodes, every
    such determinant of sign ``orient``, and the cell no wider than ``max_span`` MRI voxels
    (no voxel of it left out). An uncertified cell marks the MRI voxels its nodes' box spans
    in ``unsure`` (the box's).
    """
    nz, ny, nx = table.shape[0] - 1, table.shape[1] - 1, table.shape[2] - 1
    mean = np.empty((3, 3))
    dev = np.empty(3)
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    p = np.empty((8, 3))  # the cell's nodes, bit order (z, y, x)
    edge = np.empty((3, 4, 3))  # its four edges along each axis
    for a in range(nodes.shape[1] - 1):
        for b in range(nodes.shape[2] - 1):
            for c in range(nodes.shape[3] - 1):
                finite, wide = True, False
                for m in range(3):
                    mn, mx = np.inf, -np.inf
                    for d in range(8):
                        v = nodes[m, a + (d >> 2), b + ((d >> 1) & 1), c + (d & 1)]
                        p[d, m] = v
                        finite = finite and np.isfinite(v)
                        mn, mx = min(mn, v), max(mx, v)
                    wide = wide or mx - mn > max_span
                    lo[m] = int(np.floor(mn - 1e-9)) - box_lo[m]
                    hi[m] = int(np.floor(mx + 1e-9)) - box_lo[m]
                if not finite:
                    lo[0], lo[1], lo[2], hi[0], hi[1], hi[2] = 0, 0, 0, nz - 1, ny - 1, nx - 1
                # quiet: no marked MRI voxel from lo to hi (summed-area table)
                z0, y0, x0 = max(lo[0], 0), max(lo[1], 0), max(lo[2], 0)
                z1, y1, x1 = min(hi[0] + 1, nz), min(hi[1] + 1, ny), min(hi[2] + 1, nx)
                marked = 0
                if z1 > z0 and y1 > y0 and x1 > x0:
                    marked = (table[z1, y1, x1] - table[z0, y1, x1] - table[z1, y0, x1]
                              - table[z1, y1, x0] + table[z0, y0, x1] + table[z0, y1, x0]
                              + table[z1, y0, x0] - table[z0, y0, x0])  # fmt: skip
                quiet[a, b, c] = marked == 0 and finite
                ok = finite and not wide and orient != 0.0
                if ok:
                    for e in range(4):  # node d and d + bit: z (bit 4), y (2), x (1)
                        dz = e
                        dy = (e >> 1) * 4 + (e & 1)
                        dx = e * 2
                        for m in range(3):
                            edge[0, e, m] = p[dz + 4, m] - p[dz, m]
                            edge[1, e, m] = p[dy + 2, m] - p[dy, m]
                            edge[2, e, m] = p[dx + 1, m] - p[dx, m]
                    for axis in range(3):  # each axis's four edges: mean, largest deviation
                        for m in range(3):
                            mean[axis, m] = 0.25 * (
                                edge[axis, 0, m] + edge[axis, 1, m] + edge[axis, 2, m]
                                + edge[axis, 3, m]
                            )  # fmt: skip
                        dev[axis] = 0.0
                        for e in range(4):
                            r = 0.0
                            for m in range(3):
                                t = edge[axis, e, m] - mean[axis, m]
                                r += t * t
                            dev[axis] = max(dev[axis], r)
                        dev[axis] = math.sqrt(dev[axis])
                    n0 = math.sqrt(mean[0, 0] ** 2 + mean[0, 1] ** 2 + mean[0, 2] ** 2)
                    n1 = math.sqrt(mean[1, 0] ** 2 + mean[1, 1] ** 2 + mean[1, 2] ** 2)
                    n2 = math.sqrt(mean[2, 0] ** 2 + mean[2, 1] ** 2 + mean[2, 2] ** 2)
                    det = (
                        mean[0, 0] * (mean[1, 1] * mean[2, 2] - mean[1, 2] * mean[2, 1])
                        - mean[0, 1] * (mean[1, 0] * mean[2, 2] - mean[1, 2] * mean[2, 0])
                        + mean[0, 2] * (mean[1, 0] * mean[2, 1] - mean[1, 1] * mean[2, 0])
                    )
                    bound = (dev[0] * (n1 + dev[1]) * (n2 + dev[2]) + n0 * dev[1] * (n2 + dev[2])
                             + n0 * n1 * dev[2])  # fmt: skip
                    ok = orient * det > bound * (1.0 + 1e-9) + 1e-300
                if not ok:
                    for z in range(max(lo[0], 0), min(hi[0] + 1, nz)):
                        for y in range(max(lo[1], 0), min(hi[1] + 1, ny)):
                            for x in range(max(lo[2], 0), min(hi[2] + 1, nx)):
                                unsure[z, y, x] = 1
