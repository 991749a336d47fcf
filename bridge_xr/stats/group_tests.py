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

    Parameters
    ----------
    df : DataFrame
        One row per observation.
    value, group : str
        Response column and grouping column.

    Returns
    -------
    (DataFrame, DataFrame)
        Omnibus (``statistic``, ``p``, ``epsilon_squared`` ...) and pairwise (``z``, ``p``,
        ``effect_r`` ...).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"g": list("aaabbbccc"), "v": [1, 2, 3, 4, 5, 6, 7, 8, 9.0]})
    >>> omnibus, pairs = kruskal_dunn(df, value="v", group="g")
    >>> round(float(omnibus["statistic"][0]), 2), list(pairs["group_a"])
    (7.2, ['a', 'a', 'b'])
    """
    groups = _groups(df, value, group)
    data = df[[group, value]].dropna()
    data = data[data[group].astype(str).isin([k for k, _ in groups])]
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


def _groups(
    df: pd.DataFrame, value: str, group: str, minimum: int = 2
) -> list[tuple[str, np.ndarray]]:
    for col in (value, group):
        if col not in df.columns:
            raise InvalidInputError(f"no column {col!r}; columns are {list(df.columns)}")
    data = df[[group, value]].dropna()
    groups = [
        (str(k), g[value].to_numpy(float)) for k, g in data.groupby(group, sort=True, observed=True)
    ]
    groups = [(k, v) for k, v in groups if len(v)]
    if len(groups) < minimum:
        raise InvalidInputError(f"need at least {minimum} non-empty groups in {group!r}")
    return groups


def anova_tukey(df: pd.DataFrame, *, value: str, group: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One-way ANOVA, then Tukey's HSD (Tukey-Kramer for unequal n) on every pair.

    Effect sizes: eta-squared (SS_between / SS_total) for the omnibus test, the mean difference
    with its simultaneous 95 % confidence interval and Cohen's d (pooled SD) per pair.

    Parameters
    ----------
    df : DataFrame
        One row per observation.
    value, group : str
        Response column and grouping column.

    Returns
    -------
    (DataFrame, DataFrame)
        Omnibus (``statistic``, ``p``, ``eta_squared`` ...) and pairwise (``mean_diff``, ``p``,
        ``ci_low``, ``ci_high``, ``cohen_d`` ...).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"g": list("aaabbbccc"), "v": [1, 2, 3, 4, 5, 6, 7, 8, 9.0]})
    >>> omnibus, pairs = anova_tukey(df, value="v", group="g")
    >>> round(float(omnibus["eta_squared"][0]), 3), len(pairs)
    (0.9, 3)
    """
    groups = _groups(df, value, group)
    allv = np.concatenate([v for _, v in groups])
    n_total, k = len(allv), len(groups)
    grand = allv.mean()
    ss_between = sum(len(v) * (v.mean() - grand) ** 2 for _, v in groups)
    ss_within = sum(((v - v.mean()) ** 2).sum() for _, v in groups)
    df_b, df_w = k - 1, n_total - k
    if df_w <= 0:
        raise InvalidInputError("ANOVA needs more observations than groups")
    mse = ss_within / df_w
    f = (ss_between / df_b) / mse
    omnibus = pd.DataFrame(
        [
            {
                "test": "anova",
                "statistic": float(f),
                "df_between": df_b,
                "df_within": df_w,
                "p": float(stats.f.sf(f, df_b, df_w)),
                "eta_squared": float(ss_between / (ss_between + ss_within)),
                "n": n_total,
                "groups": k,
            }
        ]
    )
    rows = []
    for (a, va), (b, vb) in itertools.combinations(groups, 2):
        diff = vb.mean() - va.mean()
        se = np.sqrt(mse / 2 * (1 / len(va) + 1 / len(vb)))
        q = abs(diff) / se
        crit = stats.studentized_range.ppf(0.95, k, df_w)
        rows.append(
            {
                "test": "tukey-hsd",
                "group_a": a,
                "group_b": b,
                "n_a": len(va),
                "n_b": len(vb),
                "mean_diff": float(diff),
                "q": float(q),
                "p": float(stats.studentized_range.sf(q, k, df_w)),
                "ci_low": float(diff - crit * se),
                "ci_high": float(diff + crit * se),
                "cohen_d": float(diff / np.sqrt(mse)),
            }
        )
    return omnibus, pd.DataFrame(rows)


def mann_whitney(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Two-sided Mann-Whitney U (normal approximation, tie and continuity corrections).

    Effect size: rank-biserial correlation ``1 - 2 U_x / (n_x n_y)``.

    Parameters
    ----------
    x, y : ndarray
        The two samples.

    Returns
    -------
    dict
        ``statistic`` (U of x), ``z``, ``p``, ``rank_biserial``, ``n_a``, ``n_b``.

    Examples
    --------
    >>> import numpy as np
    >>> r = mann_whitney(np.array([1, 2, 3.0]), np.array([4, 5, 6.0]))
    >>> r["statistic"], r["rank_biserial"]
    (0.0, 1.0)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    nx, ny = len(x), len(y)
    if nx == 0 or ny == 0:
        raise InvalidInputError("Mann-Whitney U needs two non-empty samples")
    ranks = stats.rankdata(np.concatenate([x, y]))
    u_x = ranks[:nx].sum() - nx * (nx + 1) / 2
    n = nx + ny
    _, t = np.unique(ranks, return_counts=True)
    sigma = np.sqrt(nx * ny / 12 * ((n + 1) - (t**3 - t).sum() / (n * (n - 1))))
    mu = nx * ny / 2
    z = (abs(u_x - mu) - 0.5) / sigma if sigma > 0 else 0.0
    return {
        "test": "mann-whitney",  # type: ignore[dict-item]
        "statistic": float(u_x),
        "z": float(np.sign(u_x - mu) * z),
        "p": float(min(1.0, 2 * stats.norm.sf(z))),
        "rank_biserial": float(1 - 2 * u_x / (nx * ny)),
        "n_a": nx,
        "n_b": ny,
    }


def welch_t(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Welch's unequal-variance t test (two-sided), with Hedges' g.

    Parameters
    ----------
    x, y : ndarray
        The two samples.

    Returns
    -------
    dict
        ``statistic``, ``df``, ``p``, ``hedges_g``, ``mean_diff``, ``n_a``, ``n_b``.

    Examples
    --------
    >>> import numpy as np
    >>> r = welch_t(np.array([1, 2, 3.0]), np.array([1, 2, 3.0]))
    >>> r["statistic"], r["p"]
    (0.0, 1.0)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    nx, ny = len(x), len(y)
    if nx < 2 or ny < 2:
        raise InvalidInputError("Welch's t test needs at least two values per group")
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    se2 = vx / nx + vy / ny
    t = (x.mean() - y.mean()) / np.sqrt(se2)
    dof = se2**2 / ((vx / nx) ** 2 / (nx - 1) + (vy / ny) ** 2 / (ny - 1))
    pooled = np.sqrt(((nx - 1) * vx + (ny - 1) * vy) / (nx + ny - 2))
    g = (x.mean() - y.mean()) / pooled * (1 - 3 / (4 * (nx + ny) - 9))
    return {
        "test": "welch-t",  # type: ignore[dict-item]
        "statistic": float(t),
        "df": float(dof),
        "p": float(2 * stats.t.sf(abs(t), dof)),
        "hedges_g": float(g),
        "mean_diff": float(x.mean() - y.mean()),
        "n_a": nx,
        "n_b": ny,
    }


def spearman(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Spearman's rho (Pearson on average ranks) with the t-distribution p-value.

    Parameters
    ----------
    x, y : ndarray
        Paired samples.

    Returns
    -------
    dict
        ``statistic`` (rho), ``p``, ``n``.

    Examples
    --------
    >>> import numpy as np
    >>> round(spearman(np.arange(10.0), np.arange(10.0) ** 2)["statistic"], 6)
    1.0
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3:
        raise InvalidInputError("Spearman's rho needs at least three complete pairs")
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rho = float(np.corrcoef(rx, ry)[0, 1])
    t = rho * np.sqrt((n - 2) / max(1e-300, 1 - rho**2))
    return {
        "test": "spearman",  # type: ignore[dict-item]
        "statistic": rho,
        "p": float(2 * stats.t.sf(abs(t), n - 2)),
        "n": n,
    }


def pairwise(
    df: pd.DataFrame, *, value: str, group: str, test: str = "mann-whitney"
) -> pd.DataFrame:
    """A two-sample test on every pair of groups, Bonferroni-adjusted."""
    groups = _groups(df, value, group)
    fn = {"mann-whitney": mann_whitney, "welch": welch_t}[test]
    rows = []
    m = len(groups) * (len(groups) - 1) // 2
    for (a, va), (b, vb) in itertools.combinations(groups, 2):
        r = fn(va, vb)
        rows.append(
            {"group_a": a, "group_b": b, **r, "p_unadjusted": r["p"], "p": min(1.0, r["p"] * m)}
        )
    return pd.DataFrame(rows)
