"""NIfTI and DICOM: exact data and geometry, checked against nibabel and SimpleITK."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from bridge_xr.io.convert import convert_mri
from bridge_xr.io.export import export_nifti
from bridge_xr.io.read import read_image
from bridge_xr.io.validate import validate_store
from bridge_xr.scene.info import describe
from bridge_xr.testing.formats import rotation as _rotation
from bridge_xr.testing.formats import write_dicom_series

MNI = (
    Path(__import__("nilearn").__file__).parent
    / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
)


def _oblique_nifti(path: Path) -> nib.Nifti1Image:
    rng = np.random.default_rng(1)
    data = rng.integers(-500, 3000, size=(20, 24, 9)).astype(np.int16)
    aff = np.eye(4)
    aff[:3, :3] = _rotation(17.0, -23.0) @ np.diag([0.1, 0.12, 0.5])
    aff[:3, 3] = (-3.2, 11.7, 4.05)
    img = nib.Nifti1Image(data, aff)
    img.header.set_xyzt_units("mm")
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    nib.save(img, str(path))
    return img


def _assert_same_nifti(a_path: Path, b_path: Path) -> None:
    a, b = nib.load(str(a_path)), nib.load(str(b_path))
    assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert a.get_data_dtype() == b.get_data_dtype()
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-9, rtol=0)
    for key in ("sform_code", "qform_code"):
        assert int(a.header[key]) == int(b.header[key])
    np.testing.assert_allclose(b.header.get_sform(), a.header.get_sform(), atol=1e-9, rtol=0)
    np.testing.assert_allclose(b.header.get_qform(), a.header.get_qform(), atol=1e-9, rtol=0)


def test_mni152_template_round_trips_exactly(tmp_path) -> None:
    store = tmp_path / "mni.ome.zarr"
    convert_mri(MNI, str(store), "template/mni152/T1w")
    out = export_nifti(str(store), "template/mni152/T1w", tmp_path / "mni_back.nii.gz")
    _assert_same_nifti(MNI, out)
    assert validate_store(str(store)) == []
    info = describe(str(store))["images"]["template/mni152/T1w"]
    assert info["shape"] == [189, 233, 197]
    assert info["unit"] == "millimeter"


def test_oblique_nifti_round_trips_exactly(tmp_path) -> None:
    src = tmp_path / "oblique.nii.gz"
    _oblique_nifti(src)
    convert_mri(src, str(tmp_path / "s.ome.zarr"), "invivo_mri/d1/T2w")
    out = export_nifti(str(tmp_path / "s.ome.zarr"), "invivo_mri/d1/T2w", tmp_path / "back.nii")
    _assert_same_nifti(src, out)


def _corners(shape_xyz, n=30, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, np.asarray(shape_xyz), size=(n, 3)).astype(float)
    signs = np.array(
        [[sx, sy, sz] for sx in (-0.5, 0.5) for sy in (-0.5, 0.5) for sz in (-0.5, 0.5)]
    )
    return (idx[:, None, :] + signs[None]).reshape(-1, 3)


def _our_world_lps(store, path, corners_xyz):
    img = read_image(str(store), path)
    sp = img.attrs["spacing"]
    intrinsic = corners_xyz[:, ::-1] * np.array([sp["z"], sp["y"], sp["x"]])  # zyx physical
    ras_sar = img.attrs["transforms"]["scanner_ras"].transform_points(intrinsic)  # (S, A, R)
    return np.stack([-ras_sar[:, 2], -ras_sar[:, 1], ras_sar[:, 0]], axis=1)  # LPS x, y, z


def test_voxel_corners_agree_with_simpleitk_for_nifti(tmp_path) -> None:
    src = tmp_path / "oblique.nii.gz"
    img = _oblique_nifti(src)
    convert_mri(src, str(tmp_path / "s.ome.zarr"), "invivo_mri/d1/T2w")
    ref = sitk.ReadImage(str(src))
    corners = _corners(img.shape)
    expected = np.array([ref.TransformContinuousIndexToPhysicalPoint(tuple(c)) for c in corners])
    ours = _our_world_lps(tmp_path / "s.ome.zarr", "invivo_mri/d1/T2w", corners)
    np.testing.assert_allclose(
        ours, expected, atol=1e-5
    )  # ITK stores geometry in float32 for NIfTI
    np.testing.assert_array_equal(
        read_image(str(tmp_path / "s.ome.zarr"), "invivo_mri/d1/T2w").values,
        sitk.GetArrayFromImage(ref),
    )


def test_dicom_series_geometry_and_tags(tmp_path) -> None:
    folder = tmp_path / "dicom"
    write_dicom_series(folder)
    store = tmp_path / "d.ome.zarr"
    meta = convert_mri(folder, str(store), "invivo_mri/d060/T2star")
    assert meta.acquisition.field_strength_T == pytest.approx(9.4)
    assert meta.acquisition.echo_time_ms == pytest.approx(33.0)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    corners = _corners(ref.GetSize())
    expected = np.array([ref.TransformContinuousIndexToPhysicalPoint(tuple(c)) for c in corners])
    ours = _our_world_lps(store, "invivo_mri/d060/T2star", corners)
    np.testing.assert_allclose(ours, expected, atol=1e-9)
    np.testing.assert_array_equal(
        read_image(str(store), "invivo_mri/d060/T2star").values, sitk.GetArrayFromImage(ref)
    )
    assert validate_store(str(store)) == []
    # DICOM has no NIfTI header: export builds one from the scanner affine, same geometry
    out = export_nifti(str(store), "invivo_mri/d060/T2star", tmp_path / "t2s.nii.gz")
    back = sitk.ReadImage(str(out))
    got = np.array([back.TransformContinuousIndexToPhysicalPoint(tuple(c)) for c in corners])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_dicom_folder_without_series_is_refused(tmp_path) -> None:
    from bridge_xr.errors import InvalidInputError

    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no DICOM series"):
        convert_mri(tmp_path / "empty", str(tmp_path / "x.ome.zarr"), "invivo_mri/d1/T2w")
    assert not os.path.exists(tmp_path / "x.ome.zarr")
