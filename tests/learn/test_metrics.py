"""Metrics: analytic cases, an independent brute-force implementation, empty masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from bridge_xr.learn.metrics import boundary, dice, dilated_dice, evaluate, hd95, masd


def _brute_directed(a, b, spacing):
    """Directed boundary distances by KD-tree over physical voxel centres (independent)."""
    pa = np.argwhere(boundary(a)) * np.asarray(spacing)
    pb = np.argwhere(boundary(b)) * np.asarray(spacing)
    return cKDTree(pb).query(pa)[0]


def test_shifted_bars_have_known_distances_with_anisotropic_spacing() -> None:
    sp = (100.0, 25.0, 25.0)
    a = np.zeros((6, 40, 40), bool)
    a[1:5, 10:30, 10:14] = True  # a bar 4 voxels wide in x
    b = np.roll(a, 2, axis=2)  # shifted by 2 voxels = 50 µm in x
    assert dice(a, b) == pytest.approx(2 * (4 * 20 * 2) / (2 * 4 * 20 * 4))
    # every voxel of either lies within 50 µm of the other: dilated dice 1 at 50 µm, not at 25
    assert dilated_dice(a, b, 50.0, sp) == pytest.approx(1.0)
    assert dilated_dice(a, b, 25.0, sp) == pytest.approx(0.75)
    da = _brute_directed(a, b, sp)
    db = _brute_directed(b, a, sp)
    assert masd(a, b, sp) == pytest.approx(0.5 * (da.mean() + db.mean()), abs=1e-9)
    assert hd95(a, b, sp) == pytest.approx(max(np.percentile(da, 95), np.percentile(db, 95)))
    assert hd95(a, b, sp) == pytest.approx(50.0)


def test_concentric_spheres_masd_close_to_radius_difference() -> None:
    sp = (2.0, 1.0, 1.0)
    z, y, x = np.meshgrid(
        np.arange(60) * 2.0, np.arange(120) * 1.0, np.arange(120) * 1.0, indexing="ij"
    )
    r = np.sqrt((z - 60) ** 2 + (y - 60) ** 2 + (x - 60) ** 2)
    a, b = r <= 30, r <= 40
    assert masd(a, b, sp) == pytest.approx(10.0, abs=1.5)
    assert dilated_dice(a, b, 10.5, sp) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_masks_match_the_brute_force_implementation(seed) -> None:
    rng = np.random.default_rng(seed)
    sp = (100.0, 25.0, 25.0)
    a = rng.random((5, 30, 30)) > 0.8
    b = rng.random((5, 30, 30)) > 0.85
    da = _brute_directed(a, b, sp)
    db = _brute_directed(b, a, sp)
    assert masd(a, b, sp) == pytest.approx(0.5 * (da.mean() + db.mean()), abs=1e-9)
    # dilated dice against a brute-force dilation
    pts_a = np.argwhere(a) * sp
    pts_b = np.argwhere(b) * sp
    near_b = cKDTree(pts_b).query(pts_a)[0] <= 60.0
    near_a = cKDTree(pts_a).query(pts_b)[0] <= 60.0
    expected = (near_b.sum() + near_a.sum()) / (a.sum() + b.sum())
    assert dilated_dice(a, b, 60.0, sp) == pytest.approx(expected, abs=1e-12)


def test_empty_mask_conventions() -> None:
    e = np.zeros((3, 8, 8), bool)
    f = e.copy()
    f[1, 2:4, 2:4] = True
    sp = (1.0, 1.0, 1.0)
    assert dice(e, e) == 1.0
    assert dilated_dice(e, e, 5, sp) == 1.0
    assert masd(e, e, sp) == 0.0
    assert dice(e, f) == 0.0
    assert dilated_dice(f, e, 5, sp) == 0.0
    assert np.isnan(masd(e, f, sp))
    assert np.isnan(hd95(f, e, sp))
    r = evaluate(f, f, sp, dilation_um=10)
    assert {
        "dice",
        "dilated_dice",
        "masd_um",
        "hd95_um",
        "n_truth_voxels",
        "n_prediction_voxels",
    } <= set(r)
    assert r["n_truth_voxels"] == 4
