"""Diameter filter and local diameter on cylinders of known diameter (anisotropic spacing)."""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import ndimage

from bridge_xr.learn.vessels import local_diameter, open_by_diameter

SP = (4.0, 2.0, 2.0)  # z, y, x µm


def _cylinders(diameters):
    """Cylinders along y, side by side in x, each with its own label."""
    shape = (40, 60, 40 + 60 * len(diameters))
    z, x = np.meshgrid(np.arange(shape[0]) * SP[0], np.arange(shape[2]) * SP[2], indexing="ij")
    labels = np.zeros(shape, np.uint8)
    for i, d in enumerate(diameters):
        cx = (30 + 60 * i) * SP[2]
        cz = shape[0] / 2 * SP[0]
        disc = (z - cz) ** 2 + (x - cx) ** 2 <= (d / 2) ** 2
        labels[:, :, :] = np.where(disc[:, None, :], i + 1, labels)
    return labels


def test_opening_removes_thin_and_keeps_wide_vessels() -> None:
    diam = (12.0, 36.0, 80.0)
    labels = _cylinders(diam)
    kept = np.asarray(open_by_diameter(labels > 0, 30.0, SP))
    for i, d in enumerate(diam, start=1):
        vessel = labels == i
        frac = (kept & vessel).sum() / vessel.sum()
        if d < 30:
            assert frac == 0
        else:
            assert frac > 0.9, (d, frac)
    assert not (kept & (labels == 0)).any()  # an opening never adds voxels


def test_opening_is_the_same_blockwise_and_whole() -> None:
    labels = _cylinders((12.0, 36.0, 80.0))
    whole = np.asarray(open_by_diameter(labels > 0, 30.0, SP))
    blocks = np.asarray(open_by_diameter(da.from_array(labels > 0, chunks=(20, 30, 60)), 30.0, SP))
    np.testing.assert_array_equal(whole, blocks)


def test_local_diameter_of_cylinders() -> None:
    diam = (16.0, 40.0, 80.0)
    labels = _cylinders(diam)
    ld = np.asarray(local_diameter(labels > 0, SP, max_diameter_um=100.0))
    for i, d in enumerate(diam, start=1):
        med = float(np.median(ld[labels == i]))
        assert abs(med - d) <= 0.15 * d + 2 * SP[2], (d, med)
    assert (ld[labels == 0] == 0).all()


def test_local_diameter_is_close_below_the_brute_force_local_thickness() -> None:
    from bridge_xr.learn.vessels import local_diameter

    rng = np.random.default_rng(4)
    sp = (3.0, 2.0, 2.0)
    shape = (20, 32, 32)
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, sp, strict=True)],
                                indexing="ij"), axis=-1)  # fmt: skip
    mask = np.zeros(shape, dtype=bool)
    for _ in range(6):  # random capsules of 6-30 µm diameter
        a, b = rng.uniform([0, 0, 0], [60, 64, 64], size=(2, 3))
        r = rng.uniform(3, 15)
        ab = b - a
        t = np.clip(((grid - a) @ ab) / (ab @ ab), 0, 1)
        mask |= np.linalg.norm(grid - (a + t[..., None] * ab), axis=-1) <= r
    got = np.asarray(local_diameter(mask, sp))[mask]
    dist = ndimage.distance_transform_edt(mask, sampling=sp)[mask]
    pts = grid[mask]
    exact = np.empty(len(pts))
    for i in range(0, len(pts), 512):  # max over all inscribed balls (centre c, radius dist(c))
        d = np.linalg.norm(pts[i : i + 512, None, :] - pts[None, :, :], axis=-1)
        exact[i : i + 512] = 2 * np.max(np.where(d < dist[None, :], dist[None, :], 0), axis=1)
    rel = (got - exact) / exact
    assert rel.max() <= 1e-6  # a lower bound: every value is an inscribed ball through the voxel
    assert np.median(rel) > -0.1  # measured -0.067 (10 % radius bands)
    assert np.percentile(rel, 10) > -0.2  # measured -0.138
