"""Group comparisons as tidy tables (test used, n per group, statistic, p, effect size).

Examples
--------
>>> import pandas as pd
>>> df = pd.DataFrame({"g": list("aaabbbccc"), "v": [1, 2, 3, 4, 5, 6, 7, 8, 9]})
>>> omnibus, pairs = kruskal_dunn(df, value="v", group="g")
>>> round(float(omnibus["p"].iloc[0]), 4)
0.0273
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from bridge_xr.errors import InvalidInputError


def kruskal_dunn(df: pd.DataFrame, *, value: str, group: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kruskal-Wallis H test, then Dunn's pairwise test with Bonferroni correction.

    Dunn's z uses mean ranks with the tie correction ``sum(t^3 - t) / (12 (N - 1))``.
    Effect size: epsilon-squared ``H / ((N^2 - 1) / (N + 1))`` for the omnibus test, and
    ``r = |z| / sqrt(n_i + n_j)`` per pair.
    """
    data = df[[group, value]].dropna()
    groups = [(str(k), g[value].to_numpy(float)) for k, g in data.groupby(group, sort=True)]
    if len(groups) < 2 or any(len(v) == 0 for _, v in groups):
        raise InvalidInputError(f"need at least two non-empty groups in {group!r}")
    h, p = stats.kruskal(*[v for _, v in groups])
    n_total = len(data)
    omnibus = pd.DataFrame(
        [
            {
                "test": "kruskal-wallis",
                "statistic": float(h),
                "p": float(p),
                "epsilon_squared": float(h / ((n_total**2 - 1) / (n_total + 1))),
                "n": n_total,
                "groups": len(groups),
            }
        ]
    )
    ranks = stats.rankdata(data[value].to_numpy(float))
    labels = data[group].astype(str).to_numpy()
    _, counts = np.unique(ranks, return_counts=True)
    tie = np.sum(counts**3 - counts) / (12.0 * (n_total - 1))
    base = n_total * (n_total + 1) / 12.0 - tie
    mean_rank = {k: ranks[labels == k].mean() for k, _ in groups}
    size = {k: len(v) for k, v in groups}
    m = len(groups) * (len(groups) - 1) // 2
    rows = []
    for (a, _), (b, _) in itertools.combinations(groups, 2):
        z = (mean_rank[a] - mean_rank[b]) / np.sqrt(base * (1 / size[a] + 1 / size[b]))
        p_raw = 2 * stats.norm.sf(abs(z))
        rows.append(
            {
                "test": "dunn-bonferroni",
                "group_a": a,
                "group_b": b,
                "n_a": size[a],
                "n_b": size[b],
                "z": float(z),
                "p_unadjusted": float(p_raw),
                "p": float(min(1.0, p_raw * m)),
                "effect_r": float(abs(z) / np.sqrt(size[a] + size[b])),
            }
        )
    return omnibus, pd.DataFrame(rows)
