"""Line-scan velocity on synthetic kymographs with known velocity, scan skew, noise and gaps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from typer.testing import CliRunner

from bridge_xr.linescan import Calibration, manual_velocity, radon_velocity, synthetic_kymograph
from bridge_xr.linescan.streaks import apparent, deskew, streak_angle
from bridge_xr_cli.main import app

#: the paper's scan: 1.1838 µm pixels, 0.15 ms lines; a 1 µs pixel dwell
CAL = Calibration(1.1838, 0.15, 1.0)


@pytest.mark.parametrize("v", [0.3, 1.0, 3.0, -3.0, 10.0, -30.0, 100.0])
def test_radon_velocity_within_3_percent_over_the_measurable_range(v: float) -> None:
    lo, hi = CAL.limits(128)
    assert lo <= abs(v) <= hi
    kymo = synthetic_kymograph(v, CAL, lines=288, pixels=128, noise=0.2, seed=int(abs(v) * 10))
    res = radon_velocity(kymo, CAL, window=128, step=80)
    assert res.summary["n"] == res.summary["n_windows"] == 3
    assert res.summary["mean_mm_s"] == pytest.approx(v, rel=0.03)
    assert np.sign(res.summary["mean_mm_s"]) == np.sign(v)  # direction


def test_scan_skew_is_in_the_data_and_corrected_from_the_pixel_dwell() -> None:
    v = 30.0
    kymo = synthetic_kymograph(v, CAL, lines=128, pixels=128, noise=0.1)
    no_dwell = Calibration(CAL.pixel_size_um, CAL.line_time_ms, None)
    seen = radon_velocity(kymo, no_dwell, window=128).summary["mean_mm_s"]
    assert seen == pytest.approx(apparent(v, CAL.pixel_size_um, 1.0), rel=0.005)  # ~2.6 % fast
    assert abs(seen / v - 1) > 0.02
    fixed = radon_velocity(kymo, CAL, window=128).summary["mean_mm_s"]
    assert fixed == pytest.approx(v, rel=0.005)
    assert deskew(apparent(-7.0, 1.1838, 1.0), 1.1838, 1.0) == pytest.approx(-7.0)


def test_windows_without_streaks_are_rejected_and_out_of_range_velocities_too() -> None:
    kymo = synthetic_kymograph(2.0, CAL, lines=512, pixels=128, noise=0.2, gaps=[(256, 512)])
    res = radon_velocity(kymo, CAL, window=128, step=128)
    kept = res.windows["kept"].tolist()
    assert kept == [True, True, False, False]  # the plasma-only half has no streaks
    assert (
        res.windows["separability"].iloc[2:].max()
        < 3.0
        < res.windows["separability"].iloc[:2].min()
    )
    assert res.summary["mean_mm_s"] == pytest.approx(2.0, rel=0.03)
    rng = np.random.default_rng(0)
    assert streak_angle(rng.standard_normal((128, 128)))[1] < 3.0  # pure noise
    slow = radon_velocity(synthetic_kymograph(0.05, CAL, lines=128, pixels=128), CAL)
    assert not slow.windows["kept"].any()  # below the stated minimum: rejected, not reported


def test_manual_mode_is_the_papers_signed_mean_of_drawn_lines() -> None:
    cal = Calibration(1.1838, 0.15, None)
    lines = pd.DataFrame(
        {"x0": [0, 10, 5], "y0": [0, 0, 10], "x1": [30, 40, 35], "y1": [100, 80, 110]}
    )
    res = manual_velocity(lines, cal)
    by_hand = [30 / 100, 30 / 80, 30 / 100]
    expect = np.array(by_hand) * 1.1838 / 0.15
    assert res.windows["velocity_mm_s"].to_numpy() == pytest.approx(expect)
    assert res.summary["mean_mm_s"] == pytest.approx(expect.mean())
    assert res.summary["sd_mm_s"] == pytest.approx(expect.std(ddof=1))


def test_cli_reads_calibration_from_the_czi_and_refuses_contradictions(tmp_path: Path) -> None:
    from bridge_xr.testing.formats import write_czi

    kymo = synthetic_kymograph(-4.0, CAL, lines=256, pixels=128, noise=0.1)
    img = (np.clip(kymo, 0, 2) * 20000).astype(np.uint16)
    czi = write_czi(tmp_path / "scan.czi", img[None, None, None],
                    pixel_size_um=(1.1838, 1.1838, 1.0), laser_scan=(0.15e-3, 1.0e-6))  # fmt: skip
    runner = CliRunner()
    out = tmp_path / "v.csv"
    res = runner.invoke(app, ["linescan", "velocity", str(czi), "--output", str(out),
                              "--figure", str(tmp_path / "v.png")])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["mean_mm_s"] == pytest.approx(-4.0, rel=0.01)
    assert summary["skew_corrected"]
    assert summary["calibration_from"]["user"] == []
    assert len(pd.read_csv(out)) == summary["n_windows"]
    assert (tmp_path / "v.png").stat().st_size > 10_000
    # the paper's inconsistent numbers: a pixel size that contradicts the file is refused
    res = runner.invoke(app, ["linescan", "velocity", str(czi), "--pixel-size", "0.0828um"])
    assert res.exit_code == 2
    assert "says pixel size" in res.output
    # a TIFF states no line time: it must be given, with its unit
    tif = tmp_path / "scan.tif"
    tifffile.imwrite(
        tif, img, resolution=(1 / 1.1838, 1 / 1.1838), metadata={"unit": "um"}, imagej=True
    )
    res = runner.invoke(app, ["linescan", "velocity", str(tif)])
    assert res.exit_code == 2
    assert "line time" in res.output
    res = runner.invoke(app, ["linescan", "velocity", str(tif), "--line-time", "0.15"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["linescan", "velocity", str(tif), "--line-time", "0.15ms",
                              "--pixel-dwell", "1us"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "-4" in res.output
