"""T2* maps on synthetic multi-echo data with known T2* and Rician noise; scipy as the referee."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import curve_fit
from typer.testing import CliRunner

from bridge_xr.relax import fit_t2
from bridge_xr_cli.main import app

#: the issue's short-T2* case: 16 echoes from 2.6 ms every 4 ms
TE = 2.6 + 4.0 * np.arange(16)


def _rician(a: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.abs(
        a + sigma * rng.standard_normal(a.shape) + 1j * sigma * rng.standard_normal(a.shape)
    )


def test_short_t2star_bias_loglinear_and_lsq_biased_rician_not() -> None:
    rng = np.random.default_rng(0)
    sigma = 1 / 50  # SNR 50 at S0 = 1
    signal = _rician(np.exp(-TE / 10.0)[:, None] * np.ones(5000), sigma, rng)
    bias = {m: np.nanmedian(fit_t2(signal, TE, model=m, sigma=sigma)[0]) / 10.0 - 1
            for m in ("loglinear", "lsq", "rician")}  # fmt: skip
    assert bias["loglinear"] > 0.10
    assert 0.015 < bias["lsq"] < 0.04
    assert abs(bias["rician"]) < 0.005


def test_lsq_equals_scipy_curve_fit_per_voxel() -> None:
    rng = np.random.default_rng(1)
    t2 = rng.uniform(8, 60, 25)
    s0 = rng.uniform(500, 2000, 25)
    signal = _rician(s0 * np.exp(-TE[:, None] / t2), 20.0, rng)
    ours, ours_s0, _ = fit_t2(signal, TE, model="lsq")
    for k in range(25):
        (ref_s0, ref_t2), _ = curve_fit(lambda te, a, t: a * np.exp(-te / t), TE, signal[:, k],
                                        p0=(signal[0, k], 20.0), maxfev=10000)  # fmt: skip
        assert ours[k] == pytest.approx(ref_t2, rel=1e-4)
        assert ours_s0[k] == pytest.approx(ref_s0, rel=1e-4)


def _store(tmp: Path, t2map: np.ndarray, sigma: float, names: bool = True) -> Path:
    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import Acquisition, ImageMetadata, Provenance

    rng = np.random.default_rng(2)
    s0 = np.where(t2map > 0, 1000.0, 0.0)
    a = s0[None] * np.exp(-TE[:, None, None, None] / np.where(t2map > 0, t2map, 1.0)[None])
    data = _rician(a, sigma, rng).astype(np.float32)
    img = make_image(data, dims="czyx", spacing=(100.0, 50.0, 50.0), unit="um",
                     channel_names=[f"TE {t:g} ms" for t in TE] if names else None)  # fmt: skip
    store = tmp / "M001.ome.zarr"
    acq = Acquisition(extra={"echo_times_ms": TE.tolist()}) if names else Acquisition()
    prov = Provenance.now("test")
    add_image(store, img, ImageMetadata(path="mri/mge", modality="mri", session="d060",
                                        acquisition=acq, provenance=prov), levels=1)  # fmt: skip
    for path, m in (("masks/brain", t2map > 0), ("masks/air", t2map == 0)):
        mk = make_image(m.astype(np.uint8), dims="zyx", spacing=(100.0, 50.0, 50.0), unit="um")
        meta = ImageMetadata(path=path, modality="mri", kind="labels", provenance=prov)
        add_image(store, mk, meta, levels=1)
    return store


def test_relax_maps_known_t2star_within_2_percent_from_the_cli(tmp_path: Path) -> None:
    from bridge_xr.io.read import read_image

    z, y, x = np.mgrid[0:6, 0:40, 0:40]
    t2map = np.where((y > 4) & (y < 36) & (x > 4) & (x < 36), 8.0 + x * 1.0, 0.0)  # 13-43 ms
    store = _store(tmp_path, t2map, sigma=20.0)  # SNR 50
    runner = CliRunner()
    base = ["relax", str(store), "--echoes", "mri/mge", "--image-out", "maps/T2star"]
    res = runner.invoke(app, [*base, "--background", "masks/air", "--mask", "masks/brain"])
    assert res.exit_code == 0, res.output
    got = np.asarray(read_image(str(store), "maps/T2star").values)
    inside = t2map > 0
    rel = np.abs(got[inside] / t2map[inside] - 1)
    assert np.median(rel) <= 0.02
    assert np.isnan(got[~inside]).all()  # not fitted outside the mask
    q = np.asarray(read_image(str(store), "maps/T2star_nrmse").values)[inside]
    assert np.nanmedian(q) < 0.05
    s0 = np.asarray(read_image(str(store), "maps/T2star_S0").values)[inside]
    assert np.nanmedian(s0) == pytest.approx(1000, rel=0.02)
    # a second run does not replace silently; --overwrite does
    res = runner.invoke(app, [*base, "--noise-sigma", "20"])
    assert res.exit_code == 2
    res = runner.invoke(app, [*base, "--noise-sigma", "20", "--fit", "lsq", "--overwrite"])
    assert res.exit_code == 0, res.output


def test_relax_refuses_missing_or_contradicting_echo_times_and_a_guessed_noise(
    tmp_path: Path,
) -> None:
    t2map = np.full((2, 8, 8), 20.0)
    store = _store(tmp_path, t2map, sigma=5.0, names=False)
    runner = CliRunner()
    base = ["relax", str(store), "--echoes", "mri/mge", "--image-out", "maps/T2star"]
    res = runner.invoke(app, [*base, "--noise-sigma", "5"])
    assert res.exit_code == 2
    assert "echo times" in res.output
    te = ",".join(f"{t:g}" for t in TE)
    res = runner.invoke(app, [*base, "--echo-times", te])
    assert res.exit_code == 2
    assert "noise" in res.output  # the Rician fit never guesses its sigma
    res = runner.invoke(app, [*base, "--echo-times", te, "--noise-sigma", "5"])
    assert res.exit_code == 0, res.output
    named = _store(tmp_path / "b", t2map, sigma=5.0)
    bad = ",".join(f"{t + 1:g}" for t in TE)
    res = runner.invoke(app, ["relax", str(named), "--echoes", "mri/mge", "--image-out", "m",
                              "--echo-times", bad, "--noise-sigma", "5"])  # fmt: skip
    assert res.exit_code == 2
    assert "states echo times" in res.output


def test_multi_echo_nifti_with_bids_sidecar_gives_echo_times_to_relax(tmp_path: Path) -> None:
    import json

    import nibabel as nib

    from bridge_xr.io.read import read_image

    rng = np.random.default_rng(8)
    t2 = np.full((20, 16, 4), 25.0)  # x, y, z as NIfTI stores it
    data = 1000.0 * np.exp(-TE[None, None, None, :] / t2[..., None])
    data = _rician(data, 10.0, rng).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.05, 0.05, 0.1, 1.0])), tmp_path / "MGE.nii.gz")
    side = tmp_path / "MGE.json"
    side.write_text(json.dumps({"EchoTime": (TE / 1000).tolist(), "MagneticFieldStrength": 9.4,
                                "RepetitionTime": 1.2}))  # fmt: skip
    store = tmp_path / "M001.ome.zarr"
    runner = CliRunner()
    res = runner.invoke(app, ["convert", "mri", str(tmp_path / "MGE.nii.gz"), str(store),
                              "--image", "invivo_mri/d060/MGE"])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["relax", str(store), "--echoes", "invivo_mri/d060/MGE",
                              "--image-out", "maps/T2star", "--noise-sigma", "10"])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = np.asarray(read_image(str(store), "maps/T2star").values)
    assert np.median(np.abs(got / 25.0 - 1)) <= 0.02
    # a sidecar in ms (not BIDS seconds) is refused, not rescaled
    side.write_text(json.dumps({"EchoTime": TE.tolist()}))
    res = runner.invoke(app, ["convert", "mri", str(tmp_path / "MGE.nii.gz"), str(store),
                              "--image", "invivo_mri/d074/MGE"])  # fmt: skip
    assert res.exit_code == 2
    assert "not in seconds" in res.output
    # without a sidecar a 4-D volume is a time series: relax refuses to call it echoes
    side.unlink()
    res = runner.invoke(app, ["convert", "mri", str(tmp_path / "MGE.nii.gz"), str(store),
                              "--image", "invivo_mri/d088/MGE"])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["relax", str(store), "--echoes", "invivo_mri/d088/MGE",
                              "--image-out", "maps/T2b", "--noise-sigma", "10"])  # fmt: skip
    assert res.exit_code == 2
    assert "no echo times" in res.output
