"""Stability over time points: the paper's ±5 % equivalence of proportions, and PSE."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from bridge_xr.errors import InvalidInputError


def equivalence(
    df: pd.DataFrame,
    *,
    category: str,
    timepoint: str,
    reference: str | None = None,
    margin: float = 0.05,
    alpha: float = 0.05,
    weight: str | None = None,
) -> pd.DataFrame:
    """The paper's ±margin equivalence of category proportions across time points.

    For every category and later time point: the proportion, its deviation from the reference
    time point, and a TOST (two one-sided Wald z tests on the difference of two independent
    proportions, unpooled variance) against ``±margin``. A category is stable when the maximum
    absolute deviation over all time points is within the margin (``stable_max_dev``) and, the
    stricter variant, when every TOST p is below ``alpha`` (``stable_tost``).

    Parameters
    ----------
    df : DataFrame
        One row per voxel: its category and its time point.
    category, timepoint : str
        Column names.
    reference : str, optional
        Reference time point (default: the first).
    margin : float
        Equivalence margin on the proportion (the paper: 5 %).
    alpha : float
        TOST level.
    weight : str, optional
        A count column: each row stands for that many units (e.g. voxels per diameter category
        and session, as ``bridge vessel-diameters`` writes them).

    Returns
    -------
    DataFrame
        Per category and later time point: ``proportion``, ``deviation``, ``p_tost``,
        ``stable_max_dev``, ``stable_tost`` ...

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"cat": ["a", "b"] * 100, "tp": ["d1"] * 100 + ["d2"] * 100})
    >>> equivalence(df, category="cat", timepoint="tp")["deviation"].tolist()
    [0.0, 0.0]
    """
    for col in (category, timepoint, *([weight] if weight else [])):
        if col not in df.columns:
            raise InvalidInputError(f"no column {col!r}; columns are {list(df.columns)}")
    if weight is None:
        counts = pd.crosstab(df[timepoint].astype(str), df[category].astype(str))
    else:
        w = pd.to_numeric(df[weight], errors="coerce")
        if w.isna().any() or (w < 0).any():
            raise InvalidInputError(f"weight column {weight!r} must hold counts >= 0")
        counts = pd.crosstab(df[timepoint].astype(str), df[category].astype(str), values=w,
                             aggfunc="sum").fillna(0)  # fmt: skip
    if reference is None:
        reference = str(counts.index[0])
    if reference not in counts.index:
        raise InvalidInputError(f"reference time point {reference!r} not in {list(counts.index)}")
    n = counts.sum(axis=1)
    p_ref = counts.loc[reference] / n[reference]
    rows = []
    for tp in counts.index:
        if tp == reference:
            continue
        for cat in counts.columns:
            p1, n1 = counts.loc[tp, cat] / n[tp], n[tp]
            p0, n0 = p_ref[cat], n[reference]
            diff = p1 - p0
            se = np.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
            if se > 0:
                p_low = stats.norm.sf((diff + margin) / se)  # H0: diff <= -margin
                p_upp = stats.norm.cdf((diff - margin) / se)  # H0: diff >= +margin
            else:
                p_low = p_upp = 0.0 if abs(diff) < margin else 1.0
            rows.append(
                {
                    "category": cat,
                    "timepoint": tp,
                    "reference": reference,
                    "proportion": float(p1),
                    "reference_proportion": float(p0),
                    "deviation": float(diff),
                    "n": int(n1),
                    "n_reference": int(n0),
                    "p_tost": float(max(p_low, p_upp)),
                }
            )
    out = pd.DataFrame(rows)
    if out.empty:
        raise InvalidInputError("equivalence needs at least two time points")
    worst = out.groupby("category")["deviation"].apply(lambda d: d.abs().max())
    out["max_abs_deviation"] = out["category"].map(worst)
    out["stable_max_dev"] = out["max_abs_deviation"] <= margin
    tost = out.groupby("category")["p_tost"].max()
    out["stable_tost"] = out["category"].map(tost) < alpha
    out["margin"] = margin
    return out


def percent_signal_enhancement(pre: np.ndarray, post: np.ndarray) -> dict[str, float]:
    """PSE = (SI_post - SI_pre) / SI_pre x 100 % per dataset; mean, SD (ddof 1) and CV.

    Parameters
    ----------
    pre, post : ndarray
        Signal intensity before and after contrast, one value per dataset.

    Returns
    -------
    dict
        ``pse_percent`` per dataset, ``mean``, ``sd``, ``cv_percent``, ``n``.

    Examples
    --------
    >>> import numpy as np
    >>> percent_signal_enhancement(np.array([100.0, 200.0]), np.array([150.0, 260.0]))["pse_percent"]
    [50.0, 30.0]
    """
    pre, post = np.asarray(pre, float), np.asarray(post, float)
    if pre.shape != post.shape or pre.size == 0:
        raise InvalidInputError("pre and post need the same, non-zero number of datasets")
    if np.any(pre == 0):
        raise InvalidInputError("a pre-contrast signal is 0; PSE is undefined")
    pse = (post - pre) / pre * 100.0
    sd = float(pse.std(ddof=1)) if len(pse) > 1 else float("nan")
    return {
        "pse_percent": pse.tolist(),
        "mean": float(pse.mean()),
        "sd": sd,
        "cv_percent": float(sd / pse.mean() * 100) if pse.mean() else float("nan"),
        "n": len(pse),
    }
