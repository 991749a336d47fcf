"""Exact footprint integration for general chains: Kuhn tetrahedra clipped against MRI voxels.

Every microscopy voxel is cut into the 6 tetrahedra of the Kuhn triangulation, mapped through
the chain at its corners and clipped exactly against the MRI voxel faces.
"""

from __future__ import annotations

import itertools

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


def _det3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Determinant of the 3x3 matrices with rows a, b, c (component axis first)."""
    return (
        a[0] * (b[1] * c[2] - b[2] * c[1])
        - a[1] * (b[0] * c[2] - b[2] * c[0])
        + a[2] * (b[0] * c[1] - b[1] * c[0])
    )


def _tet_volume(t: np.ndarray) -> np.ndarray:
    v0 = t[:, 0].T
    return np.abs(_det3(t[:, 1].T - v0, t[:, 2].T - v0, t[:, 3].T - v0)) / 6.0


def _prism(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Three tetrahedra tiling the prism with triangles ``a`` and ``b`` (a_k -- b_k edges)."""
    a1, a2, a3 = a[:, 0], a[:, 1], a[:, 2]
    b1, b2, b3 = b[:, 0], b[:, 1], b[:, 2]
    return np.concatenate(
        [
            np.stack([a1, a2, a3, b1], axis=1),
            np.stack([a2, a3, b1, b2], axis=1),
            np.stack([a3, b1, b2, b3], axis=1),
        ]
    )


def _cut(p: np.ndarray, q: np.ndarray, dp: np.ndarray, dq: np.ndarray) -> np.ndarray:
    t = dp / (dp - dq)
    return p + t[:, None] * (q - p)


def clip_tets(
    tets: np.ndarray, owner: np.ndarray, axis: int, plane: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Split tetrahedra (n, 4, 3) by the planes ``x[axis] = plane`` (one per tetrahedron)."""
    d = tets[:, :, axis] - plane[:, None]
    below = d < 0
    nb = below.sum(axis=1)
    out_t = [tets[(nb == 0) | (nb == 4)]]
    out_o = [owner[(nb == 0) | (nb == 4)]]
    for n_lo in (1, 2, 3):
        sel = nb == n_lo
        if not sel.any():
            continue
        order = np.argsort(~below[sel], axis=1, kind="stable")  # below-plane vertices first
        v = np.take_along_axis(tets[sel], order[:, :, None], axis=1)
        dv = np.take_along_axis(d[sel], order, axis=1)
        own = owner[sel]
        if n_lo == 2:
            p1, p2, q1, q2 = v[:, 0], v[:, 1], v[:, 2], v[:, 3]
            i11 = _cut(p1, q1, dv[:, 0], dv[:, 2])
            i12 = _cut(p1, q2, dv[:, 0], dv[:, 3])
            i21 = _cut(p2, q1, dv[:, 1], dv[:, 2])
            i22 = _cut(p2, q2, dv[:, 1], dv[:, 3])
            lo_p = _prism(np.stack([p1, i11, i12], 1), np.stack([p2, i21, i22], 1))
            hi_p = _prism(np.stack([q1, i11, i21], 1), np.stack([q2, i12, i22], 1))
            out_t += [lo_p, hi_p]
            out_o += [np.tile(own, 3), np.tile(own, 3)]
            continue
        # one vertex alone on its side: index 0 if n_lo == 1, else index 3
        solo = 0 if n_lo == 1 else 3
        rest = [1, 2, 3] if n_lo == 1 else [0, 1, 2]
        p = v[:, solo]
        cuts = np.stack([_cut(p, v[:, r], dv[:, solo], dv[:, r]) for r in rest], axis=1)
        small = np.concatenate([p[:, None], cuts], axis=1)
        big = _prism(cuts, v[:, rest])
        out_t += [small, big]
        out_o += [own, np.tile(own, 3)]
    return np.concatenate(out_t), np.concatenate(out_o)


def _accumulate(
    cells: np.ndarray,
    weights: np.ndarray,
    values: np.ndarray,
    lo: np.ndarray,
    shape: tuple[int, ...],
) -> np.ndarray:
    rel = cells - lo
    ok = np.all((rel >= 0) & (rel < np.asarray(shape)), axis=1)
    flat = np.ravel_multi_index(tuple(rel[ok].T), shape)
    n = int(np.prod(shape))
    out = np.empty((2, n))
    out[0] = np.bincount(flat, weights=weights[ok] * values[ok], minlength=n)
    out[1] = np.bincount(flat, weights=weights[ok], minlength=n)
    return out.reshape(2, *shape)


def general_block(
    values: np.ndarray, corners: np.ndarray, bbox_lo: np.ndarray, bbox_shape: tuple[int, ...]
) -> np.ndarray:
    """Contribution (value-weighted volume, volume) of one block to the MRI bounding box."""
    nz, ny, nx = values.shape
    corner = {
        bits: corners[:, bits[0] : bits[0] + nz, bits[1] : bits[1] + ny, bits[2] : bits[2] + nx]
        for bits in itertools.product((0, 1), repeat=3)
    }
    views = list(corner.values())
    cmin, cmax = views[0].copy(), views[0].copy()  # (3, nz, ny, nx)
    for v in views[1:]:
        np.minimum(cmin, v, out=cmin)
        np.maximum(cmax, v, out=cmax)
    mapped = np.isfinite(cmin).all(axis=0) & np.isfinite(cmax).all(axis=0)  # TPS may not invert
    cmin = np.where(mapped, cmin, 0.0)
    cmax = np.where(mapped, cmax, 0.0)
    span = np.max(cmax - cmin, axis=0)
    vol = np.zeros(values.shape)
    sign = np.zeros(values.shape)
    for tet, parity in zip(_KUHN, _PARITY, strict=True):
        v0 = corner[tuple(tet[0])]
        d1, d2, d3 = (corner[tuple(b)] - v0 for b in tet[1:])
        det = _det3(d1, d2, d3)
        vol += np.abs(det) / 6.0
        sign += parity * np.sign(det)
    # a voxel whose tetrahedra disagree in orientation is folded by the warp, and one stretched
    # over more than MAX_SPAN MRI voxels lies where the (inverse) warp is meaningless: both left out
    mapped &= (np.abs(sign) == 6) & (span <= MAX_SPAN)
    cmin = np.where(mapped, cmin, -1.0)
    cmax = np.where(mapped, cmax, -1.0)
    cell_lo = np.floor(cmin).astype(np.int64)
    cell_hi = np.ceil(cmax).astype(np.int64) - 1
    cell_hi = np.maximum(cell_hi, cell_lo)
    blo = np.asarray(bbox_lo).reshape(3, 1, 1, 1)
    bhi = blo + np.asarray(bbox_shape).reshape(3, 1, 1, 1)
    relevant = mapped & np.all((cell_hi >= blo) & (cell_lo < bhi), axis=0)  # in the MRI box
    inside = np.all(cell_lo == cell_hi, axis=0) & relevant
    vals = values.astype(np.float64)
    out = _accumulate(cell_lo[:, inside].T, vol[inside], vals[inside], bbox_lo, bbox_shape)
    straddle = np.argwhere(~inside & relevant)
    for start in range(0, len(straddle), _BATCH):
        sz, sy, sx = straddle[start : start + _BATCH].T
        c8 = np.stack([v[:, sz, sy, sx] for v in views])  # (8, 3, n), corner order = bits
        tets = c8[_KUHN_CORNER].transpose(3, 0, 1, 2).reshape(-1, 4, 3)
        owner = np.repeat(np.arange(len(sz)), 6)
        lo_c = cell_lo[:, sz, sy, sx].T
        hi_c = cell_hi[:, sz, sy, sx].T
        for axis in range(3):
            for j in range(1, int((hi_c[:, axis] - lo_c[:, axis]).max(initial=0)) + 1):
                plane = (lo_c[owner, axis] + j).astype(np.float64)
                active = plane <= hi_c[owner, axis]
                if not active.any():
                    continue
                cut_t, cut_o = clip_tets(tets[active], owner[active], axis, plane[active])
                tets = np.concatenate([tets[~active], cut_t])
                owner = np.concatenate([owner[~active], cut_o])
        cells = np.floor(0.25 * (tets[:, 0] + tets[:, 1] + tets[:, 2] + tets[:, 3])).astype(
            np.int64
        )
        out += _accumulate(cells, _tet_volume(tets), vals[sz, sy, sx][owner], bbox_lo, bbox_shape)
    return out


#: a microscopy voxel mapped wider than this many MRI voxels is left out (see general_block)
MAX_SPAN = 4.0


#: straddling microscopy voxels are clipped in batches of this many
_BATCH = 40_000
