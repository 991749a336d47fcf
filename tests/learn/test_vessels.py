"""Diameter filter and local diameter on cylinders of known diameter (anisotropic spacing)."""

from __future__ import annotations

import dask.array as da
import numpy as np

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
