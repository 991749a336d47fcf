"""Exact footprint integration for general chains: Kuhn tetrahedra clipped against MRI voxels.

Every microscopy voxel is cut into the 6 tetrahedra of the Kuhn triangulation, mapped through
the chain at its corners and clipped exactly against the MRI voxel faces. Compiled (numba), one
pass over a block's voxels without temporaries: a voxel inside one MRI voxel adds its volume
there directly (most voxels: an MRI voxel is ~20 microscopy voxels wide); one whose box crosses
a single MRI voxel face splits each tetrahedron's volume at that face in closed form; the rest
(near MRI voxel edges and corners) split their tetrahedra on a small stack of pieces, the lowest
crossing face first, and every piece adds its volume to the MRI voxel holding its centroid.
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
def _volume_below(tet: Any, axis: int, plane: float, vol: float, w: Any, d: Any) -> float:
    """Volume of the part of ``tet`` (volume ``vol``) below ``x[axis] = plane``.

    One vertex alone on its side: that corner's small tetrahedron is the whole one scaled along
    its three edges (volume ``vol * t0 * t1 * t2``); two and two: the lower prism's three
    tetrahedra.
    """
    nb_ = 0
    for m in range(4):
        if tet[m, axis] < plane:
            nb_ += 1
    if nb_ == 0:
        return 0.0
    if nb_ == 4:
        return vol
    if nb_ != 2:
        lone = -1
        for m in range(4):
            if (tet[m, axis] < plane) == (nb_ == 1):
                lone = m
        ds = tet[lone, axis] - plane
        frac = 1.0
        for m in range(4):
            if m != lone:
                frac *= ds / (ds - (tet[m, axis] - plane))
        return vol * frac if nb_ == 1 else vol * (1.0 - frac)
    _order_and_cut(tet, axis, plane, w, d)
    # the lower prism (p1, i11, i12; p2, i21, i22) as in _prism
    return (abs(_det(w, 0, 4, 5, 1)) + abs(_det(w, 4, 5, 1, 6)) + abs(_det(w, 5, 1, 6, 7))) / 6.0


@nb.njit(inline="always", nogil=True, cache=True)
def _pieces_below(tet: Any, axis: int, plane: float, w: Any, d: Any, buf: Any) -> int:
    """Write the tetrahedra tiling the part of ``tet`` below the plane into ``buf`` (<= 3)."""
    n_below = 0
    for m in range(4):
        if tet[m, axis] < plane:
            n_below += 1
    if n_below == 0:
        return 0
    if n_below == 4:
        buf[0] = tet
        return 1
    _order_and_cut(tet, axis, plane, w, d)
    if n_below == 2:  # the lower prism
        return _prism(buf, 0, w, 0, 4, 5, 1, 6, 7)
    if n_below == 1:  # the lone corner's small tetrahedron
        return _put(buf, 0, w, 0, 4, 5, 6)
    return _prism(buf, 0, w, 4, 5, 6, 0, 1, 2)  # three below: cut triangle to them


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


@nb.njit(nogil=True, cache=True)
def _two_faces(
    c8: Any,
    kuhn: Any,
    tv: Any,
    a: int,
    pa: float,
    b: int,
    pb: float,
    tet: Any,
    buf: Any,
    w: Any,
    d: Any,
) -> tuple[float, float, float]:
    """Volumes of a voxel below face ``a``, below face ``b`` and below both (closed forms)."""
    va, vb, vab = 0.0, 0.0, 0.0
    for t in range(6):
        _load_tet(c8, kuhn, t, tet)
        va += _volume_below(tet, a, pa, tv[t], w, d)
        vb += _volume_below(tet, b, pb, tv[t], w, d)
        for n in range(_pieces_below(tet, a, pa, w, d, buf)):
            piece = buf[n]
            vab += _volume_below(piece, b, pb, abs(_det(piece, 0, 1, 2, 3)) / 6.0, w, d)
    return va, vb, vab


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


@nb.njit(nogil=True, cache=True)
def general_kernel(
    values: Any, corners: Any, lo: Any, shape: Any, max_span: float, kuhn: Any, parity: Any
) -> Any:
    """(2, *shape) value-weighted volume and volume of a block's voxels in the MRI box ``lo``.

    ``corners`` (3, nz+1, ny+1, nx+1): MRI index positions of the voxel corners (NaN where the
    chain does not map). Voxels with an unmapped corner, folded (tetrahedra of mixed
    orientation) or spanning more than ``max_span`` MRI voxels are left out.
    """
    out = np.zeros((2, shape[0], shape[1], shape[2]))
    stack = np.empty((_STACK, 4, 3))
    c8 = np.empty((8, 3))
    tet = np.empty((4, 3))
    piece, w, d = np.empty((4, 3)), np.empty((8, 3)), np.empty(8)
    cell_lo = np.empty(3, np.int64)
    cell_n = np.empty(3, np.int64)  # how many MRI voxel faces the voxel's box crosses, per axis
    buf = np.empty((3, 4, 3))
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
                    z, y, x = cell_lo[0] - lo[0], cell_lo[1] - lo[1], cell_lo[2] - lo[2]
                    _add(out, z, y, x, v, vol)
                    continue
                z, y, x = cell_lo[0] - lo[0], cell_lo[1] - lo[1], cell_lo[2] - lo[2]
                if cell_n[0] + cell_n[1] + cell_n[2] == 1:  # one face (most straddlers)
                    ax = 0 if cell_n[0] else (1 if cell_n[1] else 2)
                    plane = float(cell_lo[ax] + 1)
                    below = 0.0
                    for t in range(6):
                        _load_tet(c8, kuhn, t, tet)
                        below += _volume_below(tet, ax, plane, tv[t], w, d)
                    _add(out, z, y, x, v, below)
                    _add(out, z + (ax == 0), y + (ax == 1), x + (ax == 2), v, vol - below)
                    continue
                if (
                    cell_n[0] + cell_n[1] + cell_n[2] == 2
                    and max(cell_n[0], cell_n[1], cell_n[2]) == 1
                ):
                    # two faces (near an MRI voxel edge): inclusion-exclusion of closed forms
                    a = 0 if cell_n[0] else 1
                    b = 2 if cell_n[2] else 1
                    va, vb, vab = _two_faces(
                        c8,
                        kuhn,
                        tv,
                        a,
                        float(cell_lo[a] + 1),
                        b,
                        float(cell_lo[b] + 1),
                        tet,
                        buf,
                        w,
                        d,
                    )
                    za, ya, xa = z + (a == 0), y + (a == 1), x + (a == 2)  # across face a
                    _add(out, z, y, x, v, vab)
                    _add(out, z + (b == 0), y + (b == 1), x + (b == 2), v, va - vab)
                    _add(out, za, ya, xa, v, vb - vab)
                    _add(out, za + (b == 0), ya + (b == 1), xa + (b == 2), v, vol - va - vb + vab)
                    continue
                for t in range(6):
                    _load_tet(c8, kuhn, t, tet)
                    stack = tet_into_cells(tet, v, lo, shape, out, stack, piece, w, d)
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
    return general_kernel(
        values,
        np.ascontiguousarray(corners, dtype=np.float64),
        np.asarray(bbox_lo, dtype=np.int64),
        np.asarray(bbox_shape, dtype=np.int64),
        MAX_SPAN,
        _KUHN_CORNER.astype(np.int64),
        _PARITY.astype(np.float64),
    )
