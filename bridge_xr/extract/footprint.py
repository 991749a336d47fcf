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

Through a TPS, blocks read chunk by chunk run **sparse**: a microscopy voxel of value 0 adds
nothing to the value-weighted sums, and its volume is needed only where the MRI voxel is not
simply covered a whole number of times. Away from the image of the volume's six faces, and
from node cells that might fold (each cell is certified from its nodes alone: every Kuhn
tetrahedron's orientation is a multilinear function of the cell's edges, bounded by their mean
and spread), the tetrahedra covering a point all have one orientation and their number is
constant on each connected region of such MRI voxels. Zero voxels are summed only where they
reach the faces' image or a lattice of witness voxels; each region then takes the integer count
its witnesses show, and regions that are unsure (a fold, witnesses that disagree or none) are
summed again in full. The result equals the dense sums to rounding.

``method="bilinear"`` reproduces the paper (2P downsampled to the MRI grid by bilinear
interpolation): the microscopy is sampled by trilinear interpolation at each MRI voxel centre.

Everything is lazy: one dask task per microscopy block returns that block's contribution to the
MRI bounding box of the microscopy footprint, and the contributions are summed by a tree reduction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bridge_xr.errors import InvalidInputError
from bridge_xr.io.read import read_image
from bridge_xr.model.pointmaps import Model
from bridge_xr.model.units import conversion_factor
from bridge_xr.resampling.blocks import composite_linear
from bridge_xr.scene.chains import apply_hops, models_of
from bridge_xr.scene.mapping import graph_of

Method = Literal["exact", "resliced", "bilinear"]

#: exact corner-mapping nodes every this many micrometres (trilinear in between)
NODE_UM = 10.0


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
    # (3, 4) micro index -> MRI index of an all-linear chain (MRI voxel v spans [v, v + 1))
    index_affine: np.ndarray | None = None


def _chain(store: Any, microscopy: str, mri: str) -> list[tuple[Model, bool]]:
    return models_of(graph_of(store).chain(microscopy, mri))


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
    lin = composite_linear(models)
    if lin is not None:
        # microscopy index -> MRI index (voxel v spans [v, v + 1) in MRI index units)
        a = np.diag(1 / fp.mri_spacing_um) @ lin[:3, :3] @ np.diag(fp.mic_spacing_um)
        b = (lin[:3, :3] @ fp.mic_origin_um + lin[:3, 3] - fp.mri_origin_um) / fp.mri_spacing_um
        fp = dataclasses.replace(fp, index_affine=np.c_[a, b + 0.5])
        off = a - np.diag(np.diag(a))
        if np.abs(off).max() <= 1e-12 * np.abs(np.diag(a)).max():
            fp = dataclasses.replace(fp, diagonal=np.stack([np.diag(a), b + 0.5]))
    return fp


def node_indices(
    fp: Footprint, shape: tuple[int, int, int], node_um: float = NODE_UM
) -> list[np.ndarray]:
    """Per axis, the corner indices of the exactly mapped nodes (every ~``node_um``, both ends).

    Corner ``j`` of axis ``a`` sits at microscopy index ``j - 0.5`` (``j = 0 .. n``).
    """
    steps = [max(1, int(node_um // s)) for s in fp.mic_spacing_um]
    return [np.unique(np.r_[np.arange(0, n + 1, s), n]) for n, s in zip(shape, steps, strict=True)]


def map_nodes(fp: Footprint, idx: list[np.ndarray]) -> np.ndarray:
    """(3, *lengths) MRI index zyx of the corners at indices ``idx`` (per axis), mapped exactly.

    Each node's value depends on that node alone, whichever grid it is mapped with (points are
    mapped one by one): nodes shared by two blocks' grids agree to rounding.
    """
    lengths = tuple(len(i) for i in idx)
    if 0 in lengths:
        return np.empty((3, *lengths))
    axes_um = [fp.mic_origin_um[a] + (idx[a] - 0.5) * fp.mic_spacing_um[a] for a in range(3)]
    gz, gy, gx = np.meshgrid(*axes_um, indexing="ij")
    zyx = np.stack([gz.ravel(), gy.ravel(), gx.ravel()], axis=1)
    mapped = apply_hops(fp.models, zyx)  # zyx µm in the MRI
    mri_idx = (mapped - fp.mri_origin_um) / fp.mri_spacing_um + 0.5
    return mri_idx.T.reshape(3, *lengths)


def corner_nodes(
    fp: Footprint, shape: tuple[int, int, int], node_um: float = NODE_UM
) -> tuple[list[np.ndarray], np.ndarray]:
    """Exactly mapped corner nodes: node corner indices per axis, and (3, *nodes) MRI index zyx.

    Corner ``j`` of axis ``a`` sits at microscopy index ``j - 0.5`` (``j = 0 .. n``).
    """
    idx = node_indices(fp, shape, node_um)
    return idx, map_nodes(fp, idx)


def face_nodes(fp: Footprint, idx: list[np.ndarray]) -> tuple[np.ndarray, float, list[np.ndarray]]:
    """(3, N) MRI index zyx of the nodes on the volume's six faces, their largest spacing, grids.

    A map without folds takes the volume's inside to the inside of its boundary's image, so
    these bound the whole footprint to within that spacing (the longest edge between two
    neighbouring face nodes, in MRI voxels): the bounding box without mapping every node.
    The grids: each face's nodes as mapped, (3, *lengths) with length 1 along its own axis
    (z first, then z last, y first, ...).
    """
    faces, step, grids = [], 0.0, []
    for a in range(3):
        for end in (idx[a][:1], idx[a][-1:]):
            face = map_nodes(fp, [end if b == a else idx[b] for b in range(3)])
            for b in range(3):
                if b != a and face.shape[1 + b] > 1:
                    edge = np.linalg.norm(np.diff(face, axis=1 + b), axis=0)
                    step = max(step, float(np.nanmax(edge, initial=0.0)))
            faces.append(face.reshape(3, -1))
            grids.append(face)
    return np.concatenate(faces, axis=1), step, grids


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
