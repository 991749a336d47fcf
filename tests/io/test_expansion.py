"""Expansion microscopy: the factor from pre/post landmarks, the image in tissue µm, the gel system."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from typer.testing import CliRunner

from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject
from bridge_xr.model.expansion import estimate_expansion
from bridge_xr_cli.main import app

runner = CliRunner()


def _pair(factor: float, n: int, noise_gel_um: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pre-expansion points (µm) and their post-expansion positions (gel µm), rotated, noisy."""
    rng = np.random.default_rng(seed)
    pre = rng.uniform(0, 150, size=(n, 3)) * [1, 1, 0.3]
    a = np.deg2rad(25.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    post = factor * pre @ rot.T + [30.0, -12.0, 4.0] + rng.normal(0, noise_gel_um, size=(n, 3))
    return pre + rng.normal(0, noise_gel_um / factor, size=(n, 3)), post


def test_factor_within_one_percent_and_its_interval_covers_the_truth() -> None:
    covered = 0
    for seed in range(40):
        pre, post = _pair(4.1, 12, 1.0, seed)
        est = estimate_expansion(pre, post)
        assert abs(est["factor"] - 4.1) / 4.1 < 0.01
        covered += est["ci95"][0] <= 4.1 <= est["ci95"][1]
        assert est["rmse_um"] < 1.0  # residual in tissue µm: the noise, not a misfit
    assert covered >= 32  # a 95 % interval from 12 landmarks (jackknife): most of 40 runs


def _gel_stack(path: Path, factor: float) -> None:
    """A bead pattern imaged in the gel: 59.54 nm pixels, 0.2 µm steps (tissue 4.1x smaller)."""
    z, y, x = np.meshgrid(np.arange(6), np.arange(40), np.arange(50), indexing="ij")
    img = (1000 * (np.sin(x / 3.0) * np.cos(y / 4.0) > 0.5) + 10 * z).astype(np.uint16)
    tifffile.imwrite(path, img, imagej=True, resolution=(1 / 0.05954, 1 / 0.05954),
                     metadata={"spacing": 0.2, "unit": "um", "axes": "ZYX"})  # fmt: skip


def test_convert_expansion_puts_the_gel_in_tissue_micrometres(tmp_path: Path) -> None:
    gel = tmp_path / "gel.tif"
    _gel_stack(gel, 4.1)
    pre, post = _pair(4.1, 10, 0.5, 7)
    frame = pd.DataFrame({"name": [f"B{i}" for i in range(10)]})
    for side, pts in (("fixed", pre), ("moving", post)):
        for a, axis in enumerate("xyz"):
            frame[f"{side}_{axis}"] = pts[:, a]
    csv = tmp_path / "prepost.csv"
    frame.to_csv(csv, index=False)
    store = tmp_path / "M.ome.zarr"
    res = runner.invoke(app, ["convert", "expansion", str(gel), str(store), "--image",
                              "exm/roi1", "--estimate-from", str(csv)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "expansion factor 4.1" in res.output
    meta = read_subject(store).images["exm/roi1"]
    info = meta.acquisition.extra["expansion"]
    f = meta.acquisition.expansion_factor
    assert f == pytest.approx(estimate_expansion(pre, post)["factor"])
    assert info["source"] == "estimated from landmarks"
    assert info["gel_voxel_size"] == pytest.approx([0.2, 0.05954, 0.05954])
    img = read_image(store, "exm/roi1")
    assert meta.modality == "expansion"
    assert img.attrs["spacing"]["x"] == pytest.approx(0.05954 / f)
    assert img.attrs["spacing"]["z"] == pytest.approx(0.2 / f)
    assert np.array_equal(img.values, tifffile.imread(gel))  # pixels untouched
    # the gel's own micrometres stay reachable: gel point -> tissue point = gel / factor
    pts = tmp_path / "gel_points.csv"
    pd.DataFrame({"x": [1.0, 2.0], "y": [0.5, 1.0], "z": [0.2, 0.4]}).to_csv(pts, index=False)
    res = runner.invoke(app, ["transform-points", str(store), str(pts), "--from", "exm/roi1#gel",
                              "--to", "exm/roi1", "--output", str(tmp_path / "t.csv")])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = pd.read_csv(tmp_path / "t.csv")
    assert np.allclose(
        got[["x", "y", "z"]].to_numpy(), [[1 / f, 0.5 / f, 0.2 / f], [2 / f, 1 / f, 0.4 / f]]
    )


def test_convert_expansion_never_assumes_a_factor(tmp_path: Path) -> None:
    gel = tmp_path / "gel.tif"
    _gel_stack(gel, 4.1)
    store = tmp_path / "M.ome.zarr"
    few = tmp_path / "few.csv"
    pd.DataFrame({c: [0.0, 1.0, 2.0] for c in
                  ["fixed_x", "fixed_y", "fixed_z", "moving_x", "moving_y", "moving_z"]}).to_csv(
        few, index=False)  # fmt: skip
    for extra, word in (
        ([], "exactly one"),
        (["--expansion-factor", "4.1", "--estimate-from", str(few)], "exactly one"),
        (["--expansion-factor", "0.25"], "above 1"),
        (["--estimate-from", str(few)], ">= 4 landmarks"),
    ):
        res = runner.invoke(app, ["convert", "expansion", str(gel), str(store), "--image",
                                  "exm/roi1", *extra])  # fmt: skip
        assert res.exit_code == 2, res.output
        assert word in res.output, res.output
    assert not store.exists()
