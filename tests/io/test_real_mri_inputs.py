"""Real MRI files that used to come in silently wrong: NIfTI scaling, irregular DICOM series."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from bridge_xr.errors import InvalidInputError
from bridge_xr.io.convert import convert_mri
from bridge_xr.io.export import export_nifti
from bridge_xr.io.read import read_image
from bridge_xr.testing.formats import write_dicom_series
from bridge_xr_cli.main import app

runner = CliRunner()


def _scaled_nifti(
    path: Path, dtype: type, slope: float, inter: float, shape: tuple
) -> nib.Nifti1Image:
    rng = np.random.default_rng(4)
    info = np.iinfo(dtype)
    raw = rng.integers(max(info.min, -30000), min(info.max, 30000), size=shape).astype(dtype)
    aff = np.diag([0.05, 0.05, 0.2, 1.0])
    img = nib.Nifti1Image(raw, aff)
    img.header.set_data_dtype(dtype)
    img.header.set_slope_inter(slope, inter)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return img


@pytest.mark.parametrize(
    ("dtype", "slope", "inter", "shape"),
    [
        (np.int16, 0.0123, -40.5, (12, 10, 7)),  # fractional scaling: must become float
        (np.uint8, 2.0, 100.0, (9, 8, 5, 1)),  # trailing singleton t axis
        (np.int32, 1e-3, 0.0, (6, 7, 3, 1, 1)),  # int32 needs float64; two trailing axes
    ],
)
def test_nifti_scaling_is_applied_and_exported_losslessly(tmp_path, dtype, slope, inter, shape):
    src = tmp_path / "scaled.nii.gz"
    _scaled_nifti(src, dtype, slope, inter, shape)
    store = str(tmp_path / "s.ome.zarr")
    convert_mri(src, store, "invivo_mri/d1/T2w")
    ours = read_image(store, "invivo_mri/d1/T2w").values
    truth = nib.load(str(src)).get_fdata()  # nibabel's reading of what the file means
    truth3 = truth.reshape(truth.shape[:3])
    np.testing.assert_allclose(np.transpose(ours, (2, 1, 0)), truth3, rtol=1e-6, atol=1e-9)
    assert ours.dtype == (np.float64 if np.dtype(dtype).itemsize >= 4 else np.float32)
    out = export_nifti(store, "invivo_mri/d1/T2w", tmp_path / "back.nii.gz")
    a, b = nib.load(str(src)), nib.load(str(out))
    assert b.shape == a.shape  # trailing singleton axes come back
    assert b.get_data_dtype() == a.get_data_dtype()
    assert np.array_equal(
        np.asarray(b.dataobj.get_unscaled()), np.asarray(a.dataobj.get_unscaled())
    )
    assert (b.dataobj.slope, b.dataobj.inter) == pytest.approx((a.dataobj.slope, a.dataobj.inter))


def test_unscaled_nifti_keeps_its_integer_dtype(tmp_path) -> None:
    src = tmp_path / "plain.nii.gz"
    raw = np.arange(60, dtype=np.int16).reshape(5, 4, 3)
    nib.save(nib.Nifti1Image(raw, np.eye(4)), str(src))
    store = str(tmp_path / "s.ome.zarr")
    convert_mri(src, store, "invivo_mri/d1/T2w")
    ours = read_image(store, "invivo_mri/d1/T2w").values
    assert ours.dtype == np.int16
    assert np.array_equal(np.transpose(ours, (2, 1, 0)), raw)


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def _refused(tmp_path: Path, folder: Path, match: str, *extra: str) -> None:
    store = tmp_path / "x.ome.zarr"
    r = runner.invoke(
        app, ["convert", "mri", str(folder), str(store), "--image", "invivo_mri/d1/T2w", *extra]
    )
    assert r.exit_code == 2, r.output
    assert match in r.output
    assert len(r.output.strip().splitlines()) <= 3  # one message (rich may wrap it)
    assert "Traceback" not in r.output
    assert not os.path.exists(store)


def test_regular_dicom_spacing_matches_pydicom_positions(tmp_path) -> None:
    folder = tmp_path / "dicom"
    write_dicom_series(folder, n_slices=5)
    dss = [pydicom.dcmread(str(f)) for f in _files(folder)]
    iop = np.array(dss[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    pos = np.sort([np.dot(np.array(d.ImagePositionPatient, float), normal) for d in dss])
    store = str(tmp_path / "d.ome.zarr")
    convert_mri(folder, store, "invivo_mri/d1/T2w")
    img = read_image(store, "invivo_mri/d1/T2w")
    assert img.attrs["spacing"]["z"] == pytest.approx(float(np.diff(pos).mean()), rel=1e-6)
    assert img.attrs["spacing"]["y"] == pytest.approx(float(dss[0].PixelSpacing[0]), rel=1e-6)


def test_dicom_with_a_gap_is_refused(tmp_path) -> None:
    folder = tmp_path / "dicom"
    write_dicom_series(folder, n_slices=6)
    os.remove(_files(folder)[3])  # a missing slice: positions 0 1 2 4 5
    _refused(tmp_path, folder, "uneven slice spacing")


def test_dicom_with_a_localizer_is_refused(tmp_path) -> None:
    folder = tmp_path / "dicom"
    write_dicom_series(folder, n_slices=5)
    f = _files(folder)[0]
    ds = pydicom.dcmread(str(f))
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # a sagittal localizer
    ds.ImagePositionPatient = [0.0, -20.0, 30.0]
    ds.save_as(str(folder / "localizer.dcm"))
    _refused(tmp_path, folder, "slice orientations")


def test_dicom_mosaic_is_refused(tmp_path) -> None:
    folder = tmp_path / "dicom"
    write_dicom_series(folder, n_slices=3)
    for f in _files(folder):
        ds = pydicom.dcmread(str(f))
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.save_as(str(f))
    _refused(tmp_path, folder, "Siemens mosaic")


def test_dicom_repeated_positions_are_refused(tmp_path) -> None:
    folder = tmp_path / "dicom"
    write_dicom_series(folder, n_slices=4)
    for k, f in enumerate(_files(folder)):
        ds = pydicom.dcmread(str(f))
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.2"
        ds.InstanceNumber = 100 + k
        ds.EchoTime = 66
        ds.save_as(str(folder / f"echo2_{k}.dcm"))
    _refused(tmp_path, folder, "same slice position")


def test_two_series_in_one_folder_need_series(tmp_path) -> None:
    folder = tmp_path / "dicom"
    write_dicom_series(folder, n_slices=3)
    for f in _files(folder):
        ds = pydicom.dcmread(str(f))
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.1.999"
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.7"
        ds.SeriesDescription = "T2star_MGE"
        ds.save_as(str(folder / f"b_{f.name}"))
    _refused(tmp_path, folder, "--series UID")
    store = str(tmp_path / "ok.ome.zarr")
    r = runner.invoke(
        app,
        ["convert", "mri", str(folder), store, "--image", "invivo_mri/d1/T2s", "--series",
         "1.2.826.0.1.3680043.2.1125.1.999"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert read_image(store, "invivo_mri/d1/T2s").sizes["z"] == 3
    with pytest.raises(InvalidInputError, match="T2star_MGE"):
        convert_mri(folder, str(tmp_path / "y.ome.zarr"), "invivo_mri/d1/T2w")
