"""The voxel-correlation pipeline on phantom subjects, from the CLI: mask, normalise, extract,
extract-study (threads and a real dask-distributed LocalCluster), stats, plots, report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
from typer.testing import CliRunner

from bridge_xr.extract.tables import read_tables
from bridge_xr.io.read import read_image
from bridge_xr.stats.dispatch import run_test
from bridge_xr.testing.study import write_analysis_study
from bridge_xr_cli.main import app

runner = CliRunner()
MRI, ANGIO, GLIOMA = "invivo_mri/d060/T2w", "twophoton/d060/angiogram", "twophoton/d060/glioma"
BINS = "0,0.05,0.25,0.5,0.75,1"


def bridge(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    subjects = write_analysis_study(root, ("M001", "M002"))
    for st in subjects:
        r = bridge(
            "mask", st.store, "--mri", MRI, "--vessels", ANGIO, "--vessel-threshold", 1000,
            "--vessel-max", 1.0, "--tumour", GLIOMA, "--tumour-threshold", 900,
            "--output", "masks/d060/analysis", "--nagm-output", "masks/d060/nagm",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        r = bridge(
            "normalize", st.store, "--image", MRI, "--reference-mask", "masks/d060/nagm",
            "--image-out", f"{MRI}_z",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
    r = bridge(
        "extract-study", root / "study", "--output", root / "study" / "tables",
        "--threshold", "angiogram=1000", "--threshold", "glioma=900",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return root, subjects


def test_extract_writes_the_contract_table(study, tmp_path) -> None:
    root, subjects = study
    st = subjects[0]
    r = bridge(
        "extract", st.store, "--mri", MRI, "--microscopy", GLIOMA, "--microscopy", ANGIO,
        "--mask", "masks/d060/analysis", "--mri-z", f"{MRI}_z",
        "--threshold", "glioma=900", "--threshold", "angiogram=1000", "--output", tmp_path / "t",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    part = tmp_path / "t" / "subject=M001" / "session=d060"
    assert part.is_dir()
    df = pd.read_parquet(part)
    for col in ("image", "z", "y", "x", "mri", "mri_z", "fraction_glioma", "fraction_angiogram"):
        assert col in df.columns
    for col in ("ref_z_um", "ref_y_um", "ref_x_um"):
        assert col in df.columns
    assert all(pd.api.types.is_integer_dtype(df[c]) for c in "zyx")
    mask = read_image(str(st.store), "masks/d060/analysis").values
    assert len(df) == int((mask > 0).sum())
    mri = read_image(str(st.store), MRI)
    np.testing.assert_allclose(df["mri"], mri.values[df.z, df.y, df.x])
    assert df["fraction_glioma"].between(0, 1).all()
    # reference centre = scanner affine of the voxel centre, in µm
    aff = mri.attrs["transforms"]["scanner_ras"].to_affine(3)
    sp = np.array([mri.attrs["spacing"][d] for d in "zyx"])
    org = np.array([mri.attrs["origin"][d] for d in "zyx"])
    phys = df[["z", "y", "x"]].to_numpy() * sp + org
    ref = (phys @ np.asarray(aff)[:3, :3].T + np.asarray(aff)[:3, 3]) * 1000
    np.testing.assert_allclose(df[["ref_z_um", "ref_y_um", "ref_x_um"]].to_numpy(), ref, atol=1e-6)
    # hive partitions read back by pyarrow's dataset API with subject/session as columns
    ds = pads.dataset(tmp_path / "t", format="parquet", partitioning="hive").to_table().to_pandas()
    assert set(ds["subject"].astype(str)) == {"M001"}
    assert len(ds) == len(df)
    # again without --overwrite: refused, one line, exit 2, the table untouched
    r = bridge(
        "extract", st.store, "--mri", MRI, "--microscopy", GLIOMA, "--output", tmp_path / "t"
    )
    assert r.exit_code == 2
    assert "--overwrite" in r.output
    assert len(pd.read_parquet(part)) == len(df)


def test_density_recovers_the_phantom_vessel_partial_volume(study) -> None:
    root, subjects = study
    df = read_tables(root / "study" / "tables")
    for st in subjects:
        sub = df[(df.subject == st.store.name.split(".")[0]) & (df.coverage_angiogram > 0.999)]
        truth = st.phantom.vessel_fraction[sub.z, sub.y, sub.x]
        assert len(sub) > 200
        assert np.corrcoef(sub.fraction_angiogram, truth)[0, 1] > 0.97
        assert np.abs(sub.fraction_angiogram - truth).mean() < 0.05


def test_pipeline_recovers_the_phantom_effects(study, tmp_path) -> None:
    root, _ = study
    tables = root / "study" / "tables"
    df = read_tables(tables)
    assert set(df.subject) == {"M001", "M002"}
    # vessels make T2w darker: in normal-appearing grey matter (no glioma), medians fall
    nagm = df[df.mask_label == 1]
    om, _ = run_test(nagm, response="mri_z", by="fraction_angiogram", test="kruskal-dunn",
                     bins=[0, 0.05, 0.25, 0.5, 0.75, 1])  # fmt: skip
    med = om.attrs["summary"]["median"].to_numpy()
    assert np.all(np.diff(med[1:]) < 0)
    assert om["p"].item() < 1e-6
    # glioma makes T2w brighter: in voxels with few vessels, medians rise (categories with n >= 5)
    r = bridge(
        "stats", tables, "--response", "mri_z", "--by", "fraction_glioma", "--bins", BINS,
        "--test", "anova-tukey", "--where", "fraction_angiogram < 0.05",
        "--output", tmp_path / "glioma",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = pd.read_csv(tmp_path / "glioma_summary.csv")
    omnibus = pd.read_csv(tmp_path / "glioma_omnibus.csv")
    big = summary[summary.n >= 5]
    assert len(big) >= 4
    assert np.all(np.diff(big["median"]) > 0)
    assert omnibus["p"].item() < 1e-6
    assert {"eta_squared", "n", "test"} <= set(omnibus.columns)
    pairs = pd.read_csv(tmp_path / "glioma_pairs.csv")
    assert {"group_a", "group_b", "n_a", "n_b", "p", "ci_low", "ci_high"} <= set(pairs.columns)


def test_plots_and_report(study, tmp_path) -> None:
    root, _ = study
    tables = root / "study" / "tables"
    r = bridge("plot", tables, "--kind", "box", "--by", "fraction_glioma", "--output",
               tmp_path / "box.png")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "box.png").stat().st_size > 1000
    assert (tmp_path / "box.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    r = bridge("plot", tables, "--kind", "heatmap", "--by", "fraction_glioma", "--output",
               tmp_path / "heat.svg")  # fmt: skip
    assert r.exit_code == 0, r.output
    lesions_csv = tmp_path / "lesions_mann_whitney.csv"
    lesions_csv.write_text("object,metric,p\nexvivo/tumour,lesions,0.0123\n", encoding="utf-8")
    r = bridge("report", root / "study", "--output", tmp_path / "bad", "--include",
               tmp_path / "notes.txt")  # fmt: skip
    assert r.exit_code == 2
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    r = bridge("report", root / "study", "--output", tmp_path / "report", "--include",
               lesions_csv, "--include", tmp_path / "box.png")  # fmt: skip
    assert r.exit_code == 0, r.output
    html = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "Analyses" in html
    assert "0.0123" in html
    assert (tmp_path / "report" / "figures" / "01_box.png").stat().st_size > 1000
    assert "Kruskal-Wallis" in html
    assert "glioma_to_mri" in html
    summary = json.loads((tmp_path / "report" / "summary.json").read_text(encoding="utf-8"))
    assert summary["channels"]["angiogram"]["spearman_rho"] < -0.5
    assert summary["channels"]["angiogram"]["kruskal_p"] < 1e-6


def test_extract_study_on_a_local_cluster_matches_the_threaded_run(study, tmp_path) -> None:
    distributed = pytest.importorskip("distributed")
    from bridge_xr.extract.study import extract_study

    root, _ = study
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        distributed.Client(cluster) as client,
    ):
        assert len(client.scheduler_info()["workers"]) == 2
        extract_study(
            root / "study", tmp_path / "dist", thresholds={"angiogram": 1000, "glioma": 900}
        )
    a = read_tables(root / "study" / "tables").sort_values(["subject", "z", "y", "x"])
    b = read_tables(tmp_path / "dist").sort_values(["subject", "z", "y", "x"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_bad_input_is_one_line_and_exit_2(study, tmp_path) -> None:
    root, subjects = study
    store = subjects[0].store
    cases = [
        ("extract", store, "--mri", "nope/T2w", "--microscopy", GLIOMA, "--output", tmp_path),
        ("extract", store, "--mri", MRI, "--microscopy", GLIOMA, "--threshold", "glioma=x",
         "--output", tmp_path),
        ("extract", store, "--mri", MRI, "--microscopy", GLIOMA, "--mask", GLIOMA,
         "--output", tmp_path),
        ("stats", root / "study" / "tables", "--response", "nope", "--by", "fraction_glioma"),
        ("stats", root / "study" / "tables", "--response", "mri_z", "--by", "fraction_glioma",
         "--bins", "0.5,0.1"),
        ("plot", root / "study" / "tables", "--kind", "pie", "--output", tmp_path / "x.png"),
        ("normalize", store, "--image", MRI, "--reference-mask", GLIOMA, "--image-out", "x/y"),
        ("extract-study", tmp_path / "empty", "--output", tmp_path / "t"),
    ]  # fmt: skip
    for args in cases:
        r = bridge(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) <= 2, r.output
    assert not (tmp_path / "t").exists()
