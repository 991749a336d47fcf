"""Elastic intensity registration of two MRIs against a known deformation; kept exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from typer.testing import CliRunner

from bridge_xr.io.subject import read_subject
from bridge_xr.model.bspline import BSplineModel
from bridge_xr.resampling import resample
from bridge_xr.scene.mapping import map_points
from bridge_xr.testing.exvivo import mri_pair
from bridge_xr_cli.main import app

runner = CliRunner()
EX, INV = "exvivo_mri/T2w", "invivo_mri/d060/T2w"


def test_bspline_model_is_simpleitks_transform() -> None:
    img = sitk.Image([20, 18, 16], sitk.sitkFloat32)
    img.SetSpacing((50.0, 40.0, 30.0))
    img.SetOrigin((25.0, -10.0, 5.0))
    bs = sitk.BSplineTransformInitializer(img, [4, 3, 5], order=3)
    rng = np.random.default_rng(0)
    bs.SetParameters(tuple(rng.normal(0, 8, len(bs.GetParameters()))))
    coef = bs.GetCoefficientImages()
    a = sitk.AffineTransform(3)
    a.SetMatrix((1.02, 0.03, 0, -0.02, 0.99, 0.01, 0, 0.02, 1.01))
    a.SetTranslation((12.0, -7.0, 3.0))
    comp = sitk.CompositeTransform(3)
    comp.AddTransform(a)
    comp.AddTransform(bs)
    m = BSplineModel(np.array(a.GetMatrix()).reshape(3, 3), np.array(a.GetTranslation()),
                     np.stack([sitk.GetArrayFromImage(c) for c in coef]),
                     np.array(coef[0].GetOrigin()), np.array(coef[0].GetSpacing()))  # fmt: skip
    pts = rng.uniform(-300, 1300, size=(2000, 3))  # inside, on and beyond the lattice
    ref = np.array([comp.TransformPoint(tuple(p)) for p in pts])
    assert np.abs(m.forward_points(pts) - ref).max() < 1e-9
    q = rng.uniform(100, 500, size=(100, 3))
    assert np.abs(m.inverse_points(m.forward_points(q)) - q).max() < 1e-6
    again = BSplineModel.from_description(json.loads(json.dumps(m.describe())))
    assert np.array_equal(again.forward_points(pts), m.forward_points(pts))


def test_register_intensity_recovers_a_known_deformation(tmp_path: Path) -> None:
    store = tmp_path / "M.ome.zarr"
    pair = mri_pair(n=24, where=store)
    check = pair.landmarks(30, 5)
    check.to_csv(tmp_path / "check.csv", index=False)
    f = check[["fixed_x", "fixed_y", "fixed_z"]].to_numpy()
    m = check[["moving_x", "moving_y", "moving_z"]].to_numpy()
    before = float(np.sqrt(np.mean(np.sum((f - m) ** 2, axis=1))))
    res = runner.invoke(app, ["register-intensity", str(store), "--fixed", EX, "--moving", INV,
                              "--mesh", "4", "--iterations", "30", "--check-landmarks",
                              str(tmp_path / "check.csv"), "--report", str(tmp_path / "r.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["sitk_deviation_um"] < 1e-6  # stored exactly as SimpleITK's transform
    assert rep["tre_rms_um"] < 10.0, rep["tre_rms_um"]
    assert rep["tre_rms_um"] < before / 5  # the deformation (40 µm bump, 3°, shift) is followed
    rec = read_subject(store).registrations["intensity"]
    assert rec.model == "bspline"
    got = map_points(store, f[:, ::-1], EX, INV)[:, ::-1]
    assert np.isclose(np.sqrt(np.mean(np.sum((got - m) ** 2, axis=1))), rep["tre_rms_um"])
    # points back (Newton) and the in vivo image resampled onto the ex vivo grid
    back = map_points(store, m[:, ::-1], INV, EX)[:, ::-1]
    assert np.sqrt(np.mean(np.sum((back - f) ** 2, axis=1))) < 12.0
    ex = pair.scene[EX].values
    reg = resample(store, moving=INV, onto=EX).values
    inner = (slice(4, -4),) * 3
    raw = pair.scene[INV].values
    r_after = np.corrcoef(ex[inner].ravel(), reg[inner].ravel())[0, 1]
    r_before = np.corrcoef(ex[inner].ravel(), raw[inner].ravel())[0, 1]
    assert r_after > 0.99
    assert 1 - r_after < (1 - r_before) / 10  # unexplained variance down tenfold


def test_register_intensity_refuses_what_it_cannot_register(tmp_path: Path) -> None:
    store = tmp_path / "M.ome.zarr"
    mri_pair(n=16, where=store)
    res = runner.invoke(app, ["register-intensity", str(store), "--fixed", EX, "--moving", "nope"])
    assert res.exit_code == 2
    assert "no image 'nope'" in res.output
    res = runner.invoke(app, ["register-intensity", str(store), "--fixed", EX, "--moving", INV,
                              "--mesh", "0"])  # fmt: skip
    assert res.exit_code == 2
    assert "at least 1" in res.output
