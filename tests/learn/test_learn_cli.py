"""``bridge learn filter`` and ``bridge learn evaluate`` from the CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner
from zarr.storage import LocalStore

from bridge_xr.io.read import read_image
from bridge_xr.io.subject import add_image
from bridge_xr.learn.metrics import evaluate
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr_cli.main import app

runner = CliRunner()


def _nifti(path, data, zooms_xyz):
    img = nib.Nifti1Image(np.transpose(data.astype(np.uint8), (2, 1, 0)), np.diag([*zooms_xyz, 1]))
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def test_evaluate_nifti_matches_the_library_and_writes_the_contract_json(tmp_path) -> None:
    rng = np.random.default_rng(0)
    a = rng.random((6, 40, 40)) > 0.85
    b = np.roll(a, 1, axis=2) | (rng.random(a.shape) > 0.97)
    _nifti(tmp_path / "t.nii.gz", a, (0.025, 0.025, 0.1))
    _nifti(tmp_path / "p.nii.gz", b, (0.025, 0.025, 0.1))
    r = runner.invoke(app, ["learn", "evaluate", "--truth", str(tmp_path / "t.nii.gz"),
                            "--prediction", str(tmp_path / "p.nii.gz"), "--dilation", "50um",
                            "--json", str(tmp_path / "m.json")])  # fmt: skip
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "m.json").read_text())
    ref = evaluate(a, b, (100.0, 25.0, 25.0), dilation_um=50.0)
    for key in ("dice", "dilated_dice", "masd_um", "hd95_um"):  # NIfTI spacing is float32
        assert got[key] == pytest.approx(ref[key], rel=1e-6), key
    assert got["n_truth_voxels"] == ref["n_truth_voxels"]
    assert got["n_prediction_voxels"] == ref["n_prediction_voxels"]
    # different grids: refused
    _nifti(tmp_path / "q.nii.gz", b, (0.025, 0.025, 0.05))
    r = runner.invoke(app, ["learn", "evaluate", "--truth", str(tmp_path / "t.nii.gz"),
                            "--prediction", str(tmp_path / "q.nii.gz")])  # fmt: skip
    assert r.exit_code == 2
    assert "one grid" in r.output


def test_filter_writes_a_label_image_without_thin_vessels(tmp_path) -> None:
    sp = (4.0, 2.0, 2.0)
    shape = (30, 40, 160)
    z, x = np.meshgrid(np.arange(shape[0]) * sp[0], np.arange(shape[2]) * sp[2], indexing="ij")
    thin = ((z - 60) ** 2 + (x - 60) ** 2) <= 5**2
    wide = ((z - 60) ** 2 + (x - 220) ** 2) <= 25**2
    vol = np.broadcast_to((thin | wide)[:, None, :], shape).astype(np.float32)
    store = tmp_path / "M.ome.zarr"
    add_image(LocalStore(str(store)), make_image(vol, dims="zyx", spacing=sp, unit="um"),
              ImageMetadata(path="registered/d060/angiogram", modality="twophoton",
                            provenance=Provenance.now("test")))  # fmt: skip
    r = runner.invoke(app, ["learn", "filter", str(store), "--image", "registered/d060/angiogram",
                            "--min-diameter", "30um", "--image-out", "masks/d060/vessels30",
                            "--diameter-out", "masks/d060/diameter"])  # fmt: skip
    assert r.exit_code == 0, r.output
    kept = read_image(str(store), "masks/d060/vessels30").values > 0
    assert not kept[np.broadcast_to(thin[:, None, :], shape)].any()
    assert kept[np.broadcast_to(wide[:, None, :], shape)].mean() > 0.9
    dmap = read_image(str(store), "masks/d060/diameter").values
    assert abs(float(np.median(dmap[kept])) - 50.0) < 8.0
    r = runner.invoke(app, ["learn", "filter", str(store), "--image", "registered/d060/angiogram",
                            "--min-diameter", "-3um", "--image-out", "x/y"])  # fmt: skip
    assert r.exit_code == 2


def test_visibility_cli_reports_categories(tmp_path) -> None:
    shape = (20, 30, 60)
    z, x = np.meshgrid(np.arange(shape[0]) * 10.0, np.arange(shape[2]) * 10.0, indexing="ij")
    truth = np.broadcast_to((((z - 100) ** 2 + (x - 300) ** 2) <= 40**2)[:, None, :], shape)
    _nifti(tmp_path / "t.nii.gz", truth, (0.01, 0.01, 0.01))
    _nifti(tmp_path / "p.nii.gz", truth, (0.01, 0.01, 0.01))
    mri = np.where(truth, 300.0, 1000.0)
    img = nib.Nifti1Image(
        np.transpose(mri, (2, 1, 0)).astype(np.float32), np.diag([0.01] * 3 + [1])
    )
    nib.save(img, str(tmp_path / "m.nii.gz"))
    r = runner.invoke(app, ["learn", "visibility", "--truth", str(tmp_path / "t.nii.gz"),
                            "--prediction", str(tmp_path / "p.nii.gz"), "--mri",
                            str(tmp_path / "m.nii.gz"), "--json", str(tmp_path / "v.json")])  # fmt: skip
    assert r.exit_code == 0, r.output
    v = json.loads((tmp_path / "v.json").read_text())
    assert len(v["per_vessel"]) == 1
    row = v["per_vessel"][0]
    assert row["model_visibility"] == "strongly visible"
    assert row["threshold_detected"] == 1.0
    assert abs(row["diameter_um"] - 80) < 15
    # a diameter map measured elsewhere (e.g. the 2P's) replaces the truth's local thickness
    diam = np.where(truth, 12.0, 0.0).astype(np.float32)
    img = nib.Nifti1Image(np.transpose(diam, (2, 1, 0)), np.diag([0.01] * 3 + [1]))
    nib.save(img, str(tmp_path / "d.nii.gz"))
    r = runner.invoke(app, ["learn", "visibility", "--truth", str(tmp_path / "t.nii.gz"),
                            "--prediction", str(tmp_path / "p.nii.gz"), "--diameters",
                            str(tmp_path / "d.nii.gz"), "--json", str(tmp_path / "v2.json")])  # fmt: skip
    assert r.exit_code == 0, r.output
    v2 = json.loads((tmp_path / "v2.json").read_text())
    assert v2["per_vessel"][0]["diameter_um"] == 12.0
    assert {c["diameter_um"]: c["vessels"] for c in v2["per_diameter"]}["0-25"] == 1
