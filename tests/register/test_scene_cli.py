"""Registrations stored in the scene, checked against the phantom's ground truth, via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject, scene_transforms
from bridge_xr.io.validate import validate_store
from bridge_xr.model.image import physical_extent
from bridge_xr.scene.chains import model_from_record
from bridge_xr.testing.phantom import PhantomConfig
from bridge_xr.testing.study import write_phantom_study
from bridge_xr_cli.main import app

runner = CliRunner()
FIXED, MOVING = "invivo_mri/d060/T2w", "twophoton/d060/angiogram"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    st = write_phantom_study(root, PhantomConfig.tiny())
    ph = st.phantom
    q = np.random.default_rng(3).uniform([5, 20, 20], [55, 220, 220], size=(25, 3))  # 2P zyx µm
    p = ph.truth.inverse(q)  # exact MRI positions (µm zyx)
    lm = pd.DataFrame(
        {
            "name": [f"L{i}" for i in range(len(q))],
            "moving_x": q[:, 2],
            "moving_y": q[:, 1],
            "moving_z": q[:, 0],
            "fixed_x": p[:, 2],
            "fixed_y": p[:, 1],
            "fixed_z": p[:, 0],
        }
    )
    lm.to_csv(root / "exact.csv", index=False)
    return st, root / "exact.csv"


def bridge(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("model", ["affine", "tps"])
def test_register_stores_a_valid_edge_that_maps_like_the_exact_model(
    study, tmp_path, model
) -> None:
    st, csv = study
    rep_path = tmp_path / "reg.json"
    r = bridge(
        "register",
        st.store,
        "--fixed",
        FIXED,
        "--moving",
        MOVING,
        "--landmarks",
        csv,
        "--model",
        model,
        "--name",
        f"2p_{model}",
        "--report",
        rep_path,
        "--overwrite",
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(rep_path.read_text())
    for key in ("model", "kernel", "n_landmarks", "rmse_um", "loo_tre_um", "loo_tre_rms_um"):
        assert key in rep
    assert rep["n_landmarks"] == 25
    assert len(rep["loo_tre_um"]) == 25
    assert validate_store(str(st.store)) == []
    rec = read_subject(str(st.store)).registrations[f"2p_{model}"]
    exact = model_from_record(rec)
    edge = next(t for t in scene_transforms(str(st.store)) if t.name == f"2p_{model}")
    assert edge.input.path == FIXED
    assert edge.output.path == MOVING
    mri = read_image(str(st.store), FIXED)
    # MRI intrinsic zyx mm, inside the image (where the rasterised field is defined)
    pts_mm = np.random.default_rng(0).uniform([0.0, 0.0, 0.0], [0.15, 0.33, 0.33], size=(200, 3))
    if model == "tps":
        from bridge_xr.model.transforms import Bijection, Displacements, Sequence

        assert isinstance(edge, Bijection)

        def bound(seq):
            parts = []
            for t in seq.transformations:
                if isinstance(t, Displacements):
                    f = read_image(str(st.store), t.path)
                    t = t.bind(
                        f.values,
                        spacing=[f.attrs["spacing"][d] for d in "zyx"],
                        origin=[f.attrs["origin"][d] for d in "zyx"],
                    )
                parts.append(t)
            return Sequence(transformations=tuple(parts))

        via_edge = bound(edge.forward).transform_points(pts_mm)
        inv = rec.report["inverse_field"]
        assert inv["path"] == f"coordinateTransformations/2p_{model}_inverse"
        back_mm = bound(edge.inverse_).transform_points(via_edge)
        # the inverse field covers the 2P image only: check the points that land inside it
        m_ext = physical_extent(read_image(str(st.store), MOVING))
        inside = np.all(
            [
                (via_edge[:, i] >= m_ext[d][0]) & (via_edge[:, i] <= m_ext[d][1])
                for i, d in enumerate("zyx")
            ],
            axis=0,
        )
        assert inside.sum() > 20
        round_trip_um = np.linalg.norm(back_mm - pts_mm, axis=1)[inside] * 1000
        # both fields are near-isometric here, so their errors add (x2: the probe error is sampled)
        assert round_trip_um.max() <= 2 * (inv["max_error_um"] + rec.certified_max_error_um) + 1e-3
        assert inv["points_without_inverse"] == 0
        tol = rec.certified_max_error_um + 1e-3
        assert rec.certified_max_error_um < 5.0
    else:
        via_edge = edge.transform_points(pts_mm)
        tol = 1e-6
        np.testing.assert_allclose(edge.inverse().transform_points(via_edge), pts_mm, atol=1e-9)
    via_exact = exact.forward_points(pts_mm[:, ::-1] * 1000)[:, ::-1]  # µm zyx in the 2P image
    assert np.abs(via_edge - via_exact).max() <= tol
    assert mri.attrs["unit"] == "millimeter"


def test_transform_points_round_trip_and_accuracy(study, tmp_path) -> None:
    st, csv = study
    assert (
        bridge(
            "register",
            st.store,
            "--fixed",
            FIXED,
            "--moving",
            MOVING,
            "--landmarks",
            csv,
            "--model",
            "tps",
            "--name",
            "2p_to_mri",
            "--overwrite",
        ).exit_code
        == 0
    )
    q = np.random.default_rng(9).uniform([10, 40, 40], [50, 200, 200], size=(50, 3))
    pts = pd.DataFrame({"x": q[:, 2], "y": q[:, 1], "z": q[:, 0], "cell_id": np.arange(50)})
    pts.to_csv(tmp_path / "cells.csv", index=False)
    alt = ("register", st.store, "--fixed", FIXED, "--moving", MOVING, "--landmarks", csv)
    assert bridge(*alt, "--model", "affine", "--name", "2p_alt", "--overwrite").exit_code == 0
    args = ("transform-points", st.store, tmp_path / "cells.csv", "--from", MOVING, "--to", FIXED)
    r = bridge(*args, "--output", tmp_path / "cells_mri.csv")
    # several registrations join the pair: refused, naming the candidates
    assert r.exit_code == 2
    assert "--via" in r.output
    assert "2p_to_mri" in r.output
    assert not (tmp_path / "cells_mri.csv").exists()
    r = bridge(*args, "--output", tmp_path / "cells_mri.csv", "--transform", "2p_to_mri")
    assert r.exit_code == 0, r.output
    mri = pd.read_csv(tmp_path / "cells_mri.csv")
    assert mri["cell_id"].tolist() == list(range(50))  # extra columns pass through
    truth = st.phantom.truth.inverse(q)[:, ::-1]
    err = np.linalg.norm(mri[["x", "y", "z"]].to_numpy() - truth, axis=1)
    assert np.sqrt(np.mean(err**2)) < 5.0  # 25 exact landmarks recover the smooth warp to a few µm
    r = bridge(
        "transform-points",
        st.store,
        tmp_path / "cells_mri.csv",
        "--from",
        FIXED,
        "--to",
        MOVING,
        "--output",
        tmp_path / "back.csv",
        "--via",
        "2p_to_mri",
    )
    assert r.exit_code == 0, r.output
    back = pd.read_csv(tmp_path / "back.csv")
    np.testing.assert_allclose(
        back[["x", "y", "z"]].to_numpy(), pts[["x", "y", "z"]].to_numpy(), atol=1e-6
    )


def test_compare_models_and_inter_rater(study, tmp_path) -> None:
    st, csv = study
    out = tmp_path / "cmp"
    r = bridge(
        "compare-models",
        st.store,
        "--fixed",
        FIXED,
        "--moving",
        MOVING,
        "--landmarks",
        st.landmark_csvs[0],
        "--landmarks",
        st.landmark_csvs[1],
        "--output",
        out,
    )
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "models.csv")
    assert set(table["model"]) == {"rigid", "similarity", "affine", "tps"}
    assert (out / "model_comparison.png").stat().st_size > 5000
    stats_table = pd.read_csv(out / "statistics.csv")
    assert {"kruskal-wallis", "dunn-bonferroni"} <= set(stats_table["test"])
    r = bridge(
        "inter-rater",
        st.store,
        "--fixed",
        FIXED,
        "--moving",
        MOVING,
        "--model",
        "affine",
        "--landmarks",
        st.landmark_csvs[0],
        "--landmarks",
        st.landmark_csvs[1],
        "--report",
        tmp_path / "irr.json",
    )
    assert r.exit_code == 0, r.output
    irr = json.loads((tmp_path / "irr.json").read_text())
    sigma = st.phantom.config.rater_sigma_um
    assert 0 < irr["rmse_um"] < 10 * sigma
    r = bridge(
        "inter-rater",
        st.store,
        "--fixed",
        FIXED,
        "--moving",
        MOVING,
        "--model",
        "affine",
        "--landmarks",
        st.landmark_csvs[0],
        "--landmarks",
        st.landmark_csvs[0],
        "--report",
        tmp_path / "same.json",
    )
    assert json.loads((tmp_path / "same.json").read_text())["rmse_um"] == 0.0
    assert irr["grid_50x50_per_slice"]["n_points"] == 50 * 50 * 15  # 15 slices in the tiny 2P stack


def test_landmarks_import_export_cli(study, tmp_path) -> None:
    _, csv = study
    r = bridge(
        "landmarks", "export", csv, "--format", "slicer-fcsv", "--output", tmp_path / "lm.fcsv"
    )
    assert r.exit_code == 0, r.output
    r = bridge(
        "landmarks",
        "import",
        tmp_path / "lm_moving.fcsv",
        tmp_path / "lm_fixed.fcsv",
        "--to",
        tmp_path / "back.csv",
    )
    assert r.exit_code == 0, r.output
    a, b = pd.read_csv(csv), pd.read_csv(tmp_path / "back.csv")
    np.testing.assert_allclose(a.iloc[:, 1:7].to_numpy(), b.iloc[:, 1:7].to_numpy(), atol=1e-9)


def test_register_user_errors(study, tmp_path) -> None:
    st, csv = study
    r = bridge("register", st.store, "--fixed", "nope/x", "--moving", MOVING, "--landmarks", csv)
    assert r.exit_code == 2
    assert "no image 'nope/x'" in r.stderr
    few = pd.read_csv(csv).head(3)
    few.to_csv(tmp_path / "few.csv", index=False)
    r = bridge(
        "register",
        st.store,
        "--fixed",
        FIXED,
        "--moving",
        MOVING,
        "--landmarks",
        tmp_path / "few.csv",
        "--model",
        "tps",
        "--name",
        "few",
    )
    assert r.exit_code == 2
    assert "at least 5 landmarks" in r.stderr
    r = bridge(
        "register",
        st.store,
        "--fixed",
        FIXED,
        "--moving",
        MOVING,
        "--landmarks",
        csv,
        "--kernel",
        "gauss",
    )
    assert r.exit_code == 2
    assert "--kernel" in r.stderr
    assert "few" not in read_subject(str(st.store)).registrations
    r = bridge(
        "transform-points",
        st.store,
        tmp_path / "missing.csv",
        "--from",
        MOVING,
        "--to",
        FIXED,
        "--output",
        tmp_path / "o.csv",
    )
    assert r.exit_code == 2
    assert not Path(tmp_path / "o.csv").exists()


def test_register_writes_a_bootstrap_tre_map(study, tmp_path) -> None:
    st, _ = study
    r = bridge(
        "register",
        st.store,
        "--fixed",
        FIXED,
        "--moving",
        MOVING,
        "--landmarks",
        st.landmark_csvs[0],
        "--model",
        "affine",
        "--name",
        "tre",
        "--tre-map",
        "--fle",
        "20",
        "--report",
        tmp_path / "r.json",
        "--overwrite",
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["tre_map"]["fle_rms_um"] == 20.0
    tre = read_image(str(st.store), "qc/tre/tre_map")
    assert tre.shape == read_image(str(st.store), FIXED).shape
    assert 0 < float(tre.min()) < float(tre.max())
    assert validate_store(str(st.store)) == []
    # QC figures next to the report: real PNGs; the landmarks drawn are those near the slice
    from PIL import Image

    figs = rep["qc_figures"]
    for key, suffix in (("qc", "r_qc.png"), ("qc_fine", "r_qc_fine.png"), ("tre", "r_tre.png")):
        assert Path(figs[key]) == tmp_path / suffix
        with Image.open(figs[key]) as im:
            assert im.format == "PNG"
            assert min(im.size) > 200
    from bridge_xr.register.landmarks import arrays, read_csv

    _, f_pts, _ = arrays(read_csv(st.landmark_csvs[0]))
    mri = read_image(str(st.store), FIXED)
    from bridge_xr.model.units import conversion_factor

    fac = conversion_factor("micrometer", mri.attrs["unit"])
    z_idx = (f_pts[:, 2] * fac - mri.attrs["origin"]["z"]) / mri.attrs["spacing"]["z"]
    assert figs["slice"] == int(np.rint(np.median(z_idx)))
    assert figs["landmarks_on_slice"] == int(np.sum(np.abs(z_idx - figs["slice"]) <= 1.5))
    assert figs["landmarks_on_slice"] > 0


def test_register_with_local_refinement_from_the_cli(study, tmp_path) -> None:
    from bridge_xr.register.landmarks import arrays, read_csv

    st, _ = study
    out_csv = tmp_path / "refined.csv"
    r = bridge(
        "register",
        st.store,
        "--fixed",
        FIXED,
        "--moving",
        MOVING,
        "--landmarks",
        st.landmark_csvs[0],
        "--model",
        "affine",
        "--name",
        "refined",
        "--refine",
        "affine",
        "--refine-radius",
        "100um",
        "--refined-landmarks",
        out_csv,
        "--report",
        tmp_path / "r.json",
        "--overwrite",
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["refinement"]["accepted"] > 0
    # accepted moves are bounded by half the radius, and the refined CSV holds them
    _, _, m0 = arrays(read_csv(st.landmark_csvs[0]))
    _, _, m1 = arrays(read_csv(out_csv))
    moved = np.linalg.norm(m1 - m0, axis=1)
    assert moved.max() <= 50.0 + 1e-9
    assert moved.max() > 0
    r = bridge(
        "register",
        st.store,
        "--fixed",
        FIXED,
        "--moving",
        MOVING,
        "--landmarks",
        st.landmark_csvs[0],
        "--refine",
        "spline",
        "--name",
        "x",
    )
    assert r.exit_code == 2
    assert "rigid, affine or bspline" in r.stderr
