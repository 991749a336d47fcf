"""Microscopy density per MRI voxel: exact footprint integration through the registrations.

The microscopy image is taken as what it is, a piecewise-constant function (one value per voxel
box). For every MRI voxel ``V`` we compute

    fraction(V) = sum_k m_k |V ∩ T(B_k)| / sum_k |V ∩ T(B_k)|,   coverage(V) = sum_k |V ∩ T(B_k)| / |V|

where ``B_k`` is microscopy voxel ``k`` and ``T`` the chain of registrations from the microscopy
into the MRI. A binary mask therefore gives the volume fraction (0-1) of the MRI voxel that is
foreground, a probability map its expected fraction, a raw image its mean intensity.

Two exact paths, chosen automatically:

* **separable** — when the chain is linear and axis-aligned (scale, translation, flips; e.g. a 2P
  image resliced into the MRI frame, any non-integer spacing ratio such as 1.1838 µm into 25 µm),
  the overlaps factor into three 1D interval-overlap matrices and the integral is three small
  matrix products per block;
* **general** — otherwise (rotations, shears, thin-plate splines) every microscopy voxel corner is
  mapped into MRI index space (exactly at nodes every ~``NODE_UM``; trilinear in between, which is
  exact for linear chains), each voxel is split into the 6 tetrahedra of the Kuhn triangulation (a
  conforming tiling, so no volume is lost or counted twice), and tetrahedra that straddle MRI voxel
  faces are clipped exactly against those planes. For a linear chain the result is exact to
  rounding; for a TPS it is the exact integral of its piecewise-linear interpolant.

``method="bilinear"`` reproduces the paper (2P downsampled to the MRI grid by bilinear
interpolation): the microscopy is sampled by trilinear interpolation at each MRI voxel centre.

Everything is lazy: one dask task per microscopy block returns that block's contribution to the
MRI bounding box of the microscopy footprint, and the contributions are summed by a tree reduction.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.ome_zarr import read_image
from bridge_xr.model.image import make_image
from bridge_xr.model.pointmaps import LinearModel, Model
from bridge_xr.model.units import conversion_factor
from bridge_xr.scene.chains import apply_hops, models_of
from bridge_xr.scene.graph import graph_of

Method = Literal["exact", "resliced", "bilinear"]

#: exact corner-mapping nodes every this many micrometres (trilinear in between)
NODE_UM = 10.0
#: a microscopy voxel mapped wider than this many MRI voxels is left out (see general_block)
MAX_SPAN = 4.0
#: straddling microscopy voxels are clipped in batches of this many
_BATCH = 40_000

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


@dataclass(frozen=True)
class Footprint:
    """How a microscopy image's voxels land in an MRI grid."""

    models: list[tuple[Model, bool]]  # microscopy µm xyz -> MRI µm xyz, hop by hop
    mic_spacing_um: np.ndarray  # zyx
    mic_origin_um: np.ndarray
    mri_spacing_um: np.ndarray
    mri_origin_um: np.ndarray
    mri_shape: tuple[int, int, int]
    diagonal: np.ndarray | None  # (scale zyx, offset zyx) of micro index -> MRI index, if separable


def _chain(store: Any, microscopy: str, mri: str) -> list[tuple[Model, bool]]:
    return models_of(graph_of(store).chain(microscopy, mri))


def _composite_linear(models: list[tuple[Model, bool]]) -> np.ndarray | None:
    """The 4x4 zyx µm matrix of an all-linear chain, or None."""
    total = np.eye(4)
    for model, fwd in models:
        if not isinstance(model, LinearModel):
            return None
        total = (model if fwd else model.inverse()).to_affine() @ total
    return total


def plan_footprint(store: Any, microscopy: str, mri: str) -> Footprint:
    """Read both geometries and the registration chain from ``microscopy`` to ``mri``."""
    mic = read_image(store, microscopy)
    mr = read_image(store, mri)
    if any(str(d) not in ("z", "y", "x") for d in mr.dims):
        raise InvalidInputError(f"MRI image {mri!r} has dims {mr.dims}; expected (z, y, x)")
    models = _chain(store, microscopy, mri) if microscopy != mri else []
    f_mic = conversion_factor(mic.attrs["unit"], "micrometer")
    f_mri = conversion_factor(mr.attrs["unit"], "micrometer")
    fp = Footprint(
        models=models,
        mic_spacing_um=np.array([mic.attrs["spacing"][d] for d in "zyx"]) * f_mic,
        mic_origin_um=np.array([mic.attrs["origin"][d] for d in "zyx"]) * f_mic,
        mri_spacing_um=np.array([mr.attrs["spacing"][d] for d in "zyx"]) * f_mri,
        mri_origin_um=np.array([mr.attrs["origin"][d] for d in "zyx"]) * f_mri,
        mri_shape=tuple(int(mr.sizes[d]) for d in "zyx"),  # type: ignore[arg-type]
        diagonal=None,
    )
    lin = _composite_linear(models)
    if lin is not None:
        # microscopy index -> MRI index (voxel v spans [v, v + 1) in MRI index units)
        a = np.diag(1 / fp.mri_spacing_um) @ lin[:3, :3] @ np.diag(fp.mic_spacing_um)
        b = (lin[:3, :3] @ fp.mic_origin_um + lin[:3, 3] - fp.mri_origin_um) / fp.mri_spacing_um
        off = a - np.diag(np.diag(a))
        if np.abs(off).max() <= 1e-12 * np.abs(np.diag(a)).max():
            fp = dataclasses.replace(fp, diagonal=np.stack([np.diag(a), b + 0.5]))
    return fp


def corner_nodes(
    fp: Footprint, shape: tuple[int, int, int], node_um: float = NODE_UM
) -> tuple[list[np.ndarray], np.ndarray]:
    """Exactly mapped corner nodes: node corner indices per axis, and (3, *nodes) MRI index zyx.

    Corner ``j`` of axis ``a`` sits at microscopy index ``j - 0.5`` (``j = 0 .. n``).
    """
    steps = [max(1, int(node_um // s)) for s in fp.mic_spacing_um]
    idx = [np.unique(np.r_[np.arange(0, n + 1, s), n]) for n, s in zip(shape, steps, strict=True)]
    axes_um = [fp.mic_origin_um[i] + (idx[i] - 0.5) * fp.mic_spacing_um[i] for i in range(3)]
    gz, gy, gx = np.meshgrid(*axes_um, indexing="ij")
    zyx = np.stack([gz.ravel(), gy.ravel(), gx.ravel()], axis=1)
    mapped = apply_hops(fp.models, zyx)  # zyx µm in the MRI
    mri_idx = (mapped - fp.mri_origin_um) / fp.mri_spacing_um + 0.5
    return idx, mri_idx.T.reshape(3, *gz.shape)


def _interp(nodes: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left node and weight of the right node for each position (linear interpolation)."""
    k = np.clip(np.searchsorted(nodes, positions, side="right") - 1, 0, max(len(nodes) - 2, 0))
    if len(nodes) == 1:
        return k, np.zeros(len(positions))
    return k, (positions - nodes[k]) / (nodes[k + 1] - nodes[k])


def block_corners(
    node_idx: list[np.ndarray], node_val: np.ndarray, lo: tuple[int, ...], hi: tuple[int, ...]
) -> np.ndarray:
    """(3, nz+1, ny+1, nx+1) MRI index positions of a block's voxel corners (trilinear)."""
    ws = []
    for a in range(3):
        pos = np.arange(lo[a], hi[a] + 1)
        k, t = _interp(node_idx[a], pos)
        w = np.zeros((len(pos), len(node_idx[a])))
        w[np.arange(len(pos)), k] = 1 - t
        if len(node_idx[a]) > 1:
            w[np.arange(len(pos)), k + 1] += t
        used = np.nonzero(w.any(axis=0))[0]
        ws.append((w[:, used], used))
    sub = node_val[:, ws[0][1]][:, :, ws[1][1]][:, :, :, ws[2][1]]
    bad = ~np.isfinite(sub).all(axis=0)  # nodes where a TPS has no inverse
    out = np.einsum(
        "zi,yj,xk,cijk->czyx", ws[0][0], ws[1][0], ws[2][0], np.where(bad, 0.0, sub), optimize=True
    )
    if bad.any():
        touched = np.einsum("zi,yj,xk,ijk->zyx", ws[0][0], ws[1][0], ws[2][0], bad * 1.0) > 0
        out[:, touched] = np.nan
    return out


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


def _overlap_matrix(
    scale: float, offset: float, k_lo: int, k_hi: int, i_lo: int, i_hi: int
) -> tuple[Any, int]:
    """Sparse overlap lengths of microscopy voxels ``k`` with the MRI voxels ``i`` they touch.

    Returns ``(W, first)``: ``W[i - first, k - k_lo]`` for the touched ``i`` (clipped to
    ``[i_lo, i_hi)``), a CSR matrix with one or two entries per column.
    """
    from scipy import sparse

    k = np.arange(k_lo, k_hi)
    a = scale * (k - 0.5) + offset
    b = scale * (k + 0.5) + offset
    left, right = np.minimum(a, b), np.maximum(a, b)
    first = max(int(np.floor(left.min())), i_lo)
    last = min(int(np.ceil(right.max())), i_hi)
    if last <= first:
        return sparse.csr_matrix((0, len(k))), first
    rows, cols, vals = [], [], []
    i_start = np.floor(left).astype(np.int64)
    span = int((np.ceil(right) - i_start).max())
    for j in range(span):
        i = i_start + j
        w = np.minimum(right, i + 1) - np.maximum(left, i)
        ok = (w > 0) & (i >= first) & (i < last)
        rows.append(i[ok] - first)
        cols.append(np.nonzero(ok)[0])
        vals.append(w[ok])
    w_mat = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(last - first, len(k)),
    )
    return w_mat, first


def _segment_sum_y(
    v: np.ndarray, scale: float, offset: float, k_lo: int, first: int, n_out: int
) -> np.ndarray | None:
    """``W_y`` applied along axis 1 of a (z, y, x) block by segment sums (``np.add.reduceat``).

    Every microscopy row has the same length ``|scale|`` (MRI units) and lies in cell ``i0``
    except a part ``w_b`` in ``i0 + 1``: whole lengths go to ``i0`` by integer segment sums, then
    the few straddling rows move ``w_b`` over. None when a row spans more than two cells.
    """
    n = v.shape[1]
    k = np.arange(k_lo, k_lo + n)
    a = scale * (k - 0.5) + offset
    b = scale * (k + 0.5) + offset
    left, right = np.minimum(a, b), np.maximum(a, b)
    i0 = np.floor(left).astype(np.int64)
    if np.any(right > i0 + 2) or scale < 0:
        return None
    length = float(abs(scale))
    w_b = np.maximum(right - (i0 + 1), 0.0)
    starts = np.r_[0, np.nonzero(np.diff(i0))[0] + 1]
    cells = i0[starts] - first
    if np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_:
        seg = np.add.reduceat(v, starts, axis=1, dtype=np.uint32).astype(np.float32)
    else:
        seg = np.add.reduceat(v.astype(np.float32), starts, axis=1)
    out = np.zeros((v.shape[0], n_out, v.shape[2]), dtype=np.float32)
    ok = (cells >= 0) & (cells < n_out)
    out[:, cells[ok], :] = seg[:, ok, :] * np.float32(length)
    for j in np.nonzero(w_b > 0)[0]:  # at most one straddling row per cell boundary
        part = v[:, j, :].astype(np.float32) * np.float32(w_b[j])
        c = int(i0[j] - first)
        if 0 <= c < n_out:
            out[:, c, :] -= part
        if 0 <= c + 1 < n_out:
            out[:, c + 1, :] += part
    return out


def separable_block(
    values: np.ndarray,
    diagonal: np.ndarray,
    lo: tuple[int, ...],
    bbox_lo: np.ndarray,
    bbox_shape: tuple[int, ...],
) -> np.ndarray:
    """Exact contribution of one block when microscopy and MRI axes are aligned.

    Three sparse products (one per axis, one or two overlaps per microscopy voxel).
    """
    out = np.zeros((2, *bbox_shape))
    nz, ny, nx = values.shape
    ws, firsts = [], []
    for a in range(3):
        w, first = _overlap_matrix(
            diagonal[0, a],
            diagonal[1, a],
            lo[a],
            lo[a] + values.shape[a],
            int(bbox_lo[a]),
            int(bbox_lo[a]) + bbox_shape[a],
        )
        ws.append(w)
        firsts.append(first)
    n_z, n_y, n_x = (w.shape[0] for w in ws)
    if min(n_z, n_y, n_x) == 0:
        return out
    # y first, on the full data: segment sums over whole x rows (integers stay integers, no float
    # copy of the block); then x (one small GEMM) and z (sparse) on data ~20x smaller
    r = _segment_sum_y(values, diagonal[0, 1], diagonal[1, 1], lo[1], firsts[1], n_y)
    if r is None:  # microscopy voxels wider than an MRI voxel in y: the plain sparse product
        v = values.astype(np.float32).transpose(1, 0, 2).reshape(ny, nz * nx)
        r = np.asarray(ws[1] @ v).reshape(n_y, nz, nx).transpose(1, 0, 2)
    s = r.reshape(nz * n_y, nx) @ ws[2].toarray().astype(np.float32).T  # (z*Y, X)
    s = s.reshape(nz, n_y * n_x)
    s = np.asarray(ws[0] @ s).reshape(n_z, n_y, n_x)  # (Z, Y, X)
    rel = [f - int(b) for f, b in zip(firsts, bbox_lo, strict=True)]
    sl = tuple(slice(r, r + n) for r, n in zip(rel, (n_z, n_y, n_x), strict=True))
    out[0][sl] = s
    out[1][sl] = np.einsum(
        "i,j,k->ijk",
        np.asarray(ws[0].sum(axis=1)).ravel(),
        np.asarray(ws[1].sum(axis=1)).ravel(),
        np.asarray(ws[2].sum(axis=1)).ravel(),
    )
    return out


def _bbox(fp: Footprint, node_val: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    flat = node_val.reshape(3, -1)
    flat = flat[:, np.isfinite(flat).all(axis=0)]
    if flat.shape[1] == 0:
        raise InvalidInputError("the registration maps no part of the microscopy into the MRI")
    lo = np.floor(flat.min(axis=1)).astype(int) - 1
    hi = np.ceil(flat.max(axis=1)).astype(int) + 1
    lo = np.clip(lo, 0, np.asarray(fp.mri_shape))
    hi = np.clip(hi, 0, np.asarray(fp.mri_shape))
    if np.any(hi <= lo):
        raise InvalidInputError(
            "the microscopy image does not overlap the MRI through the registration"
        )
    return lo, tuple(int(v) for v in hi - lo)  # type: ignore[return-value]


def _inner_chunked(st: Any, path: str, img: xr.DataArray, read_voxels: int = 2**25) -> da.Array:
    """The level-0 array read in units of whole inner chunks, merged in x then y up to about
    ``read_voxels`` but never across a shard: many parallel, large-enough reads."""
    import zarr

    from bridge_xr.io.ome_zarr import open_group, read_multiscale_info

    group = open_group(st, path)
    arr = group[read_multiscale_info(group).level_paths[0]]
    if not isinstance(arr, zarr.Array) or tuple(arr.shape) != tuple(img.sizes.values()):
        return img.data
    inner = list(arr.chunks)
    outer = list(arr.shards or arr.chunks)
    for axis in (len(inner) - 1, len(inner) - 2):
        while inner[axis] * 2 <= outer[axis] and np.prod(inner) * 2 <= read_voxels:
            inner[axis] *= 2
    return da.from_zarr(arr, chunks=tuple(inner))


def _sum_slabs(slabs: list[tuple[int, int, da.Array]], bbox_shape: tuple[int, ...]) -> da.Array:
    """Add z-slab partials (each placed at its own depth) into the bounding box."""
    padded = [da.pad(s, ((0, 0), (b, a), (0, 0), (0, 0))) for b, a, s in slabs]
    while len(padded) > 1:  # a balanced tree of additions
        padded = [
            padded[i] + padded[i + 1] if i + 1 < len(padded) else padded[i]
            for i in range(0, len(padded), 2)
        ]
    return padded[0].rechunk((2, *bbox_shape))


def footprint_sums(
    store: StoreLike,
    *,
    microscopy: str,
    mri: str,
    channel: str | int | None = None,
    threshold: float | None = None,
    block_voxels: int = 2**20,
    force_general: bool = False,
) -> tuple[da.Array, np.ndarray, dict[str, Any]]:
    """Lazy (2, *bbox) sums over the MRI bounding box, its offset, and a description."""
    st = resolve_store(store)
    fp = plan_footprint(st, microscopy, mri)
    if force_general:
        fp = dataclasses.replace(fp, diagonal=None)
    mic = read_image(st, microscopy)
    data = _inner_chunked(st, microscopy, mic)
    if "c" in mic.dims:
        if channel is None:
            raise InvalidInputError(
                f"{microscopy!r} has channels {list(mic.c.values)}; choose one with `channel`"
            )
        names = [str(v) for v in mic.c.values]
        if not isinstance(channel, int) and str(channel) not in names:
            raise InvalidInputError(f"{microscopy!r} has no channel {channel!r}; it has {names}")
        ci = channel if isinstance(channel, int) else names.index(str(channel))
        data = data[ci] if mic.dims.index("c") == 0 else mic.isel(c=ci).data
        mic = mic.isel(c=ci)
    if any(str(d) not in ("z", "y", "x") for d in mic.dims):
        raise InvalidInputError(f"{microscopy!r} has dims {mic.dims}; expected (c,) z, y, x")
    kind = mic.attrs.get("bridge_xr", {}).get("kind", "image")
    if threshold is not None:
        data = (data > threshold).astype(np.float32)
    elif kind == "labels":
        data = (data > 0).astype(np.float32)
    # blocks: the read units for the (cheap) separable path; the general path, whose memory is
    # ~1 kB per voxel, splits them along y then z down to about block_voxels
    if fp.diagonal is None:
        bz, by, bx = (int(c[0]) for c in data.chunks)
        while bz * by * bx > block_voxels and by > 16:
            by //= 2
        while bz * by * bx > block_voxels and bz > 1:
            bz //= 2
        data = data.rechunk((bz, by, bx))
    shape = tuple(int(s) for s in data.shape)
    if fp.diagonal is not None:  # the mapping is exact per axis: corner nodes only
        node_idx = [np.array([0, n]) for n in shape]
        ends = [fp.diagonal[0, a] * (node_idx[a] - 0.5) + fp.diagonal[1, a] for a in range(3)]
        node_val = np.stack(np.meshgrid(*ends, indexing="ij"))
        step_z = 1
    else:
        node_idx, node_val = corner_nodes(fp, shape)  # type: ignore[arg-type]
        step_z = int(np.diff(node_idx[0]).max(initial=1))
    bbox_lo, bbox_shape = _bbox(fp, node_val)
    total = _slab_total(data, None, fp, node_idx, node_val, step_z, bbox_lo, bbox_shape)
    n_blocks = int(np.prod([len(c) for c in data.chunks]))
    info = {
        "microscopy": microscopy,
        "mri": mri,
        "path": "separable" if fp.diagonal is not None else "general",
        "chain": [type(m).__name__ + ("" if f else "^-1") for m, f in fp.models],
        "threshold": threshold,
        "blocks": n_blocks,
    }
    return total, bbox_lo, info


def _slab_total(
    data: da.Array,
    valid: da.Array | None,
    fp: Footprint,
    node_idx: list[np.ndarray],
    node_val: np.ndarray,
    step_z: int,
    bbox_lo: np.ndarray,
    bbox_shape: tuple[int, ...],
) -> da.Array:
    """Sum the blocks' partials z-slab by z-slab into the bounding box (lazily)."""
    nodes_key = dask.delayed(node_val, pure=True)
    offsets = [np.cumsum((0, *c)) for c in data.chunks]
    blocks = data.to_delayed(optimize_graph=False)
    valid_blocks = (
        None if valid is None else valid.rechunk(data.chunks).to_delayed(optimize_graph=False)
    )
    # one partial per z-slab of blocks, each only as deep (in MRI z) as that slab reaches, so
    # memory stays at a few MRI slices per task whatever the volume
    slabs = []
    for iz in range(len(data.chunks[0])):
        z0, z1 = int(offsets[0][iz]), int(offsets[0][iz + 1])
        if fp.diagonal is not None:
            zvals = fp.diagonal[0, 0] * (np.array([z0, z1]) - 0.5) + fp.diagonal[1, 0]
        else:
            rows = (node_idx[0] >= z0 - step_z) & (node_idx[0] <= z1 + step_z)
            zvals = node_val[0][rows]
            zvals = zvals[np.isfinite(zvals)]
        if zvals.size == 0:
            continue
        s_lo = max(int(np.floor(zvals.min())) - 1, int(bbox_lo[0]))
        s_hi = min(int(np.ceil(zvals.max())) + 1, int(bbox_lo[0]) + bbox_shape[0])
        if s_hi <= s_lo:
            continue
        slab_lo = np.array([s_lo, bbox_lo[1], bbox_lo[2]])
        slab_shape = (s_hi - s_lo, bbox_shape[1], bbox_shape[2])
        parts = []
        for iy, ix in itertools.product(range(len(data.chunks[1])), range(len(data.chunks[2]))):
            idx = (iz, iy, ix)
            lo = tuple(int(offsets[a][i]) for a, i in enumerate(idx))
            hi = tuple(int(offsets[a][i + 1]) for a, i in enumerate(idx))
            block = blocks[idx]
            if valid_blocks is not None:
                part = dask.delayed(separable_pair)(
                    block, valid_blocks[idx], fp.diagonal, lo, slab_lo, slab_shape
                )
            elif fp.diagonal is not None:
                part = dask.delayed(separable_block)(block, fp.diagonal, lo, slab_lo, slab_shape)
            else:
                corners = dask.delayed(block_corners)(node_idx, nodes_key, lo, hi)
                part = dask.delayed(general_block)(block, corners, slab_lo, slab_shape)
            parts.append(da.from_delayed(part, shape=(2, *slab_shape), dtype=np.float64))
        slab = da.stack(parts).sum(axis=0, split_every=8)
        before = s_lo - int(bbox_lo[0])
        after = int(bbox_lo[0]) + bbox_shape[0] - s_hi
        slabs.append((before, after, slab))
    if not slabs:
        raise InvalidInputError(
            "the microscopy image does not overlap the MRI through the registration"
        )
    return _sum_slabs(slabs, bbox_shape)


def separable_pair(
    values: np.ndarray,
    valid: np.ndarray,
    diagonal: np.ndarray,
    lo: tuple[int, ...],
    bbox_lo: np.ndarray,
    bbox_shape: tuple[int, ...],
) -> np.ndarray:
    """Like :func:`separable_block`, with the volume taken only where ``valid`` (data exists)."""
    out = separable_block(values, diagonal, lo, bbox_lo, bbox_shape)
    out[1] = separable_block(valid, diagonal, lo, bbox_lo, bbox_shape)[0]
    return out


def resliced_sums(
    store: StoreLike,
    *,
    microscopy: str,
    mri: str,
    channel: str | int | None = None,
    threshold: float | None = None,
    chunks: tuple[int, int, int] = (32, 256, 256),
) -> tuple[da.Array, np.ndarray, dict[str, Any]]:
    """Fast density for any chain: reslice, then integrate exactly.

    The microscopy is resampled (nearest neighbour, through the registrations, by the certified
    lazy resampler) onto an MRI-aligned grid at its own voxel size covering its footprint, then
    integrated exactly with the separable path. The only approximation is the nearest-neighbour
    reslicing, so the error per MRI voxel is of the order of one microscopy voxel layer along
    structure boundaries (microscopy voxel / MRI voxel), with no bias.
    """
    from bridge_xr.model.grid import Grid
    from bridge_xr.resampling.resample import resample_through

    st = resolve_store(store)
    fp = plan_footprint(st, microscopy, mri)
    mic = read_image(st, microscopy)
    mr = read_image(st, mri)
    shape = tuple(int(mic.sizes[d]) for d in "zyx")
    # the footprint's bounding box only: coarse nodes (the reslicing itself maps every voxel)
    _, node_val = corner_nodes(fp, shape, node_um=4 * NODE_UM)  # type: ignore[arg-type]
    bbox_lo, bbox_shape = _bbox(fp, node_val)
    to_unit = conversion_factor("micrometer", mr.attrs["unit"])
    fine_um = fp.mic_spacing_um
    n_fine = np.ceil(np.asarray(bbox_shape) * fp.mri_spacing_um / fine_um).astype(int)
    origin_um = fp.mri_origin_um + (bbox_lo - 0.5) * fp.mri_spacing_um + fine_um / 2
    grid = Grid(
        tuple(int(n) for n in n_fine),  # type: ignore[arg-type]
        tuple(float(v) * to_unit for v in fine_um),  # type: ignore[arg-type]
        tuple(float(v) * to_unit for v in origin_um),  # type: ignore[arg-type]
        mr.attrs["unit"],
    )
    models = [(m, not f) for m, f in fp.models[::-1]] or [(LinearModel.identity(), True)]
    # nearest-neighbour reslicing already rounds positions by up to half a voxel: the TPS is
    # mapped by exact nodes every 5 µm + trilinear, without the resampler's certification
    img = resample_through(
        st, moving=microscopy, models=models, grid=grid, order=0, chunks=chunks,
        nan_outside=True, max_error_voxels=None,
    )  # fmt: skip
    if "c" in img.dims:
        if channel is None:
            raise InvalidInputError(
                f"{microscopy!r} has channels {list(img.c.values)}; choose one with `channel`"
            )
        img = img.isel(c=channel) if isinstance(channel, int) else img.sel(c=str(channel))
    v = img.data
    valid = ~da.isnan(v)
    vals = da.where(valid, v, 0.0)
    kind = mic.attrs.get("bridge_xr", {}).get("kind", "image")
    if threshold is not None:
        vals = da.where(valid & (vals > threshold), 1.0, 0.0)
    elif kind == "labels":
        vals = da.where(valid & (vals > 0), 1.0, 0.0)
    diagonal = np.stack(
        [fine_um / fp.mri_spacing_um, (origin_um - fp.mri_origin_um) / fp.mri_spacing_um + 0.5]
    )
    fine_fp = dataclasses.replace(fp, diagonal=diagonal)
    idx = [np.array([0, n]) for n in n_fine]
    ends = [diagonal[0, a] * (idx[a] - 0.5) + diagonal[1, a] for a in range(3)]
    nodes = np.stack(np.meshgrid(*ends, indexing="ij"))
    total = _slab_total(
        vals.astype(np.float32), valid.astype(np.float32), fine_fp, idx, nodes, 1,
        bbox_lo, bbox_shape,
    )  # fmt: skip
    info = {
        "microscopy": microscopy,
        "mri": mri,
        "path": "resliced",
        "reslice_spacing_um": [float(v) for v in fine_um],
        "chain": [type(m).__name__ + ("" if f else "^-1") for m, f in fp.models],
        "threshold": threshold,
        "blocks": int(np.prod(vals.numblocks)),
    }
    return total, bbox_lo, info


def density(
    store: StoreLike,
    *,
    microscopy: str,
    mri: str,
    channel: str | int | None = None,
    threshold: float | None = None,
    method: Method = "exact",
    block_voxels: int = 2**20,
    force_general: bool = False,
) -> xr.Dataset:
    """``fraction`` and ``coverage`` of every MRI voxel (lazy, on the MRI grid, NaN where uncovered)."""
    st = resolve_store(store)
    mr = read_image(st, mri)
    shape = tuple(int(mr.sizes[d]) for d in "zyx")
    if method == "bilinear":
        frac, cov = _bilinear(st, microscopy, mri, channel, threshold)
        info: dict[str, Any] = {"microscopy": microscopy, "mri": mri, "path": "bilinear"}
    elif method in ("exact", "resliced"):
        if method == "exact":
            sums, lo, info = footprint_sums(
                st, microscopy=microscopy, mri=mri, channel=channel, threshold=threshold,
                block_voxels=block_voxels, force_general=force_general,
            )  # fmt: skip
        else:
            sums, lo, info = resliced_sums(
                st, microscopy=microscopy, mri=mri, channel=channel, threshold=threshold
            )
        pad = [(int(lo[a]), shape[a] - int(lo[a]) - sums.shape[a + 1]) for a in range(3)]
        num = da.pad(sums[0], pad)
        den = da.pad(sums[1], pad)
        cov = den
        frac = da.where(den > 0, num / da.where(den > 0, den, 1.0), np.nan)
    else:
        raise InvalidInputError(f"unknown method {method!r}; use exact, resliced or bilinear")
    sp = tuple(mr.attrs["spacing"][d] for d in "zyx")
    org = tuple(mr.attrs["origin"][d] for d in "zyx")
    kw = {"dims": ("z", "y", "x"), "spacing": sp, "origin": org, "unit": mr.attrs["unit"]}
    ds = xr.Dataset(
        {"fraction": make_image(frac, **kw), "coverage": make_image(cov, **kw)}  # type: ignore[arg-type]
    )
    ds.attrs["density"] = {**info, "method": method}
    return ds


def _bilinear(
    st: Any, microscopy: str, mri: str, channel: str | int | None, threshold: float | None
) -> tuple[da.Array, da.Array]:
    """The paper's way: trilinear samples of the microscopy at the MRI voxel centres."""
    from bridge_xr.resampling.blocks import map_block

    fp = plan_footprint(st, microscopy, mri)
    mic = read_image(st, microscopy)
    if "c" in mic.dims:
        if channel is None:
            raise InvalidInputError(
                f"{microscopy!r} has channels {list(mic.c.values)}; choose one with `channel`"
            )
        mic = mic.isel(c=channel) if isinstance(channel, int) else mic.sel(c=str(channel))
    mr = read_image(st, mri)
    src = mic.data
    n_mic = np.array(src.shape)
    inv = [(m, not f) for m, f in fp.models[::-1]] or [(LinearModel.identity(), True)]

    def sample(block: np.ndarray, block_info: Any = None) -> np.ndarray:
        from scipy.ndimage import map_coordinates

        loc = block_info[0]["array-location"]
        axes = [
            fp.mri_origin_um[i] + np.arange(a, b) * fp.mri_spacing_um[i]
            for i, (a, b) in enumerate(loc)
        ]
        coords = map_block(inv, axes, 0.01)
        idx = [(coords[i] - fp.mic_origin_um[i]) / fp.mic_spacing_um[i] for i in range(3)]
        ok = np.ones(block.shape, dtype=bool)
        for i in range(3):
            ok &= np.isfinite(idx[i]) & (idx[i] >= -0.5) & (idx[i] <= n_mic[i] - 0.5)
        out = np.stack([np.full(block.shape, np.nan), ok.astype(np.float64)])
        if not ok.any():
            return out
        lo = [max(int(np.floor(idx[i][ok].min())), 0) for i in range(3)]
        hi = [min(int(np.ceil(idx[i][ok].max())) + 2, int(n_mic[i])) for i in range(3)]
        sub = np.asarray(src[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]).astype(np.float64)
        if threshold is not None:
            sub = (sub > threshold).astype(np.float64)
        pts = np.stack([np.clip(idx[i][ok], 0, n_mic[i] - 1) - lo[i] for i in range(3)])
        out[0][ok] = map_coordinates(sub, pts, order=1, mode="nearest")
        return out

    both = mr.data.map_blocks(sample, dtype=np.float64, new_axis=0, chunks=((2,), *mr.data.chunks))
    return both[0], both[1]
