"""Rigid or affine refinement of a stitched tile scan (``bridge stitch --model rigid|affine``).

A translation fits tiles that differ only in where the stage put them. Tiles that also differ
in rotation or magnification (stage wobble, a drifting objective, a swelling gel, a tilted
slide) leave seams that grow along each overlap; no translation removes them. The refinement
starts from the translation solution:

1. Every kept link's overlap (at the registered offset) is cut into up to 4 x 4 blocks of at
   least :data:`MIN_BLOCK` voxels in y and x, and each block is registered by the same windowed
   phase correlation (:func:`~bridge_xr.tiles.pairwise.pair_shift`), within
   :data:`POINT_BOUND` voxels. Each block with quality ≥ ``min_quality`` gives one
   correspondence: its centre in tile ``j`` and the matching point in tile ``i``.
2. ``rigid``: one sparse least-squares problem gives every tile a rotation (small-angle, so
   linear) and a translation in (y, x), ``R_i p_i + t_i = R_j p_j + t_j`` for every
   correspondence, weighted by its quality; z keeps the translation's offset. Correspondences
   alone leave one global map free (shrinking every tile to a point fits them best), so the
   mean rotation is held at zero and the mean position at the translation solution's: the
   layout keeps the stage's scale and orientation. A weak pull (:data:`REGULARISE`) towards
   the translation solution holds a tile without points.
3. ``affine``: the same with a 2-D affine per tile, pulled towards its rigid solution with
   weight :data:`AFFINE_PULL`. The pull is needed: overlaps are narrow strips, and a change of
   magnification *across* a strip (a kink in the layout along a grid line) moves no point in
   it, so without it such modes would be decided by noise. What the strips do see (rotation,
   magnification along them) the points decide.
4. Correspondences with a residual above ``max_residual`` voxels are dropped (half the
   largest residual at a time) and the problem solved again.

Each tile's result is stored as an affine from its intrinsic µm to registered µm; its last
column is the registered position of the tile's first voxel. On a scan without rotation the
refinement adds a little noise (block matches are less precise than whole overlaps; 0.08 ->
0.15 px RMS on the synthetic scans), so translation stays the default.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bridge_xr.tiles.flatfield import apply_flatfield
from bridge_xr.tiles.pairwise import pair_shift
from bridge_xr.tiles.scan import tile_array

#: Least block side (voxels, y and x) of one correspondence.
MIN_BLOCK = 24
#: Largest shift (voxels) of a block from the translation solution.
POINT_BOUND = 4
#: Weight of the pull of the rigid solve towards the translation solution.
REGULARISE = 1e-3
#: Weight of the pull of every tile's affine towards its rigid solution (per µm of tile
#: half-size): holds what narrow overlaps cannot see (a change of magnification across them).
AFFINE_PULL = 0.1


def crop_slices(
    d: np.ndarray, shape_i: tuple[int, ...], shape_j: tuple[int, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Overlap of tile i (at 0) and tile j (at integer offset ``d``) in each tile's indices."""
    si, sj = [], []
    for off, ni, nj in zip(d.astype(int), shape_i, shape_j, strict=True):
        lo, hi = max(0, off), min(ni, off + nj)
        si.append(slice(lo, hi))
        sj.append(slice(lo - off, hi - off))
    return tuple(si), tuple(sj)


def read_crop(
    store: Any, path: str, zyx: tuple[slice, ...], channel: int | None, ff: np.ndarray | None
) -> np.ndarray:
    """One tile's crop of one channel, flat-field corrected when a field is given."""
    arr = tile_array(store, path)
    sel: tuple[Any, ...] = zyx if arr.ndim == 3 else (channel or 0, *zyx)
    block = np.asarray(arr[sel])
    f = None if ff is None else (ff if ff.ndim == 2 else ff[channel or 0])
    return np.asarray(apply_flatfield(block, f, zyx[1], zyx[2]))


def _blocks(n: int) -> list[tuple[int, int]]:
    k = max(1, min(4, n // MIN_BLOCK))
    e = np.linspace(0, n, k + 1).round().astype(int)
    return list(zip(e[:-1].tolist(), e[1:].tolist(), strict=True))


def points_task(
    store: Any,
    pi: str,
    pj: str,
    si: tuple[slice, ...],
    sj: tuple[slice, ...],
    channel: int | None,
    ff: np.ndarray | None,
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Correspondences (voxel in tile i, voxel in tile j, quality) of one overlap's blocks."""
    a = read_crop(store, pi, si, channel, ff)
    b = read_crop(store, pj, sj, channel, ff)
    start_i = np.array([s.start for s in si], float)
    start_j = np.array([s.start for s in sj], float)
    out = []
    for y0, y1 in _blocks(a.shape[-2]):
        for x0, x1 in _blocks(a.shape[-1]):
            r = pair_shift(
                a[..., y0:y1, x0:x1], b[..., y0:y1, x0:x1], bound_px=(0, POINT_BOUND, POINT_BOUND)
            )
            if r.reason:
                continue
            centre = np.array([(a.shape[0] - 1) / 2, (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2])
            out.append((start_i + centre + np.asarray(r.shift_px), start_j + centre, r.quality))
    return out


class _Rows:
    """A sparse least-squares system built row by row."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.rhs: list[float] = []

    def add(self, entries: list[tuple[int, float]], value: float) -> None:
        r = len(self.rhs)
        for c, v in entries:
            self.rows.append(r)
            self.cols.append(c)
            self.vals.append(v)
        self.rhs.append(value)

    def solve(self, n_unknowns: int) -> np.ndarray:
        from scipy import sparse
        from scipy.sparse.linalg import spsolve

        a = sparse.csr_matrix(
            (self.vals, (self.rows, self.cols)), shape=(len(self.rhs), n_unknowns)
        )
        return np.asarray(spsolve((a.T @ a).tocsc(), a.T @ np.asarray(self.rhs)))


def linked_groups(
    n: int, points: list[tuple[int, int, np.ndarray, np.ndarray, float]]
) -> np.ndarray:
    """Connected groups of tiles joined by correspondences (a tile without any: its own)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not points:
        return np.arange(n)
    ij = np.array([(i, j) for i, j, *_ in points])
    adj = coo_matrix((np.ones(len(ij)), (ij[:, 0], ij[:, 1])), shape=(n, n))
    return np.asarray(connected_components(adj, directed=False)[1])


def solve_rigid(
    n: int,
    points: list[tuple[int, int, np.ndarray, np.ndarray, float]],
    target: np.ndarray,
    centre_um: np.ndarray,
    scale_um: float,
) -> np.ndarray:
    """(n, 2, 3) rigid maps (small-angle solve) of ``p - centre`` to registered µm.

    ``target`` (n, 2): each tile centre's translation-solution position. In every group of
    tiles linked by correspondences the mean rotation is zero and the mean centre stays (a
    tile without correspondences keeps its translation solution exactly: were it in another
    group's gauge, its free rotation would let that group turn as a whole).
    """
    eq = _Rows()
    for i, j, p_i, p_j, w in points:  # q_i + th_i J q_i + t_i = q_j + th_j J q_j + t_j
        sw = float(np.sqrt(w))
        qi, qj = p_i - centre_um[i], p_j - centre_um[j]
        jqi, jqj = np.array([-qi[1], qi[0]]), np.array([-qj[1], qj[0]])
        for ax in (0, 1):
            eq.add(
                [
                    (3 * i, sw * jqi[ax]),
                    (3 * i + 1 + ax, sw),
                    (3 * j, -sw * jqj[ax]),
                    (3 * j + 1 + ax, -sw),
                ],
                sw * (qj[ax] - qi[ax]),
            )
    lam, gauge = REGULARISE, 10.0 * scale_um
    for k in range(n):
        eq.add([(3 * k, lam * scale_um)], 0.0)
        for ax in (0, 1):
            eq.add([(3 * k + 1 + ax, lam)], lam * target[k, ax])
    group = linked_groups(n, points)
    for g in np.unique(group):  # each linked group's gauge, as the translation solve's
        ks = [int(v) for v in np.nonzero(group == g)[0]]
        eq.add([(3 * k, gauge / len(ks)) for k in ks], 0.0)
        for ax in (0, 1):
            eq.add([(3 * k + 1 + ax, gauge / len(ks)) for k in ks], gauge * target[ks, ax].mean())
    x = eq.solve(3 * n).reshape(n, 3)
    out = np.zeros((n, 2, 3))
    c, s = np.cos(x[:, 0]), np.sin(x[:, 0])
    out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1] = c, -s, s, c
    out[:, :, 2] = x[:, 1:]
    return out


def solve_affine(
    n: int,
    points: list[tuple[int, int, np.ndarray, np.ndarray, float]],
    prior: np.ndarray,
    centre_um: np.ndarray,
    scale_um: float,
    *,
    pull: float = AFFINE_PULL,
) -> np.ndarray:
    """(n, 2, 3) affines of ``p - centre`` to registered µm, pulled towards ``prior`` (n, 2, 3).

    ``points`` holds ``(i, j, p_i, p_j, weight)`` with ``p`` (y, x) in each tile's intrinsic
    µm. In every linked group the mean affine equals the prior's mean (the gauge).
    """
    eq = _Rows()
    for i, j, p_i, p_j, w in points:
        sw = float(np.sqrt(w))
        qi, qj = p_i - centre_um[i], p_j - centre_um[j]
        for ax in (0, 1):  # y row, then x row: a[ax, 0] q_y + a[ax, 1] q_x + t[ax]
            entries = []
            for k, q, sign in ((i, qi, sw), (j, qj, -sw)):
                base = 6 * k + 3 * ax
                entries += [(base, sign * q[0]), (base + 1, sign * q[1]), (base + 2, sign)]
            eq.add(entries, 0.0)
    gauge = 10.0 * scale_um
    group = linked_groups(n, points)
    for ax in (0, 1):
        for c in range(3):
            weight = pull * (scale_um if c < 2 else 1.0)
            for k in range(n):
                eq.add([(6 * k + 3 * ax + c, weight)], weight * prior[k, ax, c])
            w_g = gauge if c < 2 else 10.0
            for g in np.unique(group):
                ks = [int(v) for v in np.nonzero(group == g)[0]]
                eq.add(
                    [(6 * k + 3 * ax + c, w_g / len(ks)) for k in ks],
                    w_g * prior[ks, ax, c].mean(),
                )
    return eq.solve(6 * n).reshape(n, 2, 3)


def point_residuals(
    affines: np.ndarray,
    points: list[tuple[int, int, np.ndarray, np.ndarray, float]],
    centre_um: np.ndarray,
) -> np.ndarray:
    """|A_i p_i + t_i - A_j p_j - t_j| (µm) of every correspondence."""
    out = []
    for i, j, p_i, p_j, _ in points:
        gi = affines[i, :, :2] @ (p_i - centre_um[i]) + affines[i, :, 2]
        gj = affines[j, :, :2] @ (p_j - centre_um[j]) + affines[j, :, 2]
        out.append(float(np.linalg.norm(gi - gj)))
    return np.asarray(out)


def refine_affine(
    points: list[tuple[int, int, np.ndarray, np.ndarray, float]],
    start_um: np.ndarray,
    shapes: list[tuple[int, ...]],
    spacing_um: np.ndarray,
    *,
    model: str = "affine",
    max_residual_px: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-tile (3, 4) maps (intrinsic µm -> registered µm), kept mask, residuals (voxels).

    ``model`` is ``rigid`` (a rotation per tile) or ``affine`` (the rigid solution, then an
    affine per tile pulled towards it).

    ``points`` use voxel coordinates (z, y, x) of each tile; ``start_um`` is the translation
    solution (n, 3).
    """
    n = len(start_um)
    sp = np.asarray(spacing_um, float)
    px = float(np.mean(sp[1:]))
    centre = np.array([(np.asarray(s[-2:]) - 1) / 2 * sp[1:] for s in shapes])
    pts_um = [(i, j, p_i[1:] * sp[1:], p_j[1:] * sp[1:], w) for i, j, p_i, p_j, w in points]
    scale = float(np.max(centre)) if len(centre) else 1.0
    keep = np.ones(len(points), bool)
    target = start_um[:, 1:] + centre
    while True:
        used = [p for p, k in zip(pts_um, keep, strict=True) if k]
        aff = solve_rigid(n, used, target, centre, scale)
        if model == "affine":
            aff = solve_affine(n, used, aff, centre, scale)
        res = point_residuals(aff, pts_um, centre) / px
        worst = float(res[keep].max()) if keep.any() else 0.0
        if worst <= max_residual_px:
            break
        keep &= res <= max(max_residual_px, 0.5 * worst)
    out = np.zeros((n, 3, 4))
    out[:, 0, 0] = 1.0
    out[:, 0, 3] = start_um[:, 0]
    out[:, 1:, 1:3] = aff[:, :, :2]
    out[:, 1:, 3] = aff[:, :, 2] - np.einsum("kab,kb->ka", aff[:, :, :2], centre)
    return out, keep, res
