"""Where the voxel centres of one output block fall in the moving image: exact or certified.

For a linear chain the centres are mapped exactly (one affine per axis plane). For a forward
TPS the exact spline is evaluated on coarse nodes and interpolated trilinearly in between; every
node cell carries a bound on the interpolation error, and cells whose bound exceeds the caller's
``max_err_um`` are evaluated exactly (:func:`block_error_bound_um` reports the bound left). All
points here are z, y, x micrometres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge_xr.model.pointmaps import LinearModel, Model, ThinPlateSpline, swap_xyz_zyx
from bridge_xr.resampling._kernels import box_voxels, cell_bounds, tps_zyx
from bridge_xr.scene.chains import apply_hops

#: exact TPS nodes every this many micrometres inside a block (then trilinear in between)
COARSE_GRID_UM = 20.0


def _interp_matrix(n: int, nodes: np.ndarray) -> np.ndarray:
    """Dense (n, len(nodes)) linear-interpolation weights from node indices to 0..n-1."""
    w = np.zeros((n, len(nodes)))
    if len(nodes) == 1:
        w[:, 0] = 1.0
        return w
    pos = np.arange(n)
    k = np.clip(np.searchsorted(nodes, pos, side="right") - 1, 0, len(nodes) - 2)
    t = (pos - nodes[k]) / (nodes[k + 1] - nodes[k])
    w[pos, k] = 1 - t
    w[pos, k + 1] = t
    return w


def _cell_bound(
    axes_um: list[np.ndarray],
    node_um: float,
    w_norm: np.ndarray,
    centres_zyx: np.ndarray,
    kernel: str,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Node indices, node coordinates and the interpolation-error bound of every node cell."""
    shape = tuple(len(a) for a in axes_um)
    steps = [
        max(1, int(node_um // max(abs(a[1] - a[0]), 1e-12))) if len(a) > 1 else 1 for a in axes_um
    ]
    node_idx = [
        np.unique(np.r_[np.arange(0, n, s), n - 1]) for n, s in zip(shape, steps, strict=True)
    ]
    nodes = [a[i] for a, i in zip(axes_um, node_idx, strict=True)]
    cells = [
        np.stack([nd[:-1], nd[1:]], axis=1) if len(nd) > 1 else np.stack([nd, nd], axis=1)
        for nd in nodes
    ]
    # along an axis where every voxel is a node, voxels sit on node planes: no interpolation
    # error comes from that axis (the trilinear weights reduce to the face's bilinear ones)
    interp = np.array([len(i) < n for i, n in zip(node_idx, shape, strict=True)], dtype=float)
    bound = cell_bounds(
        *(0.5 * (c[:, 0] + c[:, 1]) for c in cells),
        *(c[:, 1] - c[:, 0] for c in cells),
        interp,
        np.ascontiguousarray(centres_zyx, dtype=np.float64),
        np.ascontiguousarray(w_norm, dtype=np.float64),
        kernel == "r",
    )  # type: ignore[call-arg]
    return node_idx, nodes, bound


def _tps_cells(
    tps: ThinPlateSpline, axes_um: list[np.ndarray], max_err_um: float | None
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, float]:
    """Node indices, node coordinates, per-cell error bounds and the threshold in use.

    The node spacing is refined (20, 10, 5, 2.5 µm) until at most 2 % of the cells exceed
    ``max_err_um``; cells above it are evaluated exactly by the caller. ``None``: nodes every
    5 µm, bounds zeroed (no certification), threshold 1 µm (never reached).
    """
    w_norm = np.linalg.norm(tps.weights, axis=1)
    centres_zyx = swap_xyz_zyx(tps.centres)
    if max_err_um is None:
        node_idx, nodes, bound = _cell_bound(
            axes_um, COARSE_GRID_UM / 4, w_norm, centres_zyx, tps.kernel
        )
        return node_idx, nodes, np.zeros_like(bound), 1.0
    for node_um in (COARSE_GRID_UM, COARSE_GRID_UM / 2, COARSE_GRID_UM / 4, COARSE_GRID_UM / 8):
        node_idx, nodes, bound = _cell_bound(axes_um, node_um, w_norm, centres_zyx, tps.kernel)
        if float(np.mean(bound > max_err_um)) <= 0.02:
            break
    return node_idx, nodes, bound, max_err_um


def block_error_bound_um(
    models: list[tuple[Model, bool]], axes_um: list[np.ndarray], max_err_um: float | None
) -> float:
    """Certified bound (µm) on how far a block's mapped voxel centres can be from the exact chain.

    Only a forward TPS as the first hop is interpolated (exact nodes + trilinear): its bound is
    the largest cell bound among the cells left interpolated (cells above ``max_err_um`` are
    evaluated exactly). Linear hops, inverse TPS hops (Newton to a 1e-9 µm residual) and every
    later hop are evaluated exactly: 0. NaN when uncertified (``max_err_um=None``).
    """
    model, fwd = models[0]
    if not (isinstance(model, ThinPlateSpline) and fwd):
        return 0.0
    if max_err_um is None:
        return float("nan")
    _, _, bound, thr = _tps_cells(model, axes_um, max_err_um)
    kept = bound[bound <= thr]
    return float(kept.max()) if kept.size else 0.0


@dataclass(frozen=True)
class BlockMap:
    """Where a block's voxel centres go, in the cheapest exact-or-certified form.

    Exactly one of: ``affine`` (3x4, zyx µm of the block's voxel ``(k, j, i)`` -> moving zyx
    µm, for an all-linear chain); ``nodes`` (per-axis node voxel indices and (3, Nz, Ny, Nx)
    moving µm, trilinear in between, then ``exact_at`` voxels (index arrays) at ``exact_um``
    (n, 3)) for a forward TPS followed by linear hops; ``dense`` (3, nz, ny, nx) moving µm.
    """

    shape: tuple[int, ...]
    affine: np.ndarray | None = None
    node_idx: list[np.ndarray] | None = None
    nodes: np.ndarray | None = None
    exact_at: tuple[np.ndarray, ...] | None = None
    exact_um: np.ndarray | None = None
    dense: np.ndarray | None = None

    def densify(self) -> np.ndarray:
        """(3, nz, ny, nx) moving zyx µm of every voxel centre."""
        if self.dense is not None:
            return self.dense
        if self.affine is not None:
            h = self.affine
            k, j, i = (np.arange(n, dtype=float) for n in self.shape)
            return (
                h[:, 0, None, None, None] * k[None, :, None, None]
                + h[:, 1, None, None, None] * j[None, None, :, None]
                + h[:, 2, None, None, None] * i[None, None, None, :]
                + h[:, 3, None, None, None]
            )
        assert self.node_idx is not None
        assert self.nodes is not None
        wz, wy, wx = (_interp_matrix(n, i) for n, i in zip(self.shape, self.node_idx, strict=True))
        out = np.einsum("zi,yj,xk,cijk->czyx", wz, wy, wx, self.nodes, optimize=True)
        if self.exact_at is not None and self.exact_um is not None:
            for c in range(3):
                out[c][self.exact_at] = self.exact_um[:, c]
        return out


def composite_linear(models: list[tuple[Model, bool]]) -> np.ndarray | None:
    """The 4x4 zyx µm matrix of an all-linear chain (identity for none), or None."""
    total = np.eye(4)
    for model, fwd in models:
        if not isinstance(model, LinearModel):
            return None
        total = (model if fwd else model.inverse()).to_affine() @ total
    return total


def _exact_voxels(
    shape: tuple[int, ...], node_idx: list[np.ndarray], bad_cells: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Voxels lying in a node cell flagged ``bad``, its boundary nodes included.

    A node cell spans node ``c`` to node ``c + 1`` inclusive along each axis (a voxel on a node
    plane belongs to both cells); an axis with a single node has one cell, that node. A voxel
    on the face two bad cells share is listed for each (evaluating it twice costs less than
    finding the repeats).
    """
    ends = [i[1:] if len(i) > 1 else i for i in node_idx]
    cells = np.argwhere(bad_cells)
    if not len(cells):
        return tuple(np.zeros(0, dtype=np.intp) for _ in shape)
    lo = np.stack([node_idx[d][cells[:, d]] for d in range(3)], axis=1).astype(np.int64)
    hi = np.stack([ends[d][cells[:, d]] for d in range(3)], axis=1).astype(np.int64)
    zyx = box_voxels(lo, hi)
    return zyx[0], zyx[1], zyx[2]


def _tps_nodes(
    tps: ThinPlateSpline,
    axes_um: list[np.ndarray],
    max_err_um: float | None,
    then: np.ndarray | None = None,
) -> BlockMap:
    """TPS (fixed -> moving, zyx µm) of a regular block grid, within ``max_err_um`` of exact.

    Exact evaluation on nodes every ~``COARSE_GRID_UM``; separable trilinear in between. The
    affine part is linear and interpolated exactly; for the kernel part each node cell gets the
    bound ``sum_i |w_i| * (hz^2 + hy^2 + hx^2) / 8 * max|U''(r_i)|`` over the cell, and voxels of
    cells whose bound exceeds ``max_err_um`` are evaluated exactly. ``max_err_um=None``: exact
    nodes every ``COARSE_GRID_UM / 4`` and trilinear, no certification (for nearest-neighbour
    reslicing, whose own rounding is half a voxel). ``then``: a 4x4 zyx µm matrix applied after
    the TPS (linear later hops: it commutes with the interpolation, whose weights sum to 1).
    """
    shape = tuple(len(a) for a in axes_um)
    node_idx, nodes, bound, max_err_um = _tps_cells(tps, axes_um, max_err_um)
    nz, ny, nx = np.meshgrid(*nodes, indexing="ij")
    node_pts = np.stack([nz.ravel(), ny.ravel(), nx.ravel()], axis=1)
    node_val = tps_zyx(tps, node_pts)
    exact_at, exact = None, None
    bad_cells = bound > max_err_um
    if bad_cells.any():
        exact_at = _exact_voxels(shape, node_idx, bad_cells)
        pts = np.stack([axes_um[d][exact_at[d]] for d in range(3)], axis=1)
        exact = tps_zyx(tps, pts)
    if then is not None:
        node_val = node_val @ then[:3, :3].T + then[:3, 3]
        if exact is not None:
            exact = exact @ then[:3, :3].T + then[:3, 3]
    return BlockMap(
        shape=shape,
        node_idx=node_idx,
        nodes=node_val.T.reshape(3, *nz.shape),
        exact_at=exact_at,
        exact_um=exact,
    )


def _tps_block(
    tps: ThinPlateSpline, axes_um: list[np.ndarray], max_err_um: float | None
) -> np.ndarray:
    """:func:`_tps_nodes` at every voxel: (3, nz, ny, nx) zyx µm."""
    return _tps_nodes(tps, axes_um, max_err_um).densify()


def block_map(
    models: list[tuple[Model, bool]], axes: list[np.ndarray], max_err_um: float | None
) -> BlockMap:
    """Map a block's voxel centres (zyx µm axes, regular) through the hops, as a :class:`BlockMap`."""
    shape = tuple(len(a) for a in axes)
    model, fwd = models[0]
    later = composite_linear(models[1:])
    whole = composite_linear(models)
    if whole is not None:
        # block voxel (k, j, i) -> zyx µm -> moving zyx µm
        step = np.array([a[1] - a[0] if len(a) > 1 else 0.0 for a in axes])
        to_um = np.eye(4)
        to_um[:3, :3] = np.diag(step)
        to_um[:3, 3] = [a[0] for a in axes]
        return BlockMap(shape=shape, affine=(whole @ to_um)[:3])
    if isinstance(model, ThinPlateSpline) and fwd and later is not None:
        return _tps_nodes(model, axes, max_err_um, None if len(models) == 1 else later)
    return BlockMap(shape=shape, dense=map_block(models, axes, max_err_um))


def map_block(
    models: list[tuple[Model, bool]], axes: list[np.ndarray], max_err_um: float | None
) -> np.ndarray:
    """Map a block's voxel centres (zyx µm axes) through the hops; returns (3, nz, ny, nx) zyx µm."""
    shape = tuple(len(a) for a in axes)
    model, fwd = models[0]
    if isinstance(model, ThinPlateSpline) and fwd:
        coords = _tps_block(model, axes, max_err_um)
    elif isinstance(model, LinearModel):
        hz = model.to_affine() if fwd else model.inverse().to_affine()
        coords = np.empty((3, *shape))
        for c in range(3):
            coords[c] = (
                hz[c, 0] * axes[0][:, None, None]
                + hz[c, 1] * axes[1][None, :, None]
                + hz[c, 2] * axes[2][None, None, :]
                + hz[c, 3]
            )
    else:
        grid = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
        coords = model.transform_points(grid, inverse=not fwd, strict=False).T.reshape(3, *shape)
    if len(models) > 1:
        moved = apply_hops(models[1:], coords.reshape(3, -1).T)
        coords = moved.T.reshape(3, *shape)
    return coords
