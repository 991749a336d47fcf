"""Exact footprint integration against analytic per-voxel fractions (slabs and boxes)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation
from zarr.storage import LocalStore, MemoryStore

from bridge_xr.extract._kuhn import _KUHN, tet_into_cells
from bridge_xr.extract.densities import density, footprint_sums
from bridge_xr.io.subject import add_image
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.model.pointmaps import LinearModel, fit
from bridge_xr.register.registration import register

MRI_SP_MM = 0.025
MRI_SHAPE = (6, 8, 8)


def _meta(path, modality, kind="image"):
    return ImageMetadata(path=path, modality=modality, kind=kind, provenance=Provenance.now("test"))


def _store(
    mask, mic_spacing, mic_origin, model, mri_shape=MRI_SHAPE, where=None, shards=False,
    kind="image",
):  # fmt: skip
    """MRI (mm) + a microscopy mask (µm), linked by ``model`` (MRI µm xyz -> microscopy µm xyz)."""
    store = MemoryStore() if where is None else LocalStore(where)
    mri = make_image(
        np.random.default_rng(0).normal(size=mri_shape).astype(np.float32),
        dims="zyx",
        spacing=(MRI_SP_MM,) * 3,
        origin=(0.1, -0.2, 0.05),
        unit="mm",
    )
    add_image(store, mri, _meta("mri/T2w", "mri"), shards=False)
    four = mask.ndim == 4  # channels first
    mic = make_image(mask, dims="czyx" if four else "zyx", spacing=mic_spacing,
                     origin=mic_origin, unit="um",
                     channel_names=["vessel", "glioma"] if four else None)  # fmt: skip
    add_image(
        store,
        mic,
        _meta("twop/mask", "twophoton", kind),
        chunks={"z": 16, "y": 64, "x": 64},
        shards=shards,
        levels=1,
    )
    pts = np.random.default_rng(1).uniform(0, 100, size=(5, 3))
    lm = pd.DataFrame(
        {
            "name": [f"L{i}" for i in range(5)],
            **{f"moving_{a}": model.forward_points(pts)[:, i] for i, a in enumerate("xyz")},
            **{f"fixed_{a}": pts[:, i] for i, a in enumerate("xyz")},
        }
    )
    register(
        store,
        fixed="mri/T2w",
        moving="twop/mask",
        landmarks=lm,
        model=model.kind,
        name="reg",
        precomputed=(model, {"model": model.kind}),
    )
    return store


def _mri_voxel_bounds(shape=MRI_SHAPE, origin_um=(100.0, -200.0, 50.0)):
    org = np.asarray(origin_um)
    sp = MRI_SP_MM * 1000
    lo = [org[a] - sp / 2 + np.arange(shape[a]) * sp for a in range(3)]
    return lo, sp


def _overlap_1d(lo, size, a, b):
    return np.clip(np.minimum(lo + size, b) - np.maximum(lo, a), 0, None)


@pytest.mark.parametrize(("general", "local"), [(False, False), (True, False), (False, True)])
def test_aligned_box_with_non_integer_spacing_ratio_matches_analytic_fractions(
    general, local, tmp_path
) -> None:
    # 2P-like spacing 3 x 1.1838 x 1.1838 µm into 25 µm, MRI origin not on the microscopy grid
    sp = np.array([3.0, 1.1838, 1.1838])
    shape = (40, 120, 120)
    org = np.array([100.0 - 20.3, -200.0 - 18.7, 50.0 - 21.1])
    k0, k1 = np.array([8, 30, 40]), np.array([30, 100, 95])
    mask = np.zeros(shape, np.uint8)
    mask[k0[0] : k1[0], k0[1] : k1[1], k0[2] : k1[2]] = 1
    # local: sharded on disk, so the separable path decodes the inner chunks itself
    where, shards = (tmp_path / "s.zarr", {"z": 32, "y": 128, "x": 128}) if local else (None, False)
    ident = LinearModel("affine", np.eye(3), np.zeros(3))
    store = _store(mask, sp, org, ident, where=where, shards=shards)
    ds = density(store, microscopy="twop/mask", mri="mri/T2w", force_general=general)
    assert ds.attrs["density"]["path"] == ("general" if general else "separable")
    assert ds.attrs["density"]["reads"] == ("chunks" if local else "zarr")
    frac, cov = ds["fraction"].values, ds["coverage"].values
    box_lo = org + (k0 - 0.5) * sp
    box_hi = org + (k1 - 0.5) * sp
    vlo, vsp = _mri_voxel_bounds()
    truth = np.ones(MRI_SHAPE)
    for a, shp in ((0, (-1, 1, 1)), (1, (1, -1, 1)), (2, (1, 1, -1))):
        truth = truth * (_overlap_1d(vlo[a], vsp, box_lo[a], box_hi[a]) / vsp).reshape(shp)
    mic_lo, mic_hi = org - 0.5 * sp, org + (np.array(shape) - 0.5) * sp
    cov_truth = np.ones(MRI_SHAPE)
    for a, shp in ((0, (-1, 1, 1)), (1, (1, -1, 1)), (2, (1, 1, -1))):
        cov_truth = cov_truth * (_overlap_1d(vlo[a], vsp, mic_lo[a], mic_hi[a]) / vsp).reshape(shp)
    np.testing.assert_allclose(cov, cov_truth, atol=1e-6)
    seen = cov > 0
    np.testing.assert_allclose(frac[seen] * cov[seen], truth[seen], atol=1e-6)
    assert np.isnan(frac[~seen]).all()
    assert 0 < truth.mean() < 0.6
    assert (truth == 1).any()
    assert ((truth > 0) & (truth < 1)).any()


def _halfspace_fraction(w: np.ndarray, t: np.ndarray) -> np.ndarray:
    """P(sum_i w_i U_i <= t) for U_i ~ U[0, 1] (closed form; all |w_i| well away from 0)."""
    t = t - np.minimum(w, 0).sum()
    w = np.abs(w)
    total = np.zeros_like(t)
    for subset in itertools.product((0, 1), repeat=3):
        s = np.dot(subset, w)
        total += (-1) ** sum(subset) * np.clip(t - s, 0, None) ** 3
    return total / (6 * np.prod(w))


def test_rotated_slab_matches_the_analytic_box_halfspace_volume() -> None:
    rot = Rotation.from_euler("zyx", [17.0, -11.0, 23.0], degrees=True).as_matrix()  # xyz
    mshape = (4, 6, 6)
    centre = np.array([50.0 + 62.5, -200.0 + 62.5, 100.0 + 37.5])  # MRI µm xyz, grid middle
    model = LinearModel("rigid", rot, -rot @ centre + np.array([130.0, 130.0, 130.0]))
    sp = np.array([3.0, 2.6, 2.6])
    shape = (87, 100, 100)
    org = np.zeros(3)
    k0, k1 = 38, 52  # slab along microscopy z, on voxel boundaries
    mask = np.zeros(shape, np.float32)
    mask[k0:k1] = 1.0
    store = _store(mask, sp, org, model, mri_shape=mshape)
    ds = density(store, microscopy="twop/mask", mri="mri/T2w")
    assert ds.attrs["density"]["path"] == "general"
    frac, cov = ds["fraction"].values, ds["coverage"].values
    # microscopy z of MRI point p (xyz µm): (rot @ p + t)[2]; slab z in [za, zb]
    za, zb = (k0 - 0.5) * sp[0], (k1 - 0.5) * sp[0]
    vlo, vsp = _mri_voxel_bounds(mshape)
    gz, gy, gx = np.meshgrid(*vlo, indexing="ij")
    corner = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)  # voxel low corners, xyz
    n = rot[2]  # row: microscopy z = n . p + c
    c = model.translation[2]
    w = n * vsp
    base = corner @ n + c
    truth = _halfspace_fraction(w, zb - base) - _halfspace_fraction(w, za - base)
    truth = truth.reshape(mshape)
    assert np.all(np.abs(w) > 1.0)
    np.testing.assert_allclose(cov, 1.0, atol=1e-9)  # the microscopy covers the whole MRI
    np.testing.assert_allclose(frac, truth, atol=1e-6)
    assert ((truth > 0.01) & (truth < 0.99)).sum() > 10
    # the fast path: nearest reslice onto an MRI-aligned grid at the 2P voxel size, then exact
    rs = density(store, microscopy="twop/mask", mri="mri/T2w", method="resliced")
    assert rs.attrs["density"]["path"] == "resliced"
    err = np.abs(rs["fraction"].values - truth)
    assert err.max() < 0.1  # one 2P voxel layer (2.5 µm of 25) along the slab faces
    assert err.mean() < 0.02
    assert abs(float((rs["fraction"].values - truth).mean())) < 0.01  # no bias
    np.testing.assert_allclose(rs["coverage"].values, 1.0, atol=1e-6)


def test_bilinear_method_samples_centres_and_differs_from_exact_at_edges() -> None:
    sp = np.array([3.0, 1.1838, 1.1838])
    shape = (40, 120, 120)
    org = np.array([100.0 - 20.3, -200.0 - 18.7, 50.0 - 21.1])
    mask = np.zeros(shape, np.uint8)
    mask[8:30, 30:100, 40:95] = 1
    store = _store(mask, sp, org, LinearModel("affine", np.eye(3), np.zeros(3)))
    exact = density(store, microscopy="twop/mask", mri="mri/T2w")["fraction"].values
    bil = density(store, microscopy="twop/mask", mri="mri/T2w", method="bilinear")
    b = bil["fraction"].values
    # centre samples: a voxel whose centre lies inside the box reads 1 (or a boundary blend)
    vlo, vsp = _mri_voxel_bounds()
    centres = [v + vsp / 2 for v in vlo]
    idx = [(centres[a] - org[a]) / sp[a] for a in range(3)]
    inside = np.ones(MRI_SHAPE, bool)
    for a, (lo, hi), shp in zip(
        range(3), ((8, 29), (30, 99), (40, 94)), ((-1, 1, 1), (1, -1, 1), (1, 1, -1)), strict=True
    ):
        inside &= ((idx[a] >= lo) & (idx[a] <= hi)).reshape(shp)
    ok = np.isfinite(b)
    np.testing.assert_allclose(b[inside & ok], 1.0)
    partial = ok & (exact > 0.05) & (exact < 0.95)
    assert partial.any()
    assert np.all(np.isin(np.round(b[partial], 6), [0.0, 1.0]) | (b[partial] < 1))
    assert np.abs(b[partial] - exact[partial]).max() > 0.2


def _uniform_in_tet(tet: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Points uniform in a tetrahedron (sorted uniforms as barycentric gaps)."""
    u = np.sort(rng.uniform(size=(n, 3)), axis=1)
    bary = np.diff(np.c_[np.zeros(n), u, np.ones(n)], axis=1)  # Dirichlet(1, 1, 1, 1)
    return bary @ tet


def test_tetrahedron_clipping_matches_monte_carlo_cell_volumes() -> None:
    rng = np.random.default_rng(3)
    assert len(_KUHN) == 6
    for trial in range(12):
        # a few cells wide on some axes, within one cell on others: both code paths
        scale = [2.5, 0.6, 1.7][trial % 3]
        tet = rng.uniform(0, scale, size=(4, 3)) + rng.uniform(0, 3, size=3)
        lo, shape = np.array([0, 0, 0]), np.array([8, 8, 8])
        out = np.zeros((2, *shape))
        tet_into_cells(tet, 2.0, lo, shape, out, np.empty((4, 4, 3)), *_scratch())
        vol = abs(np.linalg.det(tet[1:] - tet[0])) / 6
        np.testing.assert_allclose(out[1].sum(), vol, rtol=1e-10)
        np.testing.assert_allclose(out[0], 2.0 * out[1], rtol=1e-12)
        pts = _uniform_in_tet(tet, 200_000, rng)
        cells = np.floor(pts).astype(int)
        mc = np.zeros(shape)
        np.add.at(mc, tuple(cells.T), vol / len(pts))
        assert np.abs(out[1] - mc).max() <= 0.01 * vol + 1e-12


def test_two_face_closed_forms_equal_the_general_split() -> None:
    # a tetrahedron's volume below face a, below face b and below both, from its vertices'
    # heights alone, against splitting it into pieces cell by cell; every case of face a (a lone
    # vertex below, a lone vertex above, two and two) and both faces' fractions one by one
    from bridge_xr.extract._kuhn import _both_below, _frac_select, _frac_sorted

    rng = np.random.default_rng(4)
    cases = dict.fromkeys((1, 2, 3), 0)
    for _ in range(400):
        tet = rng.uniform(0.2, 1.8, size=(4, 3))
        a, b = rng.choice(3, 2, replace=False)
        if rng.uniform() < 0.2:  # vertices exactly on a face, or level with each other
            tet[rng.integers(4), a] = 1.0
            tet[1, b] = tet[0, b]
        ha, hb = tet[:, a] - 1.0, tet[:, b] - 1.0
        vol = abs(np.linalg.det(tet[1:] - tet[0])) / 6
        out = np.zeros((2, 2, 2, 2))
        tet_into_cells(tet, 1.0, np.array([0, 0, 0]), np.array([2, 2, 2]), out, np.empty((8, 4, 3)),
                       *_scratch(piece=True))  # fmt: skip
        below_a = out[1][(slice(None),) * a + (0,)]
        va, vb, vab = _both_below(*ha, *hb, vol)
        np.testing.assert_allclose(va, below_a.sum(), rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(vb, out[1][(slice(None),) * b + (0,)].sum(), rtol=1e-9,
                                   atol=1e-15)  # fmt: skip
        np.testing.assert_allclose(vab, below_a[(slice(None),) * (b - (b > a)) + (0,)].sum(),
                                   rtol=1e-9, atol=1e-15)  # fmt: skip
        for h in (ha, hb):
            assert _frac_sorted(*h) == pytest.approx(_frac_below(*h), rel=1e-13, abs=1e-15)
            assert _frac_select(*h) == pytest.approx(_frac_below(*h), rel=1e-13, abs=1e-15)
        n = int((ha < 0).sum())
        if n in cases and 0 < vb < vol:
            cases[n] += 1
    assert min(cases.values()) >= 20


def test_three_face_closed_forms_equal_the_general_split() -> None:
    # a voxel at an MRI voxel corner (one face along every axis): its 8 cells' volumes from the
    # closed forms (every tetrahedron cut at the x face, the pieces shared between the z and y
    # faces) against splitting its tetrahedra cell by cell; sheared voxels, so that the x face
    # leaves a lone vertex below, a lone vertex above, two and two, or the whole tetrahedron on
    # one side
    from bridge_xr.extract import _kuhn

    rng = np.random.default_rng(6)
    kuhn = _kuhn._KUHN_CORNER.astype(np.int64)
    unit = np.array(list(itertools.product((0, 1), repeat=3)), float)
    lo, shape = np.array([4, 6, 2]), np.array([4, 4, 4])
    cases, checked = dict.fromkeys((0, 1, 2, 3), 0), 0
    for trial in range(300):
        a = np.diag([0.3, 0.25, 0.4]) @ (np.eye(3) + rng.normal(0, 0.3, (3, 3)))
        c8 = unit @ a.T
        span = c8.max(axis=0) - c8.min(axis=0)  # each face at a random depth inside the box
        c8 += np.array([6.0, 8.0, 4.0]) - c8.min(axis=0) - rng.uniform(0.1, 0.9, 3) * span
        c8 += rng.normal(0, 0.01, (8, 3)) * (trial % 2)  # not a parallelepiped
        cell_lo = np.floor(c8.min(axis=0)).astype(np.int64)
        if not np.array_equal(np.ceil(c8.max(axis=0)) - 1 - cell_lo, [1, 1, 1]):
            continue
        tets = c8[kuhn]  # (6, 4, 3)
        tv = np.abs(np.linalg.det(tets[:, 1:] - tets[:, :1])) / 6
        ref, out = np.zeros((2, *shape)), np.zeros((2, *shape))
        for tet in tets:
            tet_into_cells(tet.copy(), 1.5, lo, shape, ref, np.empty((8, 4, 3)), *_scratch())
            below = int((tet[:, 2] < cell_lo[2] + 1).sum())
            cases[min(below, 4 - below) if below in (0, 4) else below] += 1
        _kuhn._straddler(out, c8, 1.5, tv.sum(), cell_lo, np.ones(3, np.int64), lo, shape, kuhn,
                         tv, _kuhn._scratch(), np.empty((8, 4, 3)))  # fmt: skip
        np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12 * tv.sum())
        assert np.count_nonzero(ref[1]) >= 2
        checked += 1
    assert checked >= 250
    assert min(cases.values()) >= 20, cases


def _frac_below(h0: float, h1: float, h2: float, h3: float) -> float:
    """Fraction of a tetrahedron's volume where a linear function is < 0, from its 4 values.

    The branchy reference the kernel's sorted and branch-free forms are checked against (the
    vertex alone on its side found by its sign, not by sorting).

    The volume fraction below a level is the divided difference of ``(-h)^3_+`` over the
    vertex values; in the forms below every term is non-negative, so near-equal values (a
    nearly axis-aligned voxel) lose no precision. One vertex below at depth ``u``, the others
    at heights ``v``: ``u^3 / prod(u + v)``; three below: one minus the mirror image; two below
    (depths ``u1, u2``, heights ``v1, v2``)::

        (u1^2 u2^2 + (v1 + v2) u1 u2 (u1 + u2) + v1 v2 (u1^2 + u1 u2 + u2^2))
        / ((u1 + v1) (u1 + v2) (u2 + v1) (u2 + v2))
    """
    h0, h1, h2, h3 = float(h0), float(h1), float(h2), float(h3)  # Python bools sum as ints
    n = (h0 < 0.0) + (h1 < 0.0) + (h2 < 0.0) + (h3 < 0.0)
    if n == 0:
        return 0.0
    if n == 4:
        return 1.0
    if n == 2:
        if h0 < 0.0:
            u1 = -h0
            if h1 < 0.0:
                u2, v1, v2 = -h1, h2, h3
            elif h2 < 0.0:
                u2, v1, v2 = -h2, h1, h3
            else:
                u2, v1, v2 = -h3, h1, h2
        elif h1 < 0.0:
            u1 = -h1
            if h2 < 0.0:
                u2, v1, v2 = -h2, h0, h3
            else:
                u2, v1, v2 = -h3, h0, h2
        else:
            u1, u2, v1, v2 = -h2, -h3, h0, h1
        num = u1 * u1 * u2 * u2 + (v1 + v2) * u1 * u2 * (u1 + u2)
        num += v1 * v2 * (u1 * u1 + u1 * u2 + u2 * u2)
        return num / ((u1 + v1) * (u1 + v2) * (u2 + v1) * (u2 + v2))
    lone_below = n == 1
    # the vertex alone on its side, and its distances to the three others
    if (h0 < 0.0) == lone_below:
        a, b, c, d = h0, h1, h2, h3
    elif (h1 < 0.0) == lone_below:
        a, b, c, d = h1, h0, h2, h3
    elif (h2 < 0.0) == lone_below:
        a, b, c, d = h2, h0, h1, h3
    else:
        a, b, c, d = h3, h0, h1, h2
    t = abs(a)
    f = t * t * t / ((t + abs(b)) * (t + abs(c)) * (t + abs(d)))
    return f if lone_below else 1.0 - f


def _scratch(piece: bool = True) -> tuple[np.ndarray, ...]:
    return ((np.empty((4, 3)),) if piece else ()) + (np.empty((8, 3)), np.empty(8))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.bool_])
def test_compiled_separable_sums_equal_the_sparse_products(dtype, monkeypatch) -> None:
    from bridge_xr.extract import _separable

    rng = np.random.default_rng(5)
    values = (rng.uniform(0, 3, size=(12, 40, 50))).astype(dtype)
    # z flipped, voxels 0.13-0.41 MRI voxels long at non-integer offsets; the box cuts the edges
    diagonal = np.array([[-0.41, 0.13, 0.27], [9.3, 1.71, -0.62]])
    lo, bbox_lo, bbox_shape = (3, 5, 2), np.array([1, 2, 0]), (4, 6, 12)
    got = _separable.separable_block(values, diagonal, lo, bbox_lo, bbox_shape)
    monkeypatch.setattr(_separable, "_axis_cells", lambda *a: None)  # the sparse products
    ref = _separable.separable_block(values, diagonal, lo, bbox_lo, bbox_shape)
    assert ref[0].max() > 0
    assert (ref[1] == 0).any()  # part of the box lies outside the block: both agree there too
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_compiled_separable_full_cells_are_exactly_one(dtype) -> None:
    """Rows summed per MRI cell first (integer voxels) or one by one (float): a cell the mask
    fills has fraction 1.0 exactly, and partly covered edge cells too."""
    from bridge_xr.extract import _separable

    diagonal = np.array([[0.12, 0.047, 0.047], [9.3, 1.71, -0.62]])
    values = np.ones((40, 200, 210), dtype=dtype)
    out = _separable.separable_block(values, diagonal, (3, 5, 2), np.array([9, 1, -1]), (6, 12, 12))
    covered = out[1] > 0
    assert covered.sum() > 100
    assert (out[1] == 0).any()
    np.testing.assert_array_equal(out[0][covered] / out[1][covered], 1.0)
    values[::3, ::2] = 0  # and the integer path sums what the sparse products do
    got = _separable.separable_block(values, diagonal, (3, 5, 2), np.array([9, 1, -1]), (6, 12, 12))
    ref = _separable.separable_block(
        values.astype(np.float64), diagonal, (3, 5, 2), np.array([9, 1, -1]), (6, 12, 12)
    )
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_general_block_fast_paths_equal_clipping_every_tetrahedron() -> None:
    from bridge_xr.extract._affine import general_block_affine
    from bridge_xr.extract._kuhn import _KUHN_CORNER, general_block, general_block_nodes

    rng = np.random.default_rng(6)
    values = rng.uniform(0, 1, size=(5, 7, 8))
    a = 0.5  # voxels about a third of an MRI voxel, rotated: one, two and three faces crossed
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    k, j, i = np.meshgrid(*(np.arange(n + 1) - 0.5 for n in values.shape), indexing="ij")
    corners = (
        np.einsum("ab,bzyx->azyx", rot * 0.37, np.stack([k, j, i]))
        + np.array([2.3, 5.1, 3.7])[:, None, None, None]
    )
    lo, shape = np.array([1, 2, 2]), (5, 6, 6)
    got = general_block(values, corners, lo, shape)
    ref = np.zeros((2, *shape))
    holed_ref = np.zeros((2, *shape))  # without the 8 voxels around corner (2, 3, 4)
    scratch = (np.empty((4, 3)), np.empty((8, 3)), np.empty(8))
    for z, y, x in np.ndindex(*values.shape):
        c8 = np.stack([corners[:, z + b // 4, y + (b // 2) % 2, x + b % 2] for b in range(8)])
        for tet in c8[_KUHN_CORNER]:
            tet_into_cells(tet.copy(), values[z, y, x], lo, np.array(shape), ref,
                           np.empty((64, 4, 3)), *scratch)  # fmt: skip
            if not (z in (1, 2) and y in (2, 3) and x in (3, 4)):
                tet_into_cells(tet.copy(), values[z, y, x], lo, np.array(shape), holed_ref,
                               np.empty((64, 4, 3)), *scratch)  # fmt: skip
    assert ref[1].sum() > 1.0
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    # corners interpolated inside the kernel from nodes (here every corner is a node)
    nodes = [np.arange(n + 1) for n in values.shape]
    from_nodes = general_block_nodes(values, nodes, corners, (0, 0, 0), values.shape, lo, shape)
    np.testing.assert_allclose(from_nodes, ref, rtol=1e-9, atol=1e-12)
    # the chain is affine: every voxel the same shape, no corners made at all
    index_map = np.c_[rot * 0.37, [2.3, 5.1, 3.7]]
    from_affine = general_block_affine(values, index_map, (0, 0, 0), lo, shape)
    np.testing.assert_allclose(from_affine, ref, rtol=1e-9, atol=1e-12)
    # an unmapped corner: the voxel-by-voxel path leaves out exactly the voxels it touches
    holed = corners.copy()
    holed[:, 2, 3, 4] = np.nan
    np.testing.assert_allclose(general_block(values, holed, lo, shape), holed_ref, rtol=1e-9,
                               atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(
        general_block_nodes(values, nodes, holed, (0, 0, 0), values.shape, lo, shape),
        holed_ref, rtol=1e-9, atol=1e-12,
    )  # fmt: skip


@pytest.mark.parametrize("warp", ["bent", "gentle"])
def test_node_kernel_tiles_equal_the_voxel_by_voxel_kernel_through_a_bent_warp(warp) -> None:
    # a block over several of the node kernel's tiles (3 along y, 2 along x), corners trilinear
    # between nodes every (2, 8, 8) voxels of a non-linear map, voxels ~1/7 MRI voxel; the
    # gentle warp's rows cross one z (or y) face along much of their length (the kernel's
    # whole-row path)
    from bridge_xr.extract import _kuhn
    from bridge_xr.extract.footprint import block_corners

    shape = (3, 2 * _kuhn._TY + 6, _kuhn._TX + 44)
    rng = np.random.default_rng(11)
    values = rng.uniform(0, 1, shape)
    node_idx = [np.r_[np.arange(0, n, s), n] for n, s in zip(shape, (2, 8, 8), strict=True)]
    k, j, i = np.meshgrid(*(v - 0.5 for v in node_idx), indexing="ij")
    a = 0.4 if warp == "bent" else 0.02
    y, x = np.cos(a) * j - np.sin(a) * i, np.sin(a) * j + np.cos(a) * i
    if warp == "bent":
        nodes = np.stack([k / 5 + 1e-4 * x**2, y / 7 + 3e-4 * k * x, x / 7 + 2e-5 * y**2]) + 0.3
    else:
        nodes = np.stack([k / 2.5 + 1e-6 * x**2, y / 7 + 1e-5 * k * x, x / 7 + 1e-6 * y**2]) + 0.3
    lo, hi = (0, 0, 0), shape
    corners = block_corners(node_idx, nodes, lo, hi)
    if warp == "gentle":  # rows where >= 1/8 of the voxels cross only a z (a y) face: both occur
        c8 = [corners[:, d : d + shape[0], b : b + shape[1], e : e + shape[2]]
              for d, b, e in itertools.product((0, 1), repeat=3)]  # fmt: skip
        floor = np.floor(np.min(c8, axis=0))
        crossed = np.maximum(np.ceil(np.max(c8, axis=0)) - 1, floor) - floor
        for ax in (0, 1):
            only = (crossed[ax] == 1) & (crossed.sum(axis=0) == 1)
            assert (only.mean(axis=2) >= 1 / 8).any()
    box_lo = np.floor(corners.reshape(3, -1).min(axis=1)).astype(np.int64) + 1
    box_shape = np.array((2, 20, 40))  # voxels beyond the box on every side are left out
    got = _kuhn.general_block_nodes(values, node_idx, nodes, lo, hi, box_lo, tuple(box_shape))
    ref = _kuhn.general_kernel(
        values, corners, box_lo, box_shape, _kuhn.MAX_SPAN, _kuhn._KUHN_CORNER.astype(np.int64),
        _kuhn._PARITY.astype(np.float64), _kuhn._scratch(),
    )  # fmt: skip
    assert 50.0 < ref[1].sum() < values.size / 245 - 50.0  # the box holds part of the block
    assert (ref[1] < ref[1].max() - 1e-3).any()  # partly covered MRI voxels at the box's edge
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("kind", "turned"),
    [("labels", False), ("threshold", False), ("intensity", False), ("labels", True),
     ("intensity", True), ("labels", "tps"), ("intensity", "tps")],
)  # fmt: skip
def test_chunk_by_chunk_reads_equal_reads_through_zarr(kind, turned, tmp_path) -> None:
    # a sharded local image with edge chunks and unwritten shards: the separable path's (and,
    # through a rotation, the affine kernel's; through a TPS, the node kernel's) own decoding
    # against the same sums over blocks read by zarr
    sp = np.array([3.0, 1.1838, 1.1838])
    shape = (45, 150, 140)
    rng = np.random.default_rng(3)
    vals = (rng.random(shape) * 300).astype(np.uint16)
    vals[:, 128:, :] = 0  # the y edge shards hold only the fill value: zarr stores none of them
    org = np.array([100.0 - 20.3, -200.0 - 18.7, 50.0 - 21.1])
    rot = Rotation.from_rotvec([0.1, -0.2, 0.15]).as_matrix() if turned else np.eye(3)
    model = LinearModel("affine", rot, np.array([3.3, -7.1, 5.7]))
    if turned == "tps":  # the same shift, bent by up to 4 µm
        fixed = np.random.default_rng(4).uniform([-50, -250, 50], [150, 0, 200], size=(12, 3))
        model = fit("tps", fixed, model.forward_points(fixed) + 4 * np.sin(fixed / 40.0))
    store = _store(vals, sp, org, model, where=tmp_path / "s.zarr",
                   shards={"z": 32, "y": 128, "x": 128},
                   kind="labels" if kind == "labels" else "image")  # fmt: skip
    assert not (tmp_path / "s.zarr/twop/mask/s0/c/0/1/0").exists()
    threshold = 150.0 if kind == "threshold" else None
    got = {}
    for direct in (True, False):
        sums, lo, info = footprint_sums(store, microscopy="twop/mask", mri="mri/T2w",
                                        threshold=threshold, direct_reads=direct)  # fmt: skip
        assert info["reads"] == ("chunks" if direct else "zarr")
        assert info["kernel"] == {False: "separable", True: "affine", "tps": "nodes"}[turned]
        got[direct] = sums.compute()
    np.testing.assert_allclose(got[True], got[False], rtol=1e-12, atol=1e-9)
    assert got[True][1].max() > 0.99
    assert got[True][0].max() > 0


def test_a_channel_is_read_chunk_by_chunk_too(tmp_path) -> None:
    # a 2-channel sharded image: each channel's densities decoded from its own chunks equal
    # those read through zarr, and the two channels differ
    sp = np.array([3.0, 1.1838, 1.1838])
    rng = np.random.default_rng(5)
    vals = (rng.random((2, 40, 140, 130)) * 300).astype(np.uint16)
    vals[1] //= 3
    org = np.array([100.0 - 20.3, -200.0 - 18.7, 50.0 - 21.1])
    model = LinearModel("affine", np.eye(3), np.array([3.3, -7.1, 5.7]))
    store = _store(vals, sp, org, model, where=tmp_path / "c.zarr",
                   shards={"z": 32, "y": 128, "x": 128})  # fmt: skip
    got = {}
    for channel in ("vessel", 1):
        for direct in (True, False):
            sums, _, info = footprint_sums(store, microscopy="twop/mask", mri="mri/T2w",
                                           channel=channel, threshold=120.0,
                                           direct_reads=direct)  # fmt: skip
            assert info["reads"] == ("chunks" if direct else "zarr")
            got[channel, direct] = sums.compute()
        np.testing.assert_allclose(got[channel, True], got[channel, False], rtol=1e-12, atol=1e-9)
    assert got["vessel", True][0].sum() > 2 * got[1, True][0].sum()
    np.testing.assert_allclose(got["vessel", True][1], got[1, True][1])  # the same coverage


@pytest.mark.slow
def test_chunk_reads_run_on_a_distributed_cluster(tmp_path) -> None:
    # the reader travels to worker processes (pickled) and decodes there; through a TPS, the
    # nodes are mapped there too, block by block
    from distributed import Client, LocalCluster

    sp = np.array([3.0, 1.1838, 1.1838])
    vals = (np.random.default_rng(8).random((40, 140, 130)) > 0.7).astype(np.uint8)
    org = np.array([100.0 - 20.3, -200.0 - 18.7, 50.0 - 21.1])
    model = LinearModel("affine", np.eye(3), np.array([3.3, -7.1, 5.7]))
    store = _store(vals, sp, org, model, where=tmp_path / "d.zarr",
                   shards={"z": 32, "y": 128, "x": 128}, kind="labels")  # fmt: skip
    bent, _ = _bent_store(tmp_path / "b.zarr")
    local = density(store, microscopy="twop/mask", mri="mri/T2w")["fraction"].values
    local_bent = density(bent, microscopy="twop/mask", mri="mri/T2w")["fraction"].values
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None)
        as cluster,
        Client(cluster),
    ):  # fmt: skip
        ds = density(store, microscopy="twop/mask", mri="mri/T2w")
        assert ds.attrs["density"]["reads"] == "chunks"
        got = ds["fraction"].values
        got_bent = density(bent, microscopy="twop/mask", mri="mri/T2w")["fraction"].values
        prefixes = set(cluster.scheduler.task_prefixes)
    assert {"direct_separable", "footprint-nodes"} <= prefixes, prefixes
    for mine, ref in ((got, local), (got_bent, local_bent)):
        np.testing.assert_array_equal(np.isnan(mine), np.isnan(ref))
        assert np.isfinite(mine).sum() >= 16
        np.testing.assert_allclose(mine[~np.isnan(mine)], ref[~np.isnan(ref)], rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_affine_kernel_equals_the_node_kernel_for_any_linear_map(seed) -> None:
    # shears, flips and scales; blocks anywhere in the volume, partly outside the MRI box
    from bridge_xr.extract._affine import general_block_affine
    from bridge_xr.extract._kuhn import general_block_nodes

    rng = np.random.default_rng(seed)
    a = Rotation.random(random_state=seed).as_matrix() @ np.diag(rng.uniform(0.05, 0.4, 3))
    a = a @ (np.eye(3) + rng.uniform(-0.3, 0.3, (3, 3)))  # sheared
    a[:, 0] *= -1 if seed == 1 else 1  # a flip: negative determinant
    b = rng.uniform(-3, 3, 3)
    shape = (12, 30, 26)
    values = rng.uniform(0, 200, shape)
    idx = [np.arange(n + 1) for n in shape]
    k, j, i = np.meshgrid(*(v - 0.5 for v in idx), indexing="ij")
    nodes = np.einsum("ab,bzyx->azyx", a, np.stack([k, j, i])) + b[:, None, None, None]
    box_lo, box_shape = np.floor(nodes.reshape(3, -1).min(axis=1)).astype(int) + 2, (4, 5, 4)
    for lo, hi in (((0, 0, 0), shape), ((4, 10, 7), (12, 30, 20))):
        block = np.ascontiguousarray(values[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
        ref = general_block_nodes(block, idx, nodes, lo, hi, box_lo, box_shape)
        got = general_block_affine(block, np.c_[a, b], lo, box_lo, box_shape)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
        assert ref[1].sum() > 1.0
        assert (ref[1] < 1).any()
    flat = a.copy()
    flat[:, 2] = flat[:, 1]  # no volume: every voxel folded
    assert not general_block_affine(values, np.c_[flat, b], (0, 0, 0), box_lo, box_shape).any()
    wide = a * 30  # each voxel wider than MAX_SPAN MRI voxels: left out
    assert not general_block_affine(values, np.c_[wide, b], (0, 0, 0), box_lo, box_shape).any()


def test_an_oblique_rotation_keeps_every_volume(tmp_path) -> None:
    # density() end to end through a rotation about an oblique axis (the affine kernel, chunks
    # decoded directly): every microscopy voxel lands inside the MRI, so the covered volume is
    # the image's and the foreground volume the mask's, to rounding
    sp = np.array([3.0, 1.1838, 1.1838])
    shape = (20, 60, 60)
    mask = (np.random.default_rng(9).random(shape) > 0.6).astype(np.uint8)
    org = np.array([250.0, 50.0, 300.0])  # zyx µm, mid-MRI (origin 100, -200, 50; 400-600 µm)
    centre = (org + (np.array(shape) - 1) / 2 * sp)[::-1]  # xyz
    rot = Rotation.from_rotvec([0.4, -0.7, 0.5]).as_matrix()
    model = LinearModel("affine", rot, centre - rot @ centre)
    store = _store(mask, sp, org, model, mri_shape=(16, 24, 24), where=tmp_path / "o.zarr",
                   shards={"z": 16, "y": 64, "x": 64}, kind="labels")  # fmt: skip
    ds = density(store, microscopy="twop/mask", mri="mri/T2w")
    assert ds.attrs["density"]["kernel"] == "affine"
    assert ds.attrs["density"]["reads"] == "chunks"
    frac, cov = ds["fraction"].values, ds["coverage"].values
    mri_um3, mic_um3 = (MRI_SP_MM * 1000) ** 3, float(np.prod(sp))
    assert cov.sum() * mri_um3 == pytest.approx(mask.size * mic_um3, rel=1e-12)
    assert np.nansum(frac * cov) * mri_um3 == pytest.approx(mask.sum() * mic_um3, rel=1e-12)
    assert ((cov > 0) & (cov < 1)).sum() > 10  # the footprint's tilted edges cut MRI voxels


def _bent_store(where, shape=(13, 70, 90)):
    """A mask registered through a 12-landmark TPS (a shift bent by up to 4 µm)."""
    sp = np.array([3.0, 1.1838, 1.1838])
    rng = np.random.default_rng(5)
    vals = (rng.random(shape) < 0.3).astype(np.uint8)
    org = np.array([100.0 - 20.3, -200.0 - 18.7, 50.0 - 21.1])
    fixed = np.random.default_rng(4).uniform([-50, -250, 50], [150, 0, 200], size=(12, 3))
    shifted = fixed + np.array([3.3, -7.1, 5.7])
    model = fit("tps", fixed, shifted + 4 * np.sin(fixed / 40.0))
    return _store(vals, sp, org, model, where=where, kind="labels"), vals


def test_nodes_mapped_block_by_block_once_each_equal_one_block_over_all_nodes(
    tmp_path, monkeypatch
) -> None:
    # small blocks (2, 16, 64 voxels; nodes every 3 and 8 voxels, so some blocks own no node
    # row and edge blocks own the far end): each node is mapped once, in its owner's task, and
    # the graph maps only the faces' nodes; the sums equal the node kernel run once over the
    # whole volume with every node mapped at once
    from bridge_xr.extract import _kuhn, footprint

    store, vals = _bent_store(tmp_path / "s.zarr")
    mapped = []
    real = footprint.apply_hops
    monkeypatch.setattr(
        footprint, "apply_hops", lambda hops, pts: mapped.append(len(pts)) or real(hops, pts)
    )
    sums, lo, info = footprint_sums(
        store, microscopy="twop/mask", mri="mri/T2w", direct_reads=False, block_voxels=2048
    )
    assert info["kernel"] == "nodes"
    assert info["blocks"] > 60
    fp = footprint.plan_footprint(store, "twop/mask", "mri/T2w")
    idx = footprint.node_indices(fp, vals.shape)
    n = [len(i) for i in idx]
    faces = 2 * (n[0] * n[1] + n[1] * n[2] + n[0] * n[2])
    assert sum(mapped) == faces < np.prod(n)  # building the graph: the faces only
    got = sums.compute()
    assert sum(mapped) == faces + np.prod(n)  # computing it: every node, once
    _, nodes = footprint.corner_nodes(fp, vals.shape)
    ref = _kuhn.general_block_nodes(vals, idx, nodes, (0, 0, 0), vals.shape, lo, got.shape[1:])
    assert got[1].max() > 0.9
    assert 0.1 < got[0].sum() / got[1].sum() < 0.5
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_a_block_reaching_past_the_faces_bounds_is_refused(tmp_path, monkeypatch) -> None:
    # the faces' nodes bound the footprint of a map without folds; where a block's own nodes
    # reach past that box inside the MRI (a fold near the edge), its sums would be cut off:
    # refused with one line, not lost
    from bridge_xr.errors import InvalidInputError
    from bridge_xr.extract import densities

    store, _ = _bent_store(tmp_path / "s.zarr")
    real = densities.face_nodes
    monkeypatch.setattr(  # as if the faces bounded only their first half in x
        densities,
        "face_nodes",
        lambda fp, idx: real(fp, [idx[0], idx[1], idx[2][: len(idx[2]) // 2]]),
    )
    sums, _, _ = footprint_sums(store, microscopy="twop/mask", mri="mri/T2w")
    with pytest.raises(InvalidInputError, match="map outside the footprint"):
        sums.compute()
