"""The sparse node kernel: zero voxels summed only where their volume is needed, yet exact."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest
from zarr.storage import LocalStore

from bridge_xr.extract import _kuhn, densities
from bridge_xr.extract.densities import footprint_sums
from bridge_xr.extract.footprint import block_corners
from bridge_xr.io.subject import add_image
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.model.pointmaps import fit
from bridge_xr.register.registration import register

SP = (3.0, 1.1838, 1.1838)  # microscopy µm, zyx


def _tubes(shape: tuple[int, int, int]) -> np.ndarray:
    """About a tenth foreground, in tubes (as vessels are)."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    f = np.sin(x / 7.0 + 0.3 * np.sin(z / 9.0)) + np.sin(y / 5.0) + np.sin((z + x) / 11.0)
    return (f > 1.6).astype(np.uint8)


@pytest.fixture(scope="module")
def tps_store(tmp_path_factory):
    """A 36 x 110 x 110 mask through a 27-landmark TPS into a 10 µm MRI: MRI voxels inside."""
    where = tmp_path_factory.mktemp("sparse") / "s.zarr"
    store = LocalStore(where)
    mri = make_image(np.zeros((14, 18, 18), np.float32), dims="zyx", spacing=(0.01,) * 3,
                     origin=(0.1, -0.2, 0.05), unit="mm")  # fmt: skip
    meta = ImageMetadata(path="mri/T2w", modality="mri", provenance=Provenance.now("test"))
    add_image(store, mri, meta, shards=False)
    mask = _tubes((36, 110, 110))
    mic = make_image(mask, dims="zyx", spacing=SP, origin=(116.7, -187.1, 73.3), unit="um")
    meta = ImageMetadata(path="twop/mask", modality="twophoton", kind="labels",
                         provenance=Provenance.now("test"))  # fmt: skip
    add_image(store, mic, meta, chunks={"z": 16, "y": 64, "x": 64}, shards=False, levels=1)
    fixed = np.stack(np.meshgrid(np.linspace(60, 210, 3), np.linspace(-190, -40, 3),
                                 np.linspace(110, 220, 3), indexing="ij"), -1).reshape(-1, 3)  # fmt: skip
    moving = fixed + np.array([3.3, -7.1, 5.7]) + 3.0 * np.sin(fixed[:, [1, 2, 0]] / 30.0)
    model = fit("tps", fixed, moving)
    lm = pd.DataFrame({"name": [f"L{i}" for i in range(len(fixed))],
                       **{f"moving_{a}": moving[:, i] for i, a in enumerate("xyz")},
                       **{f"fixed_{a}": fixed[:, i] for i, a in enumerate("xyz")}})  # fmt: skip
    register(store, fixed="mri/T2w", moving="twop/mask", landmarks=lm, model="tps", name="reg",
             precomputed=(model, {"model": "tps"}))  # fmt: skip
    return str(where)


def _sums(store, monkeypatch, plan=None, capture=None):
    """footprint_sums computed: sparse as planned (``plan``: the plan rewritten), or dense."""
    real_plan, real_complete = densities._sparse_plan, densities._complete_volumes
    if plan == "dense":
        monkeypatch.setattr(densities, "_sparse_plan", lambda *a: None)
    elif plan is not None:
        monkeypatch.setattr(densities, "_sparse_plan", lambda *a: plan(real_plan(*a)))
    if capture is not None:
        monkeypatch.setattr(densities, "_complete_volumes",
                            lambda sums, p, *a: capture.append((sums, p)) or real_complete(sums, p, *a))  # fmt: skip
    sums, lo, info = footprint_sums(store, microscopy="twop/mask", mri="mri/T2w")
    out = sums.compute()
    monkeypatch.setattr(densities, "_sparse_plan", real_plan)
    monkeypatch.setattr(densities, "_complete_volumes", real_complete)
    return out, lo, info


def test_sparse_sums_equal_the_dense_ones(tps_store, monkeypatch) -> None:
    # zero voxels skipped away from the faces' image and the witnesses: the raw volumes fall
    # short there, and the completed ones equal the dense kernel's, value-weighted sums too
    seen: list = []
    got, lo, info = _sums(tps_store, monkeypatch, capture=seen)
    ref, lo_ref, info_ref = _sums(tps_store, monkeypatch, plan="dense")
    assert info["sparse"]
    assert not info_ref["sparse"]
    np.testing.assert_array_equal(lo, lo_ref)
    (raw, plan), = seen  # fmt: skip
    free = ~plan.boundary
    assert free.sum() > 200  # a covered inside, with witnesses
    assert plan.witness.sum() >= 2
    assert np.isclose(ref[1][free], 1.0, atol=1e-9).sum() > 100  # fully covered there
    assert (raw[1][free] < ref[1][free] - 0.5).sum() > 100  # skipped: raw volumes fall short
    assert not raw[2].any()  # a gentle bend: every node cell certified
    assert 0.03 < ref[0].sum() / ref[1].sum() < 0.3  # tubes, about a tenth
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_uncertified_cells_are_summed_again_in_full(tps_store, monkeypatch) -> None:
    # the wrong orientation certifies no node cell: every MRI voxel is unsure, and its volume
    # is summed again over every voxel of every block reaching it; the sums still equal (to the
    # TPS inverse's convergence: the blocks' nodes are mapped again, in other batches)
    seen: list = []
    flipped = lambda p: dataclasses.replace(p, orient=-p.orient)  # noqa: E731
    got, _, _ = _sums(tps_store, monkeypatch, plan=flipped, capture=seen)
    ref, _, _ = _sums(tps_store, monkeypatch, plan="dense")
    raw = seen[0][0]
    assert (raw[2] > 0)[ref[1] > 0].all()
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_regions_without_witnesses_are_summed_again(tps_store, monkeypatch) -> None:
    # no witness: no region's count is known, so every one is summed again in full
    def blind(p):
        nothing = np.zeros_like(p.witness)
        return dataclasses.replace(p, witness=nothing, exact=p.boundary.copy())

    got, _, _ = _sums(tps_store, monkeypatch, plan=blind)
    ref, _, _ = _sums(tps_store, monkeypatch, plan="dense")
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_witnesses_that_disagree_send_their_region_to_be_summed_again(monkeypatch) -> None:
    # a region whose witnesses show different counts (or a fraction) is not filled by either
    plan = densities._SparsePlan(
        boundary=np.zeros((1, 1, 4), bool), witness=np.array([[[True, False, True, False]]]),
        exact=np.array([[[True, False, True, False]]]), orient=1.0,
    )  # fmt: skip
    asked = []
    monkeypatch.setattr(densities, "_volumes_again",
                        lambda redo, need, lo: asked.append(need.copy()) or need * 7.0)  # fmt: skip
    for witnessed, redone in (((1.0, 1.0), False), ((1.0, 2.0), True), ((1.0, 0.5), True)):
        sums = np.zeros((3 if redone else 2, 1, 1, 4))  # 2: no block had a part (none unsure)
        sums[1, 0, 0, [0, 2]] = witnessed
        out = densities._complete_volumes(sums, plan, None, np.zeros(3, int))  # type: ignore[arg-type]
        if redone:
            assert asked.pop().all()
            assert (out[1] == 7.0).all()
        else:
            assert not asked
            assert (out[1] == 1.0).all()


@pytest.mark.parametrize("orient", [1.0, -1.0])
def test_every_folded_or_inverted_voxel_lies_in_an_unsure_mri_voxel(orient) -> None:
    # nodes jittered until some voxels fold (their tetrahedra disagree) or turn over (all of
    # the other orientation): each such voxel's MRI voxels must all be marked unsure; cells
    # far from any fold are certified (not everything is unsure)
    rng = np.random.default_rng(3 if orient > 0 else 4)
    shape = (6, 24, 24)
    idx = [np.r_[np.arange(0, n, s), n] for n, s in zip(shape, (2, 8, 8), strict=True)]
    k, j, i = np.meshgrid(*(v - 0.5 for v in idx), indexing="ij")
    nodes = np.stack([k / 2.0, j / 8.0, orient * i / 8.0]) + 10.0
    nodes += 0.05 * rng.standard_normal(nodes.shape)  # a little jitter everywhere
    nodes[0, 2, 1, 1] -= 1.6  # two nodes pushed below the ones under them: local folds
    nodes[0, 2, 2, 2] -= 1.2
    corners = block_corners(idx, nodes, (0, 0, 0), shape)
    box_lo = np.floor(corners.reshape(3, -1).min(axis=1)).astype(int) - 1
    box_shape = tuple(np.ceil(corners.reshape(3, -1).max(axis=1)).astype(int) + 1 - box_lo)
    _, _, unsure = _kuhn.sparse_masks(np.zeros(box_shape, bool), nodes, box_lo, orient)
    c8 = [corners[:, d : d + shape[0], b : b + shape[1], e : e + shape[2]]
          for d, b, e in itertools.product((0, 1), repeat=3)]  # fmt: skip
    dets = []
    for t, tet in enumerate(_kuhn._KUHN_CORNER):
        p = [c8[c] for c in tet]
        m = np.stack([p[1] - p[0], p[2] - p[0], p[3] - p[0]])  # (3 edges, 3, *shape)
        dets.append(
            _kuhn._PARITY[t] * np.einsum("i...,i...->...", m[0], np.cross(m[1], m[2], axis=0))
        )
    dets = np.array(dets)
    ref_sign = np.sign(np.median(dets))  # the map's orientation, in the kernel's terms
    bad = ~(dets * ref_sign > 0).all(axis=0)
    assert 0 < bad.sum() < bad.size // 4
    lo = np.floor(np.min(c8, axis=0)).astype(int) - box_lo[:, None, None, None]
    hi = np.floor(np.max(c8, axis=0)).astype(int) - box_lo[:, None, None, None]
    for v in zip(*np.nonzero(bad), strict=True):
        sl = tuple(slice(lo[m][v], hi[m][v] + 1) for m in range(3))
        assert unsure[sl].all()
    assert not unsure.all()


def test_sparse_kernel_keeps_every_value_and_the_marked_volumes() -> None:
    # random marks: value-weighted sums equal the dense kernel's everywhere, volumes in the
    # marked MRI voxels; with every voxel marked, both equal outright
    shape = (7, 40, 300)
    rng = np.random.default_rng(2)
    values = rng.uniform(0, 1, shape) * (rng.uniform(0, 1, shape) < 0.1)
    idx = [np.r_[np.arange(0, n, s), n] for n, s in zip(shape, (2, 8, 8), strict=True)]
    k, j, i = np.meshgrid(*(v - 0.5 for v in idx), indexing="ij")
    y, x = np.cos(0.4) * j - np.sin(0.4) * i, np.sin(0.4) * j + np.cos(0.4) * i
    nodes = np.stack([k / 5 + 1e-4 * x**2, y / 7 + 3e-4 * k * x, x / 7 + 2e-5 * y**2]) + 0.3
    lo = np.floor(nodes.reshape(3, -1).min(axis=1)).astype(np.int64) - 1
    box = tuple(np.ceil(nodes.reshape(3, -1).max(axis=1)).astype(np.int64) + 1 - lo)
    ref = _kuhn.general_block_nodes(values, idx, nodes, (0, 0, 0), shape, lo, box)
    every = _kuhn.general_block_nodes(values, idx, nodes, (0, 0, 0), shape, lo, box,
                                      exact=np.ones(box, bool))  # fmt: skip
    np.testing.assert_allclose(every, ref, rtol=1e-13, atol=1e-13)
    for share in (0.0, 0.2):
        marked = rng.uniform(0, 1, box) < share
        got = _kuhn.general_block_nodes(values, idx, nodes, (0, 0, 0), shape, lo, box, marked)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(got[1][marked], ref[1][marked], rtol=1e-12, atol=1e-13)
        assert got[1].sum() < 0.9 * ref[1].sum()  # zero voxels elsewhere were left out
