"""The `bridge` command: happy paths and every user error (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from bridge_xr_cli.main import app

runner = CliRunner()
rng = np.random.default_rng(11)


def bridge(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def nifti(tmp_path: Path) -> Path:
    aff = np.diag([0.05, 0.05, 0.1, 1.0])
    aff[:3, 3] = (1, 2, 3)
    img = nib.Nifti1Image(rng.normal(1000, 30, size=(16, 12, 8)).astype(np.float32), aff)
    img.header.set_xyzt_units("mm")
    img.set_sform(aff, code=1)
    img.set_qform(aff, code=1)
    path = tmp_path / "T2w.nii.gz"
    nib.save(img, str(path))
    return path


@pytest.fixture
def tiff(tmp_path: Path) -> Path:
    path = tmp_path / "angiogram.tif"
    tifffile.imwrite(path, rng.integers(0, 4000, size=(5, 64, 48), dtype=np.uint16))
    return path


def test_convert_info_export_happy_path(tmp_path, nifti, tiff) -> None:
    store = tmp_path / "M001.ome.zarr"
    r = bridge("convert", "mri", nifti, store, "--image", "invivo_mri/d060/T2w")
    assert r.exit_code == 0, r.output
    r = bridge(
        "convert",
        "microscopy",
        tiff,
        store,
        "--image",
        "twophoton/d060/angiogram",
        "--pixel-size",
        "1.1838um",
        "--z-step",
        "5um",
    )
    assert r.exit_code == 0, r.output
    r = bridge("info", store, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["images"]["twophoton/d060/angiogram"]["spacing"] == pytest.approx(
        {"z": 5.0, "y": 1.1838, "x": 1.1838}
    )
    assert info["images"]["invivo_mri/d060/T2w"]["unit"] == "millimeter"
    assert info["images"]["invivo_mri/d060/T2w"]["provenance"]["inputs"] == [str(nifti)]
    r = bridge("info", store)
    assert r.exit_code == 0
    assert "twophoton/d060/angiogram" in r.output
    out = tmp_path / "T2w_roundtrip.nii.gz"
    r = bridge("export", "nifti", store, "--image", "invivo_mri/d060/T2w", "--output", out)
    assert r.exit_code == 0, r.output
    a, b = nib.load(str(nifti)), nib.load(str(out))
    assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-9)
    r = bridge("validate", store)
    assert r.exit_code == 0, r.output


def test_ome_zarr_05_export_opens_with_ome_zarr_py(tmp_path, tiff) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    store = tmp_path / "M001.ome.zarr"
    assert (
        bridge(
            "convert",
            "microscopy",
            tiff,
            store,
            "--image",
            "twophoton/d1/a",
            "--pixel-size",
            "1.2um",
            "--z-step",
            "3um",
        ).exit_code
        == 0
    )
    out = tmp_path / "a_v05.ome.zarr"
    r = bridge("export", "ome-zarr-0.5", store, "--image", "twophoton/d1/a", "--output", out)
    assert r.exit_code == 0, r.output
    nodes = list(Reader(parse_url(str(out)))())
    data = nodes[0].data[0].compute()
    np.testing.assert_array_equal(data, tifffile.imread(tiff))
    ms = nodes[0].metadata
    assert ms["coordinateTransformations"][0][0]["scale"] == pytest.approx([3.0, 1.2, 1.2])
    import ngff_zarr

    ngff_zarr.validate(json.loads((out / "zarr.json").read_text())["attributes"], version="0.5")


def _assert_user_error(r, *phrases: str) -> None:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    joined = " ".join(lines)
    assert "Traceback" not in r.output
    for p in phrases:
        assert p in joined, joined
    assert joined.startswith("error:")


def test_missing_file(tmp_path) -> None:
    store = tmp_path / "s.ome.zarr"
    r = bridge("convert", "mri", tmp_path / "nope.nii.gz", store, "--image", "invivo_mri/d1/T2w")
    _assert_user_error(r, "no such file", "nope.nii.gz")
    assert not store.exists()
    r = bridge(
        "convert",
        "microscopy",
        tmp_path / "nope.tif",
        store,
        "--image",
        "twophoton/d1/a",
        "--pixel-size",
        "1um",
        "--z-step",
        "1um",
    )
    _assert_user_error(r, "no such file")
    assert not store.exists()


def test_truncated_nifti(tmp_path, nifti) -> None:
    raw = nifti.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    store = tmp_path / "s.ome.zarr"
    r = bridge("convert", "mri", bad, store, "--image", "invivo_mri/d1/T2w")
    _assert_user_error(r, "cannot read NIfTI", "cut.nii.gz")
    assert not store.exists()


def test_truncated_tiff(tmp_path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(
        path,
        rng.integers(0, 9, size=(6, 40, 40), dtype=np.uint16),
        imagej=True,
        resolution=(1, 1),
        metadata={"unit": "um", "spacing": 1},
    )
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    store = tmp_path / "s.ome.zarr"
    r = bridge("convert", "microscopy", path, store, "--image", "twophoton/d1/a")
    _assert_user_error(r, "cut.tif")
    assert not store.exists()


def test_missing_calibration(tmp_path, tiff) -> None:
    store = tmp_path / "s.ome.zarr"
    r = bridge("convert", "microscopy", tiff, store, "--image", "twophoton/d1/a")
    _assert_user_error(r, "no pixel size", "--pixel-size", "--z-step")
    assert not store.exists()


def test_unknown_unit(tmp_path, tiff) -> None:
    store = tmp_path / "s.ome.zarr"
    r = bridge(
        "convert",
        "microscopy",
        tiff,
        store,
        "--image",
        "twophoton/d1/a",
        "--pixel-size",
        "1.2 bananas",
        "--z-step",
        "5um",
    )
    _assert_user_error(r, "unknown unit", "bananas")
    assert not store.exists()


def test_clashing_image_path(tmp_path, nifti) -> None:
    store = tmp_path / "s.ome.zarr"
    assert bridge("convert", "mri", nifti, store, "--image", "invivo_mri/d1/T2w").exit_code == 0
    before = (store / "zarr.json").read_bytes()
    r = bridge("convert", "mri", nifti, store, "--image", "invivo_mri/d1/T2w")
    _assert_user_error(r, "already exists", "--overwrite")
    assert (store / "zarr.json").read_bytes() == before
    r = bridge("convert", "mri", nifti, store, "--image", "invivo_mri/d1/T2w", "--overwrite")
    assert r.exit_code == 0


def test_unknown_image_and_store(tmp_path, nifti) -> None:
    store = tmp_path / "s.ome.zarr"
    assert bridge("convert", "mri", nifti, store, "--image", "invivo_mri/d1/T2w").exit_code == 0
    r = bridge(
        "export", "nifti", store, "--image", "invivo_mri/d1/T1w", "--output", tmp_path / "x.nii.gz"
    )
    _assert_user_error(r, "no image group", "T1w")
    assert not (tmp_path / "x.nii.gz").exists()
    r = bridge("info", tmp_path / "missing.ome.zarr")
    _assert_user_error(r, "no such store")


def test_help_on_every_command_and_console_script() -> None:
    for args in (
        [],
        ["convert"],
        ["convert", "mri"],
        ["convert", "microscopy"],
        ["info"],
        ["export"],
        ["export", "nifti"],
        ["export", "ome-zarr-0.5"],
        ["demo"],
        ["validate"],
    ):
        r = bridge(*args, "--help")
        assert r.exit_code == 0, args
        assert "Usage" in r.output, args
    exe = Path(sys.executable).parent / "bridge"
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("bridge_xr ")


def test_demo_runs_end_to_end(tmp_path) -> None:
    out = tmp_path / "demo-out"
    r = bridge("demo", "--out", out, "--size", "tiny")
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["validation"] == "passed"
    assert summary["nifti_roundtrip"]["data_identical"] is True
    assert (out / "report" / "overview.png").stat().st_size > 10_000
    for fig in ("registration_qc.png", "registration_qc_fine.png", "registration_tre.png"):
        assert (out / "report" / fig).stat().st_size > 5_000, fig
    assert "Demo study in" in r.stdout
    corr = summary["correlation"]
    assert corr["voxels"] > 50
    assert corr["vessel_rho"] < 0  # vessels darken T2w in the phantom
    assert (out / "report" / "study" / "index.html").exists()
    assert summary["longitudinal"]["motion_error_um"] < 5.0
    assert summary["longitudinal"]["mean_growth_percent_per_day"] > 0
    ex = summary["exvivo"]
    assert ex["sections"] == 3
    assert ex["truth_rms_um"] < 2.0  # 2D TPS per section, 1 µm landmark noise
    assert ex["chain_density_mean_abs_error"] < 0.02
    assert (out / "report" / "exvivo" / "slices_overlay.png").exists()
    assert summary["learning"]["cases"] >= 3
    assert summary["learning"]["summary"]["cases"] >= 1
    vis = summary["learning"]["visibility_by_diameter"]
    assert sum(c["vessels"] for c in vis) >= 1  # the validation truth, in calibre segments


def test_labels_image_converts_with_mode_pyramid_and_validates(tmp_path) -> None:
    labels = np.zeros((4, 256, 256), dtype=np.uint16)
    labels[:, 40:200, 30:90] = 3
    labels[:, 100:140, 100:250] = 7
    tif = tmp_path / "mask.tif"
    tifffile.imwrite(tif, labels)
    store = tmp_path / "M.ome.zarr"
    r = bridge(
        "convert",
        "microscopy",
        tif,
        store,
        "--image",
        "masks/d060/analysis",
        "--labels",
        "--pixel-size",
        "1.2um",
        "--z-step",
        "5um",
    )
    assert r.exit_code == 0, r.output
    from bridge_xr.io.read import read_image

    lvl1 = read_image(str(store), "masks/d060/analysis", level=1).values
    assert set(np.unique(lvl1)) == {0, 3, 7}  # a mean would have invented new label values
    np.testing.assert_array_equal(lvl1[0, 20:100, 15:45], 3)
    assert bridge("validate", store).exit_code == 0
    info = json.loads(bridge("info", store, "--json").output)
    assert info["images"]["masks/d060/analysis"]["kind"] == "labels"


def test_info_reads_a_store_written_by_another_tool(tmp_path) -> None:
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    write_image(
        np.zeros((4, 32, 32), np.uint8),
        root,
        axes="zyx",
        scale={"z": 2.0, "y": 0.5, "x": 0.5},
        axes_units=dict.fromkeys("zyx", "micrometer"),
        scale_factors=[2],
        fmt=FormatV05(),
    )
    r = bridge("info", tmp_path / "other.zarr", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["images"][""]["spacing"] == {"z": 2.0, "y": 0.5, "x": 0.5}
    assert info["images"][""]["ome_version"] == "0.5"
