import numpy as np
import pandas as pd
import pytest
import scikit_posthocs as sp
from scipy import stats

from bridge_xr.stats.dispatch import run_test
from bridge_xr.stats.group_tests import anova_tukey, kruskal_dunn, mann_whitney, spearman, welch_t
from bridge_xr.stats.stability import equivalence, percent_signal_enhancement


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kruskal_dunn_matches_scipy_and_scikit_posthocs_with_ties_and_unequal_groups(seed) -> None:
    rng = np.random.default_rng(seed)
    sizes = {"rigid": 6, "similarity": 9, "affine": 4, "tps": 7}
    df = pd.DataFrame(
        [
            {
                "model": k,
                "rmse": float(np.round(rng.normal(50 + 10 * i, 15), 0)),
            }  # rounding -> ties
            for i, (k, n) in enumerate(sizes.items())
            for _ in range(n)
        ]
    )
    omnibus, pairs = kruskal_dunn(df, value="rmse", group="model")
    h, p = stats.kruskal(*[g["rmse"] for _, g in df.groupby("model", sort=True)])
    assert omnibus["statistic"].item() == pytest.approx(h, abs=1e-10)
    assert omnibus["p"].item() == pytest.approx(p, abs=1e-10)
    oracle = sp.posthoc_dunn(df, val_col="rmse", group_col="model", p_adjust="bonferroni")
    for _, r in pairs.iterrows():
        assert r["p"] == pytest.approx(oracle.loc[r["group_a"], r["group_b"]], abs=1e-10)
    assert set(pairs.columns) >= {"n_a", "n_b", "z", "p", "effect_r", "test"}


def _groups_frame(seed, sizes=(12, 7, 20, 5), ties=True):
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(sizes):
        v = rng.normal(10 + 1.5 * i, 3 + i, size=n)
        rows += [{"g": f"g{i}", "v": float(np.round(v_, 0) if ties else v_)} for v_ in v]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anova_tukey_matches_statsmodels_and_scipy(seed) -> None:
    import statsmodels.api as sm
    from statsmodels.formula.api import ols

    df = _groups_frame(seed)
    omnibus, pairs = anova_tukey(df, value="v", group="g")
    table = sm.stats.anova_lm(ols("v ~ C(g)", data=df).fit())
    assert omnibus["statistic"].item() == pytest.approx(table["F"].iloc[0], abs=1e-10)
    assert omnibus["p"].item() == pytest.approx(table["PR(>F)"].iloc[0], abs=1e-10)
    ss = table["sum_sq"]
    assert omnibus["eta_squared"].item() == pytest.approx(ss.iloc[0] / ss.sum(), abs=1e-10)
    groups = [g["v"].to_numpy() for _, g in df.groupby("g", sort=True)]
    oracle = stats.tukey_hsd(*groups)
    ci = oracle.confidence_interval(0.95)
    names = sorted(df["g"].unique())
    for _, r in pairs.iterrows():
        i, j = names.index(r["group_a"]), names.index(r["group_b"])
        assert r["p"] == pytest.approx(oracle.pvalue[i, j], abs=1e-10)
        # scipy's statistic is mean_i - mean_j; ours is mean_b - mean_a
        assert r["mean_diff"] == pytest.approx(-oracle.statistic[i, j], abs=1e-10)
        assert r["ci_low"] == pytest.approx(-ci.high[i, j], abs=1e-8)
    assert len(pairs) == 6


@pytest.mark.parametrize("seed", [0, 1])
def test_two_sample_tests_and_spearman_match_scipy_and_statsmodels(seed) -> None:
    from statsmodels.stats.weightstats import ttest_ind

    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(5, 2, 23), 0)  # ties
    y = np.round(rng.normal(6, 3, 31), 0)
    mw = mann_whitney(x, y)
    ref = stats.mannwhitneyu(x, y, method="asymptotic", use_continuity=True)
    assert mw["statistic"] == pytest.approx(ref.statistic, abs=1e-10)
    assert mw["p"] == pytest.approx(ref.pvalue, abs=1e-10)
    w = welch_t(x, y)
    t, p, dof = ttest_ind(x, y, usevar="unequal")
    assert (w["statistic"], w["p"], w["df"]) == pytest.approx((t, p, dof), abs=1e-10)
    a = rng.normal(size=40)
    b = np.round(a + rng.normal(size=40), 0)
    sr = spearman(a, b)
    ref2 = stats.spearmanr(a, b)
    assert sr["statistic"] == pytest.approx(ref2.statistic, abs=1e-10)
    assert sr["p"] == pytest.approx(ref2.pvalue, abs=1e-10)
    assert sr["statistic"] == pytest.approx(pd.Series(a).corr(pd.Series(b), "spearman"), abs=1e-10)


def test_equivalence_tost_matches_statsmodels_and_flags_a_shifted_category() -> None:
    from statsmodels.stats.proportion import tost_proportions_2indep

    rng = np.random.default_rng(0)
    cats = ["barely", "not", "strong"]
    tp1 = rng.choice(cats, size=900, p=[0.3, 0.2, 0.5])
    tp2 = rng.choice(cats, size=700, p=[0.31, 0.2, 0.49])
    tp3 = rng.choice(cats, size=800, p=[0.42, 0.15, 0.43])  # barely visible shifts by +12 %
    df = pd.DataFrame({"t": ["t1"] * 900 + ["t2"] * 700 + ["t3"] * 800, "c": np.r_[tp1, tp2, tp3]})
    out = equivalence(df, category="c", timepoint="t", margin=0.05)
    for _, r in out.iterrows():
        c1 = round(r["proportion"] * r["n"])
        c0 = round(r["reference_proportion"] * r["n_reference"])
        ref = tost_proportions_2indep(
            c1,
            r["n"],
            c0,
            r["n_reference"],
            -0.05,
            0.05,
            compare="diff",
            method="wald",
            correction=False,
        )
        assert r["p_tost"] == pytest.approx(ref.pvalue, abs=1e-10)
    stable = out.groupby("category")["stable_max_dev"].first()
    assert not stable["barely"]
    assert bool(stable["not"]) == (out[out.category == "not"].deviation.abs().max() <= 0.05)


def test_percent_signal_enhancement_formula() -> None:
    pre = np.array([100.0, 120.0, 90.0])
    post = np.array([350.0, 400.0, 300.0])
    r = percent_signal_enhancement(pre, post)
    expected = (post - pre) / pre * 100
    np.testing.assert_allclose(r["pse_percent"], expected)
    assert r["sd"] == pytest.approx(np.std(expected, ddof=1))
    assert r["cv_percent"] == pytest.approx(np.std(expected, ddof=1) / expected.mean() * 100)


def test_run_test_bins_density_into_paper_categories() -> None:
    rng = np.random.default_rng(0)
    frac = np.r_[np.zeros(50), rng.uniform(0, 1, 300)]
    df = pd.DataFrame({"fraction_glioma": frac, "mri_z": 2 * frac + rng.normal(0, 0.3, 350)})
    omnibus, pairs = run_test(
        df,
        response="mri_z",
        by="fraction_glioma",
        test="kruskal-dunn",
        bins=[0, 0.05, 0.25, 0.5, 0.75, 1],
    )
    summary = omnibus.attrs["summary"]
    assert summary["group"].tolist() == ["w/o", "0-5%", "5-25%", "25-50%", "50-75%", "75-100%"]
    assert summary["n"].sum() == 350
    assert np.all(np.diff(summary["median"]) > 0)
    assert omnibus["p"].item() < 1e-10


def test_stats_cli_equivalence_over_sessions_by_hand(tmp_path) -> None:
    import pandas as pd
    from typer.testing import CliRunner

    from bridge_xr_cli.main import app

    # d060: 50 % strongly / 50 % not visible; d074: 53 % / 47 % (within 5 %); d088: 60 % / 40 %
    counts = {"d060": (500, 500), "d074": (530, 470), "d088": (600, 400)}
    for session, (a, b) in counts.items():
        part = tmp_path / "t" / "subject=M001" / f"session={session}"
        part.mkdir(parents=True)
        pd.DataFrame({"visibility": ["strong"] * a + ["none"] * b}).to_parquet(part / "p.parquet")
    out = tmp_path / "eq"
    res = CliRunner().invoke(app, ["stats", str(tmp_path / "t"), "--response", "visibility",
                                   "--by", "session", "--test", "equivalence", "--margin", "5%",
                                   "--output", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    pairs = pd.read_csv(f"{out}_pairs.csv")
    dev = pairs.set_index(["timepoint", "category"])["deviation"]
    got = {
        (r.category, r.max_abs_deviation) for r in pd.read_csv(f"{out}_omnibus.csv").itertuples()
    }
    assert {(c, round(d, 6)) for c, d in got} == {("none", 0.1), ("strong", 0.1)}
    omni = pd.read_csv(f"{out}_omnibus.csv")
    assert not omni["stable_max_dev"].any()  # d088 deviates by 10 % > 5 %
    assert abs(dev.loc[("d074", "strong")] - 0.03) < 1e-9
    assert abs(dev.loc[("d088", "none")] + 0.10) < 1e-9
    res = CliRunner().invoke(app, ["stats", str(tmp_path / "t"), "--response", "visibility",
                                   "--by", "session", "--test", "equivalence", "--margin", "x"])  # fmt: skip
    assert res.exit_code == 2


def test_stats_cli_on_one_rating_table_matches_scipy_kruskal(tmp_path) -> None:
    """Fig. 2F: vessel diameter per MRI visibility category, from a hand-rated CSV."""
    from typer.testing import CliRunner

    from bridge_xr_cli.main import app

    rng = np.random.default_rng(4)
    cats = {"not visible": 4, "barely visible": 11, "visible": 4, "strongly visible": 6}
    rows = [
        {"vessel": f"v{i}_{c}", "t2star_visibility": c, "diameter_um": rng.normal(10 + 8 * k, 3)}
        for k, (c, n) in enumerate(cats.items())
        for i in range(n)
    ]
    table = pd.DataFrame(rows)
    table.to_csv(tmp_path / "vessels.csv", index=False)
    out = tmp_path / "fig2f"
    res = CliRunner().invoke(app, ["stats", str(tmp_path / "vessels.csv"), "--response",
                                   "diameter_um", "--by", "t2star_visibility", "--test",
                                   "kruskal-dunn", "--output", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    omni = pd.read_csv(f"{out}_omnibus.csv")
    ref = stats.kruskal(*[g["diameter_um"] for _, g in table.groupby("t2star_visibility")])
    assert omni["statistic"].item() == pytest.approx(ref.statistic)
    assert omni["p"].item() == pytest.approx(ref.pvalue)
    res = CliRunner().invoke(app, ["stats", str(tmp_path / "nope.csv"), "--response", "d",
                                   "--by", "v"])  # fmt: skip
    assert res.exit_code == 2
    assert "no such table file" in res.output
