"""The affine footprint kernel's closed forms against clipping every tetrahedron, and exact sums."""

from __future__ import annotations

import fractions
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from bridge_xr.extract._affine import (
    _below,
    _face_tables,
    _pair_tables,
    general_block_affine,
)
from bridge_xr.extract._kuhn import _KUHN_CORNER, tet_into_cells


def _clipped(values: np.ndarray, index_map: np.ndarray, lo: np.ndarray, shape: tuple) -> np.ndarray:
    """Every voxel's 6 tetrahedra split on a stack at every MRI face they cross (no closed form)."""
    out = np.zeros((2, *shape))
    a, b = index_map[:, :3], index_map[:, 3]
    bits = np.array([[(q >> 2) & 1, (q >> 1) & 1, q & 1] for q in range(8)], dtype=float)
    scratch = (np.empty((4, 3)), np.empty((8, 3)), np.empty(8))
    for z, y, x in np.ndindex(*values.shape):
        c8 = (np.array([z, y, x]) - 0.5 + bits) @ a.T + b
        for tet in c8[_KUHN_CORNER]:
            tet_into_cells(tet.copy(), values[z, y, x], lo, np.array(shape), out,
                           np.empty((64, 4, 3)), *scratch)  # fmt: skip
    return out


def _about(axis: int, angle: float) -> np.ndarray:
    vec = np.zeros(3)
    vec[axis] = angle
    return Rotation.from_rotvec(vec).as_matrix()


_MAPS = {
    # voxels a third of an MRI voxel wide: many cross two and three faces
    "about z": _about(0, 0.4) @ np.diag([0.35, 0.3, 0.33]),
    "about y": _about(1, -0.7) @ np.diag([0.3, 0.35, 0.3]),
    "oblique": Rotation.from_rotvec([0.2, 0.3, 0.1]).as_matrix() @ np.diag([0.35, 0.3, 0.3]),
    "oblique, flipped": Rotation.from_rotvec([-0.9, 0.4, 1.3]).as_matrix()
    @ np.diag([-0.3, 0.3, 0.4]),
    "sheared": Rotation.from_rotvec([0.5, -0.2, 0.8]).as_matrix()
    @ np.array([[0.3, 0.1, 0.0], [0.0, 0.3, -0.12], [0.05, 0.0, 0.35]]),
    "nearly aligned": Rotation.from_rotvec([1e-7, -2e-7, 3e-8]).as_matrix()
    @ np.diag([0.3, 0.4, 0.35]),
    "slightly turned": Rotation.from_rotvec([2e-5, -1e-5, 3e-5]).as_matrix()
    @ np.diag([0.3, 0.4, 0.35]),
    "axes swapped": np.array([[0.0, 0.0, 0.31], [0.0, -0.37, 0.0], [0.33, 0.0, 0.0]]),
    "aligned": np.diag([0.31, 0.37, 0.33]),
    # coarser than the MRI: voxels crossing two faces of one axis go to the tetrahedra
    "wider than an MRI voxel": Rotation.from_rotvec([0.3, 0.2, -0.4]).as_matrix()
    @ np.diag([1.3, 1.7, 0.9]),
    "two edges on one face": np.array([[0.3, 0.2, 0.0], [0.0, 0.0, 0.35], [-0.1, 0.3, 0.0]]),
}


@pytest.mark.parametrize("name", list(_MAPS))
def test_affine_kernel_equals_clipping_every_tetrahedron(name) -> None:
    rng = np.random.default_rng(len(name))
    a = _MAPS[name]
    values = rng.uniform(0, 5, size=(6, 7, 8))
    for offset in rng.uniform(-1, 1, size=(3, 3)):
        index_map = np.c_[a, offset + 3.0]
        lo, shape = np.array([1, 1, 1]), (5, 6, 6)  # the block reaches past it: cut at its edge
        ref = _clipped(values, index_map, lo, shape)
        got = general_block_affine(values, index_map, (0, 0, 0), lo, shape)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
        assert ref[1].sum() > 10 * abs(np.linalg.det(a))
        # and a block starting inside the image
        sub = np.ascontiguousarray(values[2:, 3:, 1:])
        ref = _clipped(sub, np.c_[a, index_map[:, 3] + a @ [2, 3, 1]], lo, shape)
        got = general_block_affine(sub, index_map, (2, 3, 1), lo, shape)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_the_maps_take_every_closed_form() -> None:
    # which closed form each map's two- and three-face voxels take: the test above covers each
    modes = {n: _pair_tables(np.where(np.abs(a) > 1e-12 * np.abs(a).max(), a, 0.0))
             for n, a in _MAPS.items()}  # fmt: skip
    assert list(modes["about z"][0]) == [0, 0, 1, 4]  # z independent of y, x; y, x share 2 edges
    assert list(modes["aligned"][0]) == [0, 0, 0, 4]
    assert list(modes["oblique"][0]) == [3, 3, 3, 3]  # all swept along an edge
    assert list(modes["two edges on one face"][0]) == [0, 1, 0, 4]
    swept = [m for m in modes.values() if m[0][3] == 3]
    assert any(m[1][3] >= 0 for m in swept)  # a face replaced by its other side (three)
    assert any((m[1][:3] >= 0).any() for m in modes.values())  # and of two
    assert (modes["nearly aligned"][0] == 2).all()  # no edge climbs steeply: the tetrahedra
    assert (modes["slightly turned"][0] == 3).all()  # steep slopes in the swept form


def _exact_below(w: list[float], t: fractions.Fraction) -> fractions.Fraction:
    """``P(w . u < t)`` by the defining sum, in exact arithmetic."""
    ws = [fractions.Fraction(v) for v in w if v != 0]
    d = len(ws)
    total = fractions.Fraction(0)
    for s in range(2**d):
        knot = sum((ws[i] for i in range(d) if s >> i & 1), fractions.Fraction(0))
        if t > knot:
            total += (-1) ** bin(s).count("1") * (t - knot) ** d
    return total / (math.factorial(d) * math.prod(ws))


@pytest.mark.parametrize(
    "widths",
    [(0.3, 0.2, 0.1), (0.25, 0.0, 0.1), (0.0, 0.4, 0.0), (0.3, 1e-9, 0.2), (0.2, 0.2, 0.2),
     (-0.3, 0.1, -0.05), (1e-7, 1e-7, 0.3)],
)  # fmt: skip
def test_fraction_below_a_face_is_exact_to_rounding(widths) -> None:
    # the pieces expanded once, evaluated by Horner: against the defining alternating sum in
    # exact rational arithmetic (which in floats would cancel for unequal widths)
    h = np.zeros((3, 3))
    h[1] = widths
    knots, coef, neg = _face_tables(tuple(h.ravel().tolist()))
    span = float(np.abs(h[1]).sum())
    for r in np.linspace(neg[1] - 0.1 * span, neg[1] + 1.1 * span, 301):
        ref = float(_exact_below(list(np.abs(h[1])), fractions.Fraction(float(r - neg[1]))))
        assert abs(_below(1, r, 1.0, knots, coef, neg) - ref) < 1e-14, r


def test_sums_are_exact_where_the_faces_stay_level() -> None:
    # an aligned and a z-rotated map: whole runs of voxels crossing a face share one fraction;
    # the total volume and value are kept exactly
    rng = np.random.default_rng(2)
    values = rng.uniform(0, 1, size=(9, 40, 60))
    for a in (np.diag([0.3, 0.05, 0.04]), _about(0, 0.25) @ np.diag([0.3, 0.05, 0.04])):
        index_map = np.c_[a, [2.2, 3.1, 4.3]]
        lo, shape = np.array([-5, -5, -5]), (20, 20, 20)
        got = general_block_affine(values, index_map, (0, 0, 0), lo, shape)
        vol = abs(np.linalg.det(a))
        assert got[1].sum() == pytest.approx(values.size * vol, rel=1e-12)
        assert got[0].sum() == pytest.approx(values.sum() * vol, rel=1e-12)
        sub = np.ascontiguousarray(values[:, :12, :15])
        np.testing.assert_allclose(general_block_affine(sub, index_map, (0, 0, 0), lo, shape),
                                   _clipped(sub, index_map, lo, shape), rtol=1e-9, atol=1e-12)  # fmt: skip
