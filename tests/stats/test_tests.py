import numpy as np
import pandas as pd
import pytest
import scikit_posthocs as sp
from scipy import stats

from bridge_xr.stats.tests import kruskal_dunn


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
