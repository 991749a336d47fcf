"""Exact footprint integration for axis-aligned linear chains: three 1-D overlap matrices."""

from __future__ import annotations

from typing import Any

import numpy as np


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
