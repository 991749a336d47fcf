"""Bruker ParaVision reconstructions (2dseq + visu_pars, written by their byte layout): values,
geometry and acquisition parameters. The geometry is checked against the same slices written as
DICOM (ImagePositionPatient = VisuCorePosition, ImageOrientationPatient = VisuCoreOrientation
rows, as ParaVision's DICOM export writes them) and read by SimpleITK."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from bridge_xr.io.convert import convert_mri
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject
from bridge_xr.testing.formats import rotation, write_paravision
from bridge_xr_cli.main import app

runner = CliRunner()
ORIENT = rotation(10.0, 25.0).T  # rows: read, phase, slice directions (LPS)
FIRST = np.array([-4.5, 2.25, 7.0])  # centre of the first voxel, LPS mm
SPACING = (0.5, 0.1, 0.08)  # z, y, x mm


def _raw(n_echo=1, shape=(5, 12, 16)) -> np.ndarray:
    return np.random.default_rng(3).integers(-2000, 3000, size=(n_echo, *shape)).astype(np.int16)


def _corners_scanner_lps(store: str, path: str, idx: np.ndarray) -> np.ndarray:
    img = read_image(store, path)
    t = img.attrs["transforms"]["scanner_ras"]
    zyx = idx[:, ::-1] * np.array([img.attrs["spacing"][d] for d in "zyx"])
    sar = t.transform_points(zyx)
    ras = sar[:, ::-1]
    return ras * np.array([-1.0, -1.0, 1.0])  # LPS


def _as_dicom(folder, raw2d: np.ndarray) -> sitk.Image:
    """The same slices as a SimpleITK-written DICOM series (the independent geometry)."""
    folder.mkdir()
    vol = sitk.GetImageFromArray(raw2d)
    vol.SetSpacing(SPACING[::-1])
    vol.SetOrigin(tuple(FIRST))
    vol.SetDirection(tuple(ORIENT.T.ravel()))
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    for k in range(raw2d.shape[0]):
        sl = vol[:, :, k]
        sl.SetMetaData("0020|000e", "1.2.3.4")
        sl.SetMetaData("0008|0018", f"1.2.3.4.{k + 1}")
        sl.SetMetaData("0020|0037", "\\".join(f"{v:.12f}" for v in ORIENT[:2].ravel()))
        pos = FIRST + k * SPACING[0] * ORIENT[2]
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.12f}" for v in pos))
        w.SetFileName(str(folder / f"s{k:02d}.dcm"))
        w.Execute(sl)
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
    return r.Execute()


@pytest.mark.parametrize("three_d", [False, True])
def test_paravision_geometry_values_and_parameters(tmp_path, three_d) -> None:
    raw = _raw()
    slope = np.linspace(0.5, 1.5, 5) if not three_d else 0.25
    write_paravision(tmp_path / "study" / "3", raw, spacing_zyx_mm=SPACING, orientation=ORIENT,
                     first_voxel_lps=FIRST, slope=slope, offset=10.0, three_d=three_d,
                     echo_times_ms=(6.5,), repetition_time_ms=3000.0)  # fmt: skip
    store = str(tmp_path / "M.ome.zarr")
    meta = convert_mri(tmp_path / "study", store, "invivo_mri/d1/T2w")
    img = read_image(store, "invivo_mri/d1/T2w")
    expected = raw[0] * np.reshape(slope, (-1, 1, 1)) + 10.0  # per-frame slope (2D) or one
    np.testing.assert_allclose(img.values, expected, rtol=1e-6)
    assert meta.acquisition.echo_time_ms == pytest.approx(6.5)
    assert meta.acquisition.repetition_time_ms == pytest.approx(3000.0)
    assert meta.acquisition.field_strength_T == pytest.approx(9.4, abs=0.01)
    ref = _as_dicom(tmp_path / "dicom", raw[0])
    idx = np.array([[0, 0, 0], [15, 0, 0], [0, 11, 4], [15, 11, 4], [7.5, 3.2, 2.5]], float)
    want = np.array([ref.TransformContinuousIndexToPhysicalPoint(tuple(i)) for i in idx])
    np.testing.assert_allclose(_corners_scanner_lps(store, "invivo_mri/d1/T2w", idx), want,
                               atol=1e-9)  # fmt: skip


@pytest.mark.parametrize("echo_first", [True, False])
def test_multi_echo_becomes_channels_named_by_echo_time(tmp_path, echo_first) -> None:
    raw = _raw(n_echo=3)
    write_paravision(tmp_path / "s" / "5", raw, spacing_zyx_mm=SPACING, orientation=ORIENT,
                     first_voxel_lps=FIRST, echo_times_ms=(3.0, 8.0, 13.0),
                     echo_first=echo_first)  # fmt: skip
    store = str(tmp_path / "M.ome.zarr")
    meta = convert_mri(tmp_path / "s" / "5", store, "invivo_mri/d1/MGE")
    img = read_image(store, "invivo_mri/d1/MGE")
    assert img.dims == ("c", "z", "y", "x")
    np.testing.assert_array_equal(img.values, raw)
    assert read_subject(store).images["invivo_mri/d1/MGE"].channel_names == (
        "TE 3 ms", "TE 8 ms", "TE 13 ms")  # fmt: skip
    assert meta.acquisition.extra["echo_times_ms"] == [3.0, 8.0, 13.0]


def test_study_with_several_scans_needs_series_and_bad_files_are_one_line(tmp_path) -> None:
    for e in ("3", "4"):
        write_paravision(tmp_path / "study" / e, _raw(), spacing_zyx_mm=SPACING,
                         orientation=ORIENT, first_voxel_lps=FIRST)  # fmt: skip
    store = str(tmp_path / "M.ome.zarr")
    args = ["convert", "mri", str(tmp_path / "study"), store, "--image", "invivo_mri/d1/T2w"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert "--series" in r.output
    assert "3/1" in r.output
    assert not os.path.exists(store)
    r = runner.invoke(app, [*args, "--series", "4/1"])
    assert r.exit_code == 0, r.output
    seq = tmp_path / "study" / "3" / "pdata" / "1" / "2dseq"
    seq.write_bytes(seq.read_bytes()[:100])  # truncated transfer
    r = runner.invoke(app, [*args[:-1], "invivo_mri/d2/T2w", "--series", "3"])
    assert r.exit_code == 2
    assert "is the file complete" in r.output
    assert "invivo_mri/d2/T2w" not in read_subject(store).images


def test_uneven_paravision_slices_are_refused(tmp_path) -> None:
    rec = write_paravision(tmp_path / "s" / "1", _raw(), spacing_zyx_mm=SPACING,
                           orientation=ORIENT, first_voxel_lps=FIRST)  # fmt: skip
    text = (rec / "visu_pars").read_text()
    head, _, rest = text.partition("##$VisuCorePosition=( 5, 3 )\n")
    body, _, tail = rest.partition("##$")
    pos = np.array([float(x) for x in body.split()]).reshape(5, 3)
    pos[3:] += 0.5 * ORIENT[2]  # a gap after the third slice
    new = " ".join(f"{v:.12g}" for v in pos.ravel())
    (rec / "visu_pars").write_text(head + "##$VisuCorePosition=( 5, 3 )\n" + new + "\n##$" + tail)
    with pytest.raises(Exception, match="uneven slice spacing"):
        convert_mri(tmp_path / "s" / "1", str(tmp_path / "x.ome.zarr"), "invivo_mri/d1/T2w")
