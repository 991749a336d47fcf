"""One entry point for the group tests: :func:`run_test` by name, on binned densities."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bridge_xr.errors import InvalidInputError
from bridge_xr.stats.group_tests import anova_tukey, kruskal_dunn, pairwise, spearman

TESTS = ("anova-tukey", "kruskal-dunn", "mann-whitney", "welch", "spearman", "equivalence")


def run_test(
    df: pd.DataFrame,
    *,
    response: str,
    by: str,
    test: str,
    bins: Any = None,
    margin: float = 0.05,
    reference: str | None = None,
    weight: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Group ``response`` by ``by`` (binned into density categories when ``bins`` given).

    Parameters
    ----------
    df : DataFrame
        A voxel table.
    response : str
        Column tested (e.g. ``mri_z``).
    by : str
        Grouping column (e.g. ``fraction_glioma``).
    test : {'anova-tukey', 'kruskal-dunn', 'mann-whitney', 'welch', 'spearman'}
        The test.
    bins : sequence of float, optional
        Bin ``by`` into density categories first.
    margin : float
        ``equivalence``: the margin on each category's proportion (the paper: 0.05).
    reference : str, optional
        ``equivalence``: the reference time point (default the first).
    weight : str, optional
        ``equivalence``: a count column (rows stand for that many units).

    ``equivalence`` takes ``response`` as the category column (e.g. ``category_glioma``) and
    ``by`` as the time point column (e.g. ``session``): the paper's ±margin rule on the maximum
    absolute deviation of proportions, and a TOST per category
    (:func:`bridge_xr.stats.stability.equivalence`).

    Returns
    -------
    (DataFrame, DataFrame)
        Omnibus and pairwise results, with ``response`` and ``by`` columns.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from bridge_xr.stats import DENSITY_BINS
    >>> df = pd.DataFrame({"mri": np.arange(6.0), "f": [0, 0, 0.1, 0.1, 0.6, 0.6]})
    >>> omnibus, _ = run_test(df, response="mri", by="f", test="kruskal-dunn", bins=DENSITY_BINS)
    >>> int(omnibus["groups"][0])
    3
    """
    from bridge_xr.stats.categories import density_category

    if test not in TESTS:
        raise InvalidInputError(f"unknown test {test!r}; choose one of {', '.join(TESTS)}")
    for col in (response, by):
        if col not in df.columns:
            raise InvalidInputError(f"no column {col!r} in the tables; columns: {list(df.columns)}")
    data = df.copy()
    if test == "equivalence":
        from bridge_xr.stats.stability import equivalence

        pairs = equivalence(data, category=response, timepoint=by, reference=reference,
                            margin=margin, weight=weight)  # fmt: skip
        per_cat = pairs.groupby("category", sort=True).agg(
            max_abs_deviation=("max_abs_deviation", "max"),
            stable_max_dev=("stable_max_dev", "all"),
            stable_tost=("stable_tost", "all"),
        )
        omnibus = per_cat.reset_index().assign(test="equivalence", margin=margin,
                                               response=response, by=by)  # fmt: skip
        return omnibus, pairs.assign(response=response, by=by)
    if test == "spearman":
        r = spearman(data[by].to_numpy(float), data[response].to_numpy(float))
        return pd.DataFrame([{**r, "response": response, "by": by}]), pd.DataFrame()
    group = by
    if bins is not None:
        group = f"{by}_category"
        data[group] = density_category(data[by].to_numpy(float), bins)
    if test == "anova-tukey":
        omnibus, pairs = anova_tukey(data, value=response, group=group)
    elif test == "kruskal-dunn":
        omnibus, pairs = kruskal_dunn(data, value=response, group=group)
    else:
        pairs = pairwise(data, value=response, group=group, test=test)
        omnibus = pd.DataFrame([{"test": test, "pairs": len(pairs), "correction": "bonferroni"}])
    summary = (
        data.groupby(group, observed=True)[response]
        .agg(
            n="count",
            median="median",
            mean="mean",
            q1=lambda v: v.quantile(0.25),
            q3=lambda v: v.quantile(0.75),
        )
        .reset_index()
        .rename(columns={group: "group"})
    )
    omnibus = omnibus.assign(response=response, by=group)
    omnibus.attrs["summary"] = summary
    return omnibus, pairs
