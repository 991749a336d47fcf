"""Compiled sampling kernels: map a block's voxel centres and interpolate them in one pass.

``scipy.ndimage.map_coordinates`` needs the mapped coordinates of every voxel as three float64
arrays (24 bytes a voxel, written then read again), converts the moving region to float and
holds the GIL; these kernels compute each voxel's position where it is needed (from an affine,
or from a TPS's exact coarse nodes by separable trilinear interpolation), sample the moving
sub-volume in its own dtype (nearest or trilinear, edge values replicated like scipy's
``mode="nearest"``), round and clip to the output type and write the voxel, with only one
row's positions held at a time and without the GIL (dask's threads run them in parallel).

Conventions, shared with :mod:`bridge_xr.resampling.sampler`: positions are voxel indices of
``sub`` (the moving region read for the block); ``params`` (11,) float64 = lower z, y, x, upper
z, y, x (where the moving *image* is, in the same indices: a voxel centre outside gets ``fill``,
and so does a NaN position), ``order`` (0 rounds like scipy, ``floor(x + 0.5)``; 1 trilinear),
``is_int`` (round half to even, clip to ``[lo_clip, hi_clip]``), ``lo_clip``, ``hi_clip``,
``fill`` (see :func:`params`).
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np

from bridge_xr._jit import njit_noalias


@nb.njit(inline="always", nogil=True, cache=True, boundscheck=False)
def _blend(
    v000: float, v001: float, v010: float, v011: float, v100: float, v101: float, v110: float,
    v111: float, tz: float, ty: float, tx: float,
) -> float:  # fmt: skip
    """Trilinear blend of 8 corner values (``v<z><y><x>``): along x, then y, then z."""
    c00 = v000 + (v001 - v000) * tx
    c01 = v010 + (v011 - v010) * tx
    c10 = v100 + (v101 - v100) * tx
    c11 = v110 + (v111 - v110) * tx
    c0 = c00 + (c01 - c00) * ty
    c1 = c10 + (c11 - c10) * ty
    return c0 + (c1 - c0) * tz


@nb.njit(inline="always", nogil=True, cache=True, boundscheck=False)
def _lerp(
    sub: Any, k0: int, k1: int, j0: int, j1: int, i0: int, i1: int, tz: float, ty: float, tx: float
) -> float:
    """Trilinear interpolation between the 8 voxels ``(k0|k1, j0|j1, i0|i1)`` of ``sub``."""
    v000, v001 = float(sub[k0, j0, i0]), float(sub[k0, j0, i1])
    v010, v011 = float(sub[k0, j1, i0]), float(sub[k0, j1, i1])
    v100, v101 = float(sub[k1, j0, i0]), float(sub[k1, j0, i1])
    v110, v111 = float(sub[k1, j1, i0]), float(sub[k1, j1, i1])
    return _blend(v000, v001, v010, v011, v100, v101, v110, v111, tz, ty, tx)


@nb.njit(inline="always", nogil=True, cache=True, boundscheck=False)
def _to_output(v: float, b: Any) -> float:
    """Round half to even and clip to the integer output type (``b[10]``), else unchanged."""
    if b[10]:
        v = np.rint(v)
        v = b[11] if v < b[11] else (b[12] if v > b[12] else v)
    return v


@nb.njit(inline="always", nogil=True, cache=True, boundscheck=False)
def _sample(
    sub: Any,
    z: float,
    y: float,
    x: float,
    b: Any,
) -> float:
    # b: a tuple (lower z, y, x, upper z, y, x, nz, ny, nx) of scalars, held in registers (an
    # array would be re-read for every voxel: the compiler cannot rule out that `out` aliases it)
    # written as `not (inside)` so that NaN positions (no inverse) count as outside
    if not (z >= b[0] and z <= b[3] and y >= b[1] and y <= b[4] and x >= b[2] and x <= b[5]):
        return b[13]
    nz, ny, nx = b[6], b[7], b[8]
    if b[9] == 0:
        k = min(max(math.floor(z + 0.5), 0), nz - 1)
        j = min(max(math.floor(y + 0.5), 0), ny - 1)
        i = min(max(math.floor(x + 0.5), 0), nx - 1)
        return _to_output(float(sub[k, j, i]), b)
    # positions are > -1 here (bounds start at -0.5 or above): int(p + 1) - 1 is the floor
    k0, j0, i0 = int(z + 1.0) - 1, int(y + 1.0) - 1, int(x + 1.0) - 1
    tz, ty, tx = z - k0, y - j0, x - i0
    k1, j1, i1 = min(k0 + 1, nz - 1), min(j0 + 1, ny - 1), min(i0 + 1, nx - 1)
    k0, j0, i0 = max(k0, 0), max(j0, 0), max(i0, 0)
    return _to_output(_lerp(sub, k0, k1, j0, j1, i0, i1, tz, ty, tx), b)


@nb.njit(inline="always", nogil=True, cache=True, boundscheck=False)
def _scalars(sub: Any, p: Any) -> Any:
    nz, ny, nx = sub.shape
    return (
        p[0],
        p[1],
        p[2],
        p[3],
        p[4],
        p[5],
        nz,
        ny,
        nx,
        int(p[6]),
        p[7] != 0.0,
        p[8],
        p[9],
        p[10],
    )


@nb.njit(inline="always", nogil=True, cache=True, boundscheck=False)
def _strides(sub: Any) -> tuple[Any, Any]:
    """Element strides of a C-contiguous 3-D ``sub`` along z and y, unsigned (no wraparound)."""
    s1 = np.uint64(sub.shape[2])
    return np.uint64(sub.shape[1]) * s1, s1


@nb.njit(inline="always", nogil=True, cache=True, boundscheck=False)
def _node_position(row: Any, m: int, w: float) -> tuple[float, float, float]:
    """The position between nodes ``m`` and ``m + 1`` of a (3, n) row of nodes, at ``w``."""
    return (
        row[0, m] + (row[0, m + 1] - row[0, m]) * w,
        row[1, m] + (row[1, m + 1] - row[1, m]) * w,
        row[2, m] + (row[2, m + 1] - row[2, m]) * w,
    )


@nb.njit(inline="always", nogil=True, cache=True, boundscheck=False)
def _locate_row(
    affine: bool, base: Any, step: Any, pz: Any, py: Any, px: Any, b: Any, s0: Any, s1: Any,
    idx: Any, fz: Any, fy: Any, fx: Any, edge: Any,
) -> int:  # fmt: skip
    """Flat index below each voxel's position and its fractions; returns the edge count.

    Positions: ``base + i * step`` (``affine``: computed here, not written to a row and read
    back, 0.5-1.5 ns a voxel less), else ``(pz[i], py[i], px[i])`` (a TPS row's positions,
    interpolated from its nodes in a loop of their own, which vectorises: 2 ns a voxel less).
    Edge: not all 8 neighbours inside ``sub``, or a NaN position. Such a voxel gets the safe
    neighbourhood of voxel 0 (the gather loop reads it unconditionally) and is redone by
    :func:`_sample`. Positions inside are >= 0, so ``int`` is the floor.
    """
    top_z, top_y, top_x = b[6] - 2.0, b[7] - 2.0, b[8] - 2.0
    bz, by, bx = base
    dz, dy, dx = step
    n_edge = 0
    for i in range(idx.shape[0]):
        if affine:
            z, y, x = bz + dz * i, by + dy * i, bx + dx * i
        else:
            z, y, x = pz[i], py[i], px[i]
        inside = 0.0 <= z <= top_z and 0.0 <= y <= top_y and 0.0 <= x <= top_x
        edge[i] = not inside
        n_edge += not inside
        if not inside:
            z, y, x = 0.0, 0.0, 0.0
        k0, j0, i0 = int(z), int(y), int(x)
        fz[i] = z - k0
        fy[i] = y - j0
        fx[i] = x - i0
        idx[i] = np.uint64(k0) * s0 + np.uint64(j0) * s1 + np.uint64(i0)
    return n_edge


@nb.njit(inline="always", nogil=True, cache=True, boundscheck=False)
def _gather_row(
    flat: Any, idx: Any, fz: Any, fy: Any, fx: Any, row: Any, s0: Any, s1: Any, b: Any
) -> None:
    """``row[i]`` = trilinear at flat index ``idx[i]`` and fractions, for every ``i``.

    One branch-free loop over the whole row (the form LLVM keeps scalar but unrolls and
    schedules well once the arrays are ``noalias``; on this hardware its AVX-512 gathers of
    16-bit voxels are slower). The same :func:`_blend` as :func:`_lerp`.
    """
    one = np.uint64(1)
    for i in range(row.shape[0]):
        p = idx[i]
        q = p + s0
        v000, v001 = float(flat[p]), float(flat[p + one])
        v010, v011 = float(flat[p + s1]), float(flat[p + s1 + one])
        v100, v101 = float(flat[q]), float(flat[q + one])
        v110, v111 = float(flat[q + s1]), float(flat[q + s1 + one])
        v = _blend(v000, v001, v010, v011, v100, v101, v110, v111, fz[i], fy[i], fx[i])
        row[i] = _to_output(v, b)


@njit_noalias(nogil=True, cache=True, boundscheck=False)
def sample_affine(
    sub: Any,
    h: Any,
    out: Any,
    params: Any,
) -> None:
    """``out[k, j, i]`` = ``sub`` at ``h @ (k, j, i, 1)`` (h: 3x4, output index -> sub index).

    Order 1 in three passes a row: each voxel's position, flat index and fractions, then
    every voxel's gathers as if inside, then the few voxels at the edge of ``sub`` again with
    the bounds-checked sampler. ``sub`` must be C-contiguous, and no two arguments may share
    memory (``noalias``).
    """
    b = _scalars(sub, params)
    dz, dy, dx = h[0, 2], h[1, 2], h[2, 2]
    no_p = np.zeros(1)  # positions are computed, not read
    n = out.shape[2]
    flat = sub.ravel()
    s0, s1 = _strides(sub)
    lin = b[9] == 1 and b[6] >= 2 and b[7] >= 2 and b[8] >= 2
    idx = np.empty(n, np.uint64)
    fz, fy, fx = np.empty(n), np.empty(n), np.empty(n)
    edge = np.empty(n, np.bool_)
    for k in range(out.shape[0]):
        for j in range(out.shape[1]):
            bz = h[0, 0] * k + h[0, 1] * j + h[0, 3]
            by = h[1, 0] * k + h[1, 1] * j + h[1, 3]
            bx = h[2, 0] * k + h[2, 1] * j + h[2, 3]
            row = out[k, j]
            if not lin:
                for i in range(n):
                    row[i] = _sample(sub, bz + dz * i, by + dy * i, bx + dx * i, b)
                continue
            n_edge = _locate_row(True, (bz, by, bx), (dz, dy, dx), no_p, no_p, no_p, b, s0, s1,
                                 idx, fz, fy, fx, edge)  # fmt: skip
            _gather_row(flat, idx, fz, fy, fx, row, s0, s1, b)
            if n_edge:
                for i in range(n):
                    if edge[i]:
                        row[i] = _sample(sub, bz + dz * i, by + dy * i, bx + dx * i, b)


@njit_noalias(nogil=True, cache=True, boundscheck=False)
def sample_nodes(
    sub: Any,
    nodes: Any,
    cz: Any,
    tz: Any,
    cy: Any,
    ty: Any,
    cx: Any,
    tx: Any,
    out: Any,
    params: Any,
) -> None:
    """``out`` sampled at the trilinear interpolation of ``nodes`` (3, Nz, Ny, Nx; sub indices).

    Output voxel ``k`` along z lies in node cell ``cz[k]`` at fraction ``tz[k]`` (likewise y,
    x; see :func:`cells_of`). Separable: one bilinear (z, y) row of nodes per output row, then
    linear along x; then sampled like :func:`sample_affine`. ``sub`` must be C-contiguous, and
    no two arguments may share memory (``noalias``).
    """
    b = _scalars(sub, params)
    lin = b[9] == 1 and b[6] >= 2 and b[7] >= 2 and b[8] >= 2
    n_x, n_i = nodes.shape[3], out.shape[2]
    flat = sub.ravel()
    s0, s1 = _strides(sub)
    row = np.empty((3, n_x))
    zero = (0.0, 0.0, 0.0)  # no affine base or step
    pz, py, px = np.empty(n_i), np.empty(n_i), np.empty(n_i)
    idx = np.empty(n_i, np.uint64)
    fz, fy, fx = np.empty(n_i), np.empty(n_i), np.empty(n_i)
    edge = np.empty(n_i, np.bool_)
    for k in range(out.shape[0]):
        a, wa = cz[k], tz[k]
        for j in range(out.shape[1]):
            c_y, wb = cy[j], ty[j]
            for c in range(3):
                for m in range(n_x):
                    row[c, m] = (1.0 - wa) * (
                        (1.0 - wb) * nodes[c, a, c_y, m] + wb * nodes[c, a, c_y + 1, m]
                    ) + wa * (
                        (1.0 - wb) * nodes[c, a + 1, c_y, m] + wb * nodes[c, a + 1, c_y + 1, m]
                    )
            dst = out[k, j]
            for i in range(n_i):  # positions first, in a loop of their own (it vectorises)
                pz[i], py[i], px[i] = _node_position(row, cx[i], tx[i])
            if not lin:
                for i in range(n_i):
                    dst[i] = _sample(sub, pz[i], py[i], px[i], b)
                continue
            n_edge = _locate_row(False, zero, zero, pz, py, px, b, s0, s1, idx, fz, fy, fx, edge)
            _gather_row(flat, idx, fz, fy, fx, dst, s0, s1, b)
            if n_edge:
                for i in range(n_i):
                    if edge[i]:
                        dst[i] = _sample(sub, pz[i], py[i], px[i], b)


@nb.njit(nogil=True, cache=True, boundscheck=False)
def sample_points(
    sub: Any,
    pts: Any,
    out: Any,
    params: Any,
) -> None:
    """``out[n]`` = ``sub`` at ``pts[:, n]`` ((3, N) sub indices, z, y, x)."""
    b = _scalars(sub, params)
    for n in range(out.shape[0]):
        out[n] = _sample(sub, pts[0, n], pts[1, n], pts[2, n], b)


def params(
    lower: np.ndarray,
    upper: np.ndarray,
    order: int,
    clip: tuple[float, float] | None,
    fill: float,
) -> np.ndarray:
    """The kernels' ``params`` array: image bounds, order, integer clip range (None: float), fill."""
    lims = (0.0, 0.0) if clip is None else clip
    flags = [float(order), float(clip is not None), lims[0], lims[1], fill]
    return np.r_[lower, upper, flags].astype(np.float64)


def cells_of(n: int, node_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Node cell and fraction of voxels ``0..n-1`` between nodes at ``node_idx``.

    One node (an axis one voxel long): the node is doubled, cell 0 at fraction 0.
    """
    if len(node_idx) < 2:
        return np.zeros(n, dtype=np.int64), np.zeros(n)
    pos = np.arange(n)
    k = np.clip(np.searchsorted(node_idx, pos, side="right") - 1, 0, len(node_idx) - 2)
    t = (pos - node_idx[k]) / (node_idx[k + 1] - node_idx[k])
    return k.astype(np.int64), t.astype(np.float64)


@nb.njit(nogil=True, cache=True, boundscheck=False, fastmath={"contract", "arcp"})
def _tps_eval(pts: Any, centres: Any, weights: Any, affine: Any, kernel_r: bool, out: Any) -> None:
    """``out[:, p]`` = ``affine[0] + pts[:, p] @ affine[1:] + sum_i weights[i] U(|pts[:, p] - c_i|)``.

    Points and output are (3, n) (x, y, z rows): the loop over points is innermost and SIMD.
    """
    n = pts.shape[1]
    for t0 in range(0, n, 512):  # tiles of points that stay in L1 while every centre passes
        x, y, z = pts[0, t0 : t0 + 512], pts[1, t0 : t0 + 512], pts[2, t0 : t0 + 512]
        ox, oy, oz = out[0, t0 : t0 + 512], out[1, t0 : t0 + 512], out[2, t0 : t0 + 512]
        m = x.shape[0]
        for p in range(m):
            ox[p] = affine[0, 0] + x[p] * affine[1, 0] + y[p] * affine[2, 0] + z[p] * affine[3, 0]
            oy[p] = affine[0, 1] + x[p] * affine[1, 1] + y[p] * affine[2, 1] + z[p] * affine[3, 1]
            oz[p] = affine[0, 2] + x[p] * affine[1, 2] + y[p] * affine[2, 2] + z[p] * affine[3, 2]
        for i in range(centres.shape[0]):
            cx, cy, cz = centres[i, 0], centres[i, 1], centres[i, 2]
            wx, wy, wz = weights[i, 0], weights[i, 1], weights[i, 2]
            if kernel_r:  # two loops, so that each is one branch-free SIMD loop
                for p in range(m):
                    dx, dy, dz = x[p] - cx, y[p] - cy, z[p] - cz
                    u = math.sqrt(dx * dx + dy * dy + dz * dz)
                    ox[p] += u * wx
                    oy[p] += u * wy
                    oz[p] += u * wz
            else:  # r^2 log r = r^2 log(r^2) / 2, and 0 at r = 0
                for p in range(m):
                    dx, dy, dz = x[p] - cx, y[p] - cy, z[p] - cz
                    r2 = dx * dx + dy * dy + dz * dz
                    u = 0.5 * r2 * math.log(r2) if r2 > 0.0 else 0.0
                    ox[p] += u * wx
                    oy[p] += u * wy
                    oz[p] += u * wz


def tps_zyx(tps: Any, pts_zyx: np.ndarray) -> np.ndarray:
    """Exact ``tps`` (a :class:`~bridge_xr.model.pointmaps.ThinPlateSpline`) of (n, 3) zyx µm."""
    xyz = np.ascontiguousarray(np.asarray(pts_zyx, dtype=np.float64)[:, ::-1].T)
    out = np.empty_like(xyz)
    _tps_eval(
        xyz,
        np.ascontiguousarray(tps.centres, dtype=np.float64),
        np.ascontiguousarray(tps.weights, dtype=np.float64),
        np.ascontiguousarray(tps.affine, dtype=np.float64),
        tps.kernel == "r",
        out,
    )
    return out[::-1].T


@nb.njit(nogil=True, cache=True, boundscheck=False)
def box_voxels(lo: Any, hi: Any) -> Any:
    """(3, n) z, y, x indices of every voxel in the boxes ``lo[b] .. hi[b]`` ((nb, 3), inclusive).

    Boxes that touch share their faces' voxels, which are listed once per box.
    """
    n = 0
    for b in range(lo.shape[0]):
        n += (hi[b, 0] - lo[b, 0] + 1) * (hi[b, 1] - lo[b, 1] + 1) * (hi[b, 2] - lo[b, 2] + 1)
    out = np.empty((3, n), np.int64)
    p = 0
    for b in range(lo.shape[0]):
        for k in range(lo[b, 0], hi[b, 0] + 1):
            for j in range(lo[b, 1], hi[b, 1] + 1):
                for i in range(lo[b, 2], hi[b, 2] + 1):
                    out[0, p], out[1, p], out[2, p] = k, j, i
                    p += 1
    return out


@nb.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc", "contract"})
def cell_bounds(
    mz: Any,
    my: Any,
    mx: Any,
    hz: Any,
    hy: Any,
    hx: Any,
    interp: Any,
    centres_zyx: Any,
    w_norm: Any,
    kernel_r: bool,
) -> Any:
    """Interpolation-error bound of every TPS node cell (cell midpoints ``m*``, widths ``h*``).

    ``(sum_axes (h * interp)^2 / 8) * sum_i |w_i| max|U''|`` over the cell, with ``max|U''|`` at
    the distance from centre ``i`` to the cell's nearest possible point (its midpoint's distance
    less half its diagonal, at least 1e-9): ``1 / r`` for ``U = r``, ``2 |log r| + 3`` for
    ``r^2 log r``. Returns (nz, ny, nx) µm. The sum over centres is vectorised (its terms
    reassociated: a relative change near 1e-15 of a bound that over-estimates by design).
    """
    out = np.empty((mz.shape[0], my.shape[0], mx.shape[0]))
    n = centres_zyx.shape[0]
    czy = np.empty(n)  # squared (z, y) distance of each centre from the cell row's midpoint
    for a in range(mz.shape[0]):
        for b in range(my.shape[0]):
            for i in range(n):
                dz = mz[a] - centres_zyx[i, 0]
                dy = my[b] - centres_zyx[i, 1]
                czy[i] = dz * dz + dy * dy
            for c in range(mx.shape[0]):
                half = 0.5 * math.sqrt(hz[a] ** 2 + hy[b] ** 2 + hx[c] ** 2)
                curv = 0.0
                if kernel_r:  # one branch-free loop over the centres per kernel (it vectorises)
                    for i in range(n):
                        dx = mx[c] - centres_zyx[i, 2]
                        r = max(math.sqrt(czy[i] + dx * dx) - half, 1e-9)
                        curv += w_norm[i] / r
                else:
                    for i in range(n):
                        dx = mx[c] - centres_zyx[i, 2]
                        r = max(math.sqrt(czy[i] + dx * dx) - half, 1e-9)
                        curv += w_norm[i] * (2.0 * abs(math.log(r)) + 3.0)
                h2 = (hz[a] * interp[0]) ** 2 + (hy[b] * interp[1]) ** 2 + (hx[c] * interp[2]) ** 2
                out[a, b, c] = h2 / 8.0 * curv
    return out
