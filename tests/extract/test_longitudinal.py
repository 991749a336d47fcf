"""Longitudinal: sessions onto the first (rigid SimpleITK), overlapping masks, change per day."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bridge_xr.extract.tables import read_tables
from bridge_xr.io.subject import read_subject
from bridge_xr.scene.chains import model_from_record
from bridge_xr.testing.study import write_longitudinal_study
from bridge_xr_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def longi(tmp_path_factory):
    root = tmp_path_factory.mktemp("longi")
    ls = write_longitudinal_study(root)
    r = runner.invoke(
        app,
        ["longitudinal", str(root / "study"), "--subject", "M001", "--output",
         str(root / "tables"), "--threshold", "glioma=900", "--threshold", "angiogram=1000"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return root, ls


def test_session_registration_recovers_the_known_motion(longi) -> None:
    _, ls = longi
    rec = read_subject(str(ls.store)).registrations["long_d074_to_d060"]
    model = model_from_record(rec)
    rot, t = ls.motions[1]  # first-session p = R p_later + t (zyx µm)
    rng = np.random.default_rng(0)
    p = rng.uniform([0, 0, 0], [180, 380, 380], size=(200, 3))  # first-session zyx µm
    truth = (p - t) @ rot  # p_later = R^T (p - t)
    got = model.forward_points(p[:, ::-1])[:, ::-1]
    assert np.abs(got - truth).max() < 0.2 * 25.0  # a fifth of an MRI voxel


def test_longitudinal_table_tracks_the_same_voxels_and_the_growth(longi) -> None:
    root, _ = longi
    df = read_tables(root / "tables" / "longitudinal")
    assert set(df.session) == {"d060", "d074"}
    a = df[df.session == "d060"].sort_values(["z", "y", "x"]).reset_index(drop=True)
    b = df[df.session == "d074"].sort_values(["z", "y", "x"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[["z", "y", "x"]], b[["z", "y", "x"]])
    assert len(a) > 100
    # the vessels did not change: the aligned sessions see the same vessel density per voxel
    assert np.corrcoef(a.fraction_angiogram, b.fraction_angiogram)[0, 1] > 0.99
    # the glioma grew (sigma 80 -> 105 µm): density never drops much, and rises on average
    dg = b.fraction_glioma - a.fraction_glioma
    assert dg.mean() > 0.05
    np.testing.assert_allclose(b.d_fraction_glioma_per_day, dg / 14.0, atol=1e-12)
    assert a.d_fraction_glioma_per_day.isna().all()
    assert set(b.growth_glioma.dropna().astype(str)) <= {"-2-1%", "1-4%", "4-7%"}
    assert b.growth_glioma.notna().mean() > 0.9
    # and T2w rose with it on average (the phantom's glioma gain; per voxel the change is
    # swamped by interpolating the moved MRI twice across sharp vessel partial volumes)
    assert (b.mri - a.mri).mean() > 20
    np.testing.assert_allclose(b.d_mri_per_day, (b.mri - a.mri) / 14.0, atol=1e-9)


def test_longitudinal_needs_two_sessions(tmp_path) -> None:
    from bridge_xr.testing.study import write_analysis_study

    write_analysis_study(tmp_path, ("M009",))
    r = runner.invoke(
        app, ["longitudinal", str(tmp_path / "study"), "--subject", "M009", "--output",
              str(tmp_path / "t")]
    )  # fmt: skip
    assert r.exit_code == 2
    assert "need at least 2" in r.output
