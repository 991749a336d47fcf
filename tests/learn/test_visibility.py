"""Vessel-wise comparison by diameter category (Figure 2J-K) on cylinders of known diameter."""

from __future__ import annotations

import numpy as np

from bridge_xr.learn.vessels import visibility_by_diameter

SP = (10.0, 10.0, 10.0)


def test_small_vessels_missed_large_ones_found() -> None:
    shape = (30, 40, 120)
    z, x = np.meshgrid(np.arange(shape[0]) * 10.0, np.arange(shape[2]) * 10.0, indexing="ij")
    truth = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    for cx, d in ((200.0, 20.0), (550.0, 70.0), (950.0, 160.0)):
        disc = (z - 150) ** 2 + (x - cx) ** 2 <= (d / 2) ** 2
        truth |= disc[:, None, :]
        if d > 50:
            pred |= disc[:, None, :]
    thresholded = np.zeros(shape, bool)  # a "threshold" that sees nothing
    vessels, cats = visibility_by_diameter(
        truth,
        {"model": pred, "threshold": thresholded},
        SP,
        dilation_um=10.0,
        bins=(0.0, 50.0, 100.0, float("inf")),
    )
    assert len(vessels) == 3
    by_cat = {c["diameter_um"]: c for c in cats}
    # a 20 µm vessel on a 10 µm grid measures ~28 µm (two voxels across plus discretisation)
    assert by_cat["0-50"]["vessels"] == 1
    assert by_cat["0-50"]["model_detected"] == 0.0
    assert by_cat["0-50"]["model_not_visible"] == 1
    assert by_cat["50-100"]["model_detected"] == 1.0
    assert by_cat[">=100"]["model_strongly_visible"] == 1
    assert all(c["threshold_detected"] in (0.0,) or c["voxels"] == 0 for c in cats)
    diam = sorted(v["diameter_um"] for v in vessels)
    assert abs(diam[1] - 70) < 15
    assert abs(diam[2] - 160) < 25


def test_segments_split_a_branching_tree_by_calibre() -> None:
    shape = (24, 40, 100)
    z, y, x = np.meshgrid(*[np.arange(n) * 10.0 for n in shape], indexing="ij")
    trunk = (z - 120) ** 2 + (y - 200) ** 2 <= 45.0**2  # 90 µm along x
    branch = ((z - 120) ** 2 + (x - 500) ** 2 <= 10.0**2) & (y < 200)  # 20 µm, joins the trunk
    truth = trunk | branch
    found = trunk.copy()  # a detector that sees only the trunk
    bins = (0.0, 50.0, float("inf"))
    whole, _ = visibility_by_diameter(truth, {"m": found}, SP, dilation_um=0.0, bins=bins)
    segs, cats = visibility_by_diameter(
        truth, {"m": found}, SP, dilation_um=0.0, bins=bins, segments=True
    )
    assert len(whole) == 1  # one connected tree
    by_cat = {c["diameter_um"]: c for c in cats}
    assert by_cat["0-50"]["vessels"] >= 1
    assert by_cat[">=50"]["vessels"] >= 1
    assert sum(int(v["voxels"]) for v in segs) == int(truth.sum())
    assert by_cat[">=50"]["m_detected"] > 0.9
    assert by_cat["0-50"]["m_detected"] < 0.5
