"""Exact footprint integration for axis-aligned linear chains: three 1-D overlap matrices.

Where every microscopy voxel is at most one MRI voxel long on each axis (the usual case: 1-3 µm
pixels into 25-100 µm voxels) a compiled kernel does it in one pass over the block: each voxel
lies in one MRI cell per axis, or straddles two with known lengths, so each x row is summed into
a row of cell totals and that row is added to the (at most four) MRI rows its (z, y) touches.
Otherwise the three sparse products of :func:`_overlap_matrix`.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np


def _axis_cells(
    scale: float, offset: float, k_lo: int, n: int, first: int, n_out: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Cell (relative to ``first``) and overlap lengths with it and the next, per voxel.

    None when a voxel is longer than one cell (it could touch three).
    """
    k = np.arange(k_lo, k_lo + n)
    a = scale * (k - 0.5) + offset
    b = scale * (k + 0.5) + offset
    left, right = np.minimum(a, b), np.maximum(a, b)
    c0 = np.floor(left)
    if np.any(right > c0 + 2):
        return None
    w1 = np.maximum(right - (c0 + 1), 0.0)
    w0 = (right - left) - w1
    cell = (c0 - first).astype(np.int64)
    # parts in cells outside the box weigh nothing (the kernel never writes there)
    w0 = np.where((cell >= 0) & (cell < n_out), w0, 0.0)
    w1 = np.where((cell + 1 >= 0) & (cell + 1 < n_out), w1, 0.0)
    return cell, w0, w1


def _whole(w0: np.ndarray, w1: np.ndarray, length: float) -> np.ndarray:
    """Voxels wholly inside one cell of the box: their full ``length`` in their first cell.

    :func:`_axis_cells` gives a part in a cell outside the box no length.
    """
    return (w1 == 0) & np.isclose(w0, length, rtol=1e-12, atol=0)


def _x_runs(
    cell: np.ndarray, w0: np.ndarray, w1: np.ndarray, length: float
) -> tuple[np.ndarray, ...]:
    """Runs of whole voxels in one cell (start, stop, cell), and the other voxels' indices.

    A row's sum into its cells is then integer segment sums times the voxel length, plus the
    few straddling (or partly outside) voxels with their own two lengths.
    """
    whole = _whole(w0, w1, length)
    idx = np.nonzero(whole)[0]
    if idx.size:
        brk = np.nonzero((np.diff(idx) != 1) | (np.diff(cell[idx]) != 0))[0] + 1
        starts = idx[np.r_[0, brk]]
        stops = idx[np.r_[brk - 1, idx.size - 1]] + 1
    else:
        starts = stops = np.zeros(0, dtype=np.int64)
    return (starts.astype(np.int64), stops.astype(np.int64), cell[starts].astype(np.int64),
            np.nonzero(~whole)[0].astype(np.int64))  # fmt: skip


@nb.njit(
    inline="always", nogil=True, cache=True, boundscheck=False, fastmath={"reassoc", "contract"}
)
def _x_pass(
    row: Any, cx: Any, x0: Any, x1: Any, starts: Any, stops: Any, run_cell: Any, special: Any,
    length: float, acc: Any,
) -> None:  # fmt: skip
    """``acc[c + 1]`` = the x row's sum into cell ``c`` (cells -1 .. n_x: edge parts off the box).

    Integer segment sums over the runs of whole voxels (exact in any order), times ``length``;
    then the ``special`` voxels by their own two lengths.
    """
    acc[:] = 0.0
    for r in range(starts.shape[0]):
        tot = 0
        for i in range(starts[r], stops[r]):
            tot += row[i]
        acc[run_cell[r] + 1] += tot * length
    for m in range(special.shape[0]):
        i = special[m]
        v = float(row[i])
        c = cx[i] + 1
        acc[c] += v * x0[i]
        acc[c + 1] += v * x1[i]


@nb.njit(inline="always", nogil=True, cache=True, boundscheck=False)
def _add_row(dst: Any, cov: Any, w: float, acc: Any, ones: Any) -> None:
    # same operations in the same order: a full voxel's fraction is 1.0
    for c in range(dst.shape[0]):
        dst[c] += w * acc[c + 1]
        cov[c] += w * ones[c + 1]


@nb.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc", "contract"})
def _separable_kernel(
    values: Any, cz: Any, z0: Any, z1: Any, cy: Any, y0: Any, y1: Any, cx: Any, x0: Any, x1: Any,
    starts: Any, stops: Any, run_cell: Any, special: Any, length: float, whole_z: Any,
    whole_y: Any, w_whole: float, grp: Any, out: Any,
) -> None:  # fmt: skip
    """Add ``sum_kji wz[k, Z] wy[j, Y] wx[i, X] values[k, j, i]`` to ``out[0, Z, Y, X]``.

    Two cells per axis; ``out[1]`` gets the same for values of one (the volume).

    x: integer sums over runs of whole voxels (``starts``/``stops``/``run_cell``, each voxel
    ``length`` long) plus the ``special`` voxels by their own lengths (``x0``, ``x1``).

    Rows whole in one MRI cell in z and y (``whole_z[k]`` and ``whole_y[j]``: most of them)
    weigh ``w_whole`` each: with integer values and a ``grp`` of shape ``(n_z, n_y,
    values.shape[2])``, they are first added up per cell as integers (one vectorised add a
    voxel) and the x sums done once per cell; a ``grp`` of size 0 does every row on its own.
    """
    n_z, n_y, n_x = out.shape[1:]
    acc = np.zeros(n_x + 2)  # cells -1 .. n_x: the edge voxels' outside parts land off the box
    ones = np.zeros(n_x + 2)  # the same row sums for a row of ones: the volume (coverage)
    for r in range(starts.shape[0]):
        ones[run_cell[r] + 1] += float(stops[r] - starts[r]) * length
    for m in range(special.shape[0]):
        i = special[m]
        ones[cx[i] + 1] += x0[i]
        ones[cx[i] + 2] += x1[i]
    grouped = grp.size > 0
    n_rows = np.zeros((n_z, n_y), np.int64)
    for k in range(values.shape[0]):
        in_z = grouped and whole_z[k]
        for j in range(values.shape[1]):
            row = values[k, j]
            if in_z and whole_y[j]:
                g = grp[cz[k], cy[j]]
                for i in range(row.shape[0]):
                    g[i] += row[i]
                n_rows[cz[k], cy[j]] += 1
                continue
            _x_pass(row, cx, x0, x1, starts, stops, run_cell, special, length, acc)
            for dz in range(2):
                zc = cz[k] + dz
                wz = z0[k] if dz == 0 else z1[k]
                if wz == 0.0 or zc < 0 or zc >= n_z:
                    continue
                for dy in range(2):
                    yc = cy[j] + dy
                    w = wz * (y0[j] if dy == 0 else y1[j])
                    if w == 0.0 or yc < 0 or yc >= n_y:
                        continue
                    _add_row(out[0, zc, yc], out[1, zc, yc], w, acc, ones)
    if not grouped:
        return
    count = np.empty(values.shape[2], np.int64)
    ones_n = np.zeros(n_x + 2)
    for zc in range(n_z):
        for yc in range(n_y):
            n = n_rows[zc, yc]
            if n == 0:
                continue
            _x_pass(grp[zc, yc], cx, x0, x1, starts, stops, run_cell, special, length, acc)
            count[:] = n  # the volume of those n rows: the same sums over a row of n
            _x_pass(count, cx, x0, x1, starts, stops, run_cell, special, length, ones_n)
            _add_row(out[0, zc, yc], out[1, zc, yc], w_whole, acc, ones_n)


def _touched(
    scale: float, offset: float, k_lo: int, k_hi: int, i_lo: int, i_hi: int
) -> tuple[int, int]:
    """The MRI voxels ``[first, last)`` that microscopy voxels ``k_lo .. k_hi - 1`` touch.

    Clipped to ``[i_lo, i_hi)``: the rows of :func:`_overlap_matrix`.
    """
    ends = scale * (np.array([k_lo, k_hi - 1]) + np.array([[-0.5], [0.5]])) + offset
    return max(int(np.floor(ends.min())), i_lo), min(int(np.ceil(ends.max())), i_hi)


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
    first, last = _touched(scale, offset, k_lo, k_hi, i_lo, i_hi)
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
    spans = [
        (diagonal[0, a], diagonal[1, a], lo[a], lo[a] + values.shape[a], int(bbox_lo[a]),
         int(bbox_lo[a]) + bbox_shape[a])
        for a in range(3)
    ]  # fmt: skip
    touched = [_touched(*span) for span in spans]
    firsts = [f for f, _ in touched]
    n_z, n_y, n_x = (max(b - f, 0) for f, b in touched)
    if min(n_z, n_y, n_x) == 0:
        return out
    rel = [f - int(b) for f, b in zip(firsts, bbox_lo, strict=True)]
    sl = tuple(slice(r, r + n) for r, n in zip(rel, (n_z, n_y, n_x), strict=True))
    cells = [
        _axis_cells(diagonal[0, a], diagonal[1, a], lo[a], values.shape[a], firsts[a], n)
        for a, n in enumerate((n_z, n_y, n_x))
    ]
    cz, cy, cx = cells
    if cz is not None and cy is not None and cx is not None:
        s = np.zeros((2, n_z, n_y, n_x))
        vals = values.view(np.uint8) if values.dtype == np.bool_ else values
        len_z, len_y, length = (abs(float(v)) for v in diagonal[0])
        w_whole = len_z * len_y
        # integer voxels of at most 16 bits are added up per MRI row in int32 first
        small_int = vals.dtype.kind in "ui" and vals.dtype.itemsize <= 2
        grp = np.zeros((n_z, n_y, nx) if small_int else (0, 0, 0), dtype=np.int32)
        kernel: Any = _separable_kernel
        whole_z = _whole(cz[1], cz[2], len_z)
        whole_y = _whole(cy[1], cy[2], len_y)
        kernel(vals, *cz, *cy, *cx, *_x_runs(*cx, length), length, whole_z, whole_y, w_whole, grp,
               s)  # fmt: skip
        out[(slice(None), *sl)] = s
        return out
    ws = [_overlap_matrix(*span)[0] for span in spans]
    out[1][sl] = np.einsum(
        "i,j,k->ijk",
        np.asarray(ws[0].sum(axis=1)).ravel(),
        np.asarray(ws[1].sum(axis=1)).ravel(),
        np.asarray(ws[2].sum(axis=1)).ravel(),
    )
    # y first, on the full data: segment sums over whole x rows (integers stay integers, no float
    # copy of the block); then x (one small GEMM) and z (sparse) on data ~20x smaller
    r = _segment_sum_y(values, diagonal[0, 1], diagonal[1, 1], lo[1], firsts[1], n_y)
    if r is None:  # microscopy voxels wider than an MRI voxel in y: the plain sparse product
        v = values.astype(np.float32).transpose(1, 0, 2).reshape(ny, nz * nx)
        r = np.asarray(ws[1] @ v).reshape(n_y, nz, nx).transpose(1, 0, 2)
    s = r.reshape(nz * n_y, nx) @ ws[2].toarray().astype(np.float32).T  # (z*Y, X)
    s = s.reshape(nz, n_y * n_x)
    out[0][sl] = np.asarray(ws[0] @ s).reshape(n_z, n_y, n_x)  # (Z, Y, X)
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
