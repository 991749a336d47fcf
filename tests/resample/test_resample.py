"""Resampling: the mapping itself (linear ramps), and agreement with SimpleITK's Resample."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from zarr.storage import MemoryStore

from bridge_xr.io.subject import add_image, read_subject
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.register.registration import register
from bridge_xr.resampling.blockwise import resample
from bridge_xr.scene.chains import model_from_record


def _meta(path, modality="mri"):
    return ImageMetadata(path=path, modality=modality, provenance=Provenance.now("test"))


def _store_with(
    moving_data, moving_spacing, fixed_shape=(8, 20, 20), fixed_spacing=(0.03, 0.03, 0.03)
):
    store = MemoryStore()
    fixed = make_image(
        np.zeros(fixed_shape, np.float32), dims="zyx", spacing=fixed_spacing, unit="mm"
    )
    add_image(store, fixed, _meta("mri/T2w"), shards=False)
    mov = make_image(moving_data, dims="zyx", spacing=moving_spacing, unit="um")
    add_image(
        store,
        mov,
        _meta("twop/img", "twophoton"),
        chunks={"z": 8, "y": 32, "x": 32},
        shards={"z": 16, "y": 64, "x": 64},
    )
    return store


def _landmarks(fixed_xyz, moving_xyz):
    return pd.DataFrame(
        {
            "name": [f"L{i}" for i in range(len(fixed_xyz))],
            "moving_x": moving_xyz[:, 0],
            "moving_y": moving_xyz[:, 1],
            "moving_z": moving_xyz[:, 2],
            "fixed_x": fixed_xyz[:, 0],
            "fixed_y": fixed_xyz[:, 1],
            "fixed_z": fixed_xyz[:, 2],
        }
    )


@pytest.mark.parametrize(("axis", "order"), [(0, 1), (2, 1), (2, 3)])
def test_resampled_ramp_reproduces_the_exact_tps_mapping(axis, order) -> None:
    shape, sp = (40, 200, 200), (2.0, 1.5, 1.5)  # moving, µm (z, y, x)
    coords = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, sp, strict=True)], indexing="ij")
    ramp = coords[axis].astype(np.float64)  # value = physical coordinate along one axis
    store = _store_with(ramp, sp)
    rng = np.random.default_rng(0)
    fixed = rng.uniform([20, 20, 10], [280, 280, 70], size=(20, 3))  # xyz µm in the MRI
    moving = fixed * [1.0, 0.95, 0.5] + 10 * np.sin(fixed / 60.0) + [-10, 5, 0]
    register(
        store,
        fixed="mri/T2w",
        moving="twop/img",
        landmarks=_landmarks(fixed, moving),
        model="tps",
        name="t",
    )
    out = resample(
        store,
        moving="twop/img",
        onto="mri/T2w",
        spacing_um=(5.0, 5.0, 5.0),
        level=None,
        chunks=(8, 16, 16),
        order=order,
    )
    assert isinstance(out.data, da.Array)
    assert out.data.npartitions > 8  # many blocks, computed independently
    vals = out.values
    tps = model_from_record(read_subject(store).registrations["t"])
    gz, gy, gx = np.meshgrid(*[out[d].values * 1000 for d in "zyx"], indexing="ij")  # mm -> µm
    pts = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)
    mapped = tps.forward_points(pts)[:, ::-1]  # zyx µm in the moving image
    lvl_sp = np.array(sp) * [1, 2, 2]  # level chosen for 5 µm output: 2 µm z, 3 µm y/x
    inside = np.all(
        (mapped >= 2 * lvl_sp) & (mapped <= (np.array(shape) - 3) * np.array(sp)), axis=1
    )
    assert inside.sum() > 1000
    err = np.abs(vals.ravel()[inside] - mapped[inside, axis])
    assert err.max() <= 0.1 * 5.0 + 1e-6  # within 0.1 output voxel of the exact mapping


def test_affine_resample_agrees_with_simpleitk() -> None:
    rng = np.random.default_rng(4)
    shape, sp = (30, 120, 100), (2.0, 1.2, 1.2)
    data = rng.normal(100, 20, size=shape).astype(np.float32)
    store = _store_with(data, sp)
    fixed = rng.uniform([10, 10, 10], [250, 250, 60], size=(12, 3))
    a = np.array([[0.4, 0.05, 0.0], [-0.04, 0.35, 0.02], [0.0, 0.01, 0.3]])
    moving = fixed @ a.T + [5.0, 8.0, 3.0]
    register(
        store,
        fixed="mri/T2w",
        moving="twop/img",
        landmarks=_landmarks(fixed, moving),
        model="affine",
        name="a",
    )
    out = resample(store, moving="twop/img", onto="mri/T2w", spacing_um=(10.0, 10.0, 10.0), level=0)
    model = model_from_record(read_subject(store).registrations["a"])
    mov = sitk.GetImageFromArray(data.astype(np.float64))
    mov.SetSpacing(sp[::-1])
    ref = sitk.Image(*[int(out.sizes[d]) for d in "xyz"], sitk.sitkFloat64)
    ref.SetSpacing((10.0, 10.0, 10.0))
    ref.SetOrigin(tuple(float(out[d].values[0]) * 1000 for d in "xyz"))
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(model.matrix.ravel().tolist())
    tx.SetTranslation(model.translation.tolist())
    expected = sitk.GetArrayFromImage(sitk.Resample(mov, ref, tx, sitk.sitkLinear, 0.0))
    gz, gy, gx = np.meshgrid(*[out[d].values * 1000 for d in "zyx"], indexing="ij")
    idx = (
        np.stack([gx.ravel(), gy.ravel(), gz.ravel()], 1) @ model.matrix.T + model.translation
    ) / sp[::-1]
    inside = np.all((idx >= 0.5) & (idx <= np.array(shape[::-1]) - 1.5), axis=1).reshape(out.shape)
    assert inside.sum() > 500
    np.testing.assert_allclose(out.values[inside], expected[inside], rtol=1e-5)


def test_resampling_an_image_onto_its_own_space_upsamples_it() -> None:
    data = np.arange(8 * 20 * 20, dtype=np.float32).reshape(8, 20, 20)
    store = _store_with(np.zeros((4, 8, 8), np.float32), (1.0, 1.0, 1.0), fixed_shape=(8, 20, 20))
    from bridge_xr.io.subject import add_image as add

    add(
        store,
        make_image(data, dims="zyx", spacing=(0.03, 0.03, 0.03), unit="mm"),
        _meta("mri/ramp"),
        shards=False,
    )
    up = resample(store, moving="mri/ramp", onto="mri/ramp", spacing_um=(30.0, 10.0, 10.0))
    assert up.shape == (8, 60, 60)
    # linear in x: upsampled values follow the ramp between original voxel centres
    row = up.values[3, 30, 3:57]
    np.testing.assert_allclose(np.diff(row), 1.0 / 3.0, atol=1e-4)
    # the outer half voxel belongs to the image: no dark rim at the edges (as ITK samples it)
    np.testing.assert_allclose(up.values[3, 31, :2], data[3, 10, 0])  # y 300 µm = row 10
    np.testing.assert_allclose(up.values[3, 31, -2:], data[3, 10, -1])
    ref = sitk.GetImageFromArray(data)
    ref.SetSpacing((30.0, 30.0, 30.0))
    ref.SetOrigin((0.0, 0.0, 0.0))
    out = sitk.Resample(ref, [60, 60, 8], sitk.Transform(), sitk.sitkLinear,
                        (-10.0, -10.0, 0.0), (10.0, 10.0, 30.0), ref.GetDirection(), -1.0)  # fmt: skip
    np.testing.assert_allclose(up.values, sitk.GetArrayFromImage(out), rtol=1e-5, atol=1e-3)


def test_block_error_map_bounds_the_actual_mapping_error_of_its_blocks() -> None:
    from bridge_xr.model.grid import target_grid
    from bridge_xr.resampling.blocks import map_block
    from bridge_xr.resampling.blockwise import block_errors

    store = _store_with(np.zeros((40, 200, 200), np.float32), (2.0, 1.5, 1.5))
    rng = np.random.default_rng(1)
    fixed = rng.uniform([20, 20, 10], [280, 280, 70], size=(30, 3))
    moving = fixed + 15 * np.sin(fixed / 25.0)  # curvy: cells near landmarks get flagged
    register(
        store,
        fixed="mri/T2w",
        moving="twop/img",
        landmarks=_landmarks(fixed, moving),
        model="tps",
        name="t",
    )
    chunks, spacing = (8, 16, 16), (4.0, 4.0, 4.0)
    errs = block_errors(store, moving="twop/img", onto="mri/T2w", spacing_um=spacing, chunks=chunks)
    grid = target_grid(read_image_of(store), spacing)
    n_blocks = tuple(-(-n // c) for n, c in zip(grid.shape, chunks, strict=True))
    assert errs.shape == n_blocks
    bound = errs.values
    assert np.all(bound <= 0.1 * 4.0 + 1e-12)
    assert bound.max() > 0
    tps = model_from_record(read_subject(store).registrations["t"])
    org = np.asarray(grid.origin) * 1000
    every = list(np.ndindex(*n_blocks))
    picks = [every[i] for i in rng.choice(len(every), 40, replace=False)]
    picks.append(tuple(int(v) for v in np.unravel_index(np.argmax(bound), bound.shape)))
    for b in picks:
        axes = [
            org[i] + np.arange(b[i] * chunks[i], min((b[i] + 1) * chunks[i], grid.shape[i])) * 4.0
            for i in range(3)
        ]
        got = map_block([(tps, True)], axes, 0.4)
        gz, gy, gx = np.meshgrid(*axes, indexing="ij")
        exact = tps.forward_points(np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1))
        dev = np.linalg.norm(got.reshape(3, -1)[::-1].T - exact, axis=1).max()
        assert dev <= bound[b] + 1e-9, (b, dev, bound[b])


def read_image_of(store):
    from bridge_xr.io.read import read_image

    return read_image(store, "mri/T2w")
