"""Each drawn ROI's MRI status, from the registered MRI, and the two-group lesion comparison.

The MRI is resampled through the subject's registrations onto the lesion map's grid (linear, NaN
outside the MRI), and read only inside each ROI: its mean, and the fraction of its voxels below
``positive_below`` (a T2* hypointensity threshold in the MRI's own values). An ROI is positive
when that fraction reaches ``positive_fraction``. Both numbers are the user's and land in the
table beside the result; the paper rated T2* status by eye, so a rating table may be given
instead (:func:`read_status`).

Examples
--------
>>> import pandas as pd
>>> rois = pd.DataFrame({"object": ["t"] * 6, "roi": range(1, 7), "lesions": [1, 2, 1, 5, 6, 7],
...                      "total_um3": [1.0, 2, 1, 9, 8, 7],
...                      "mri_status": ["negative"] * 3 + ["positive"] * 3})
>>> res = compare_status(rois)
>>> res.loc[res["metric"] == "lesions", "rank_biserial"].item()
1.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd

from bridge_xr._dask import rechunk_method, scheduler
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike

__all__ = ["compare_status", "read_status", "roi_mri"]

STATUSES = ("negative", "positive")


def _block_sums(labels: np.ndarray, mri: np.ndarray, below: float, n: int) -> np.ndarray:
    lab = labels.ravel().astype(np.int64)
    val = mri.ravel().astype(np.float64)
    ok = np.isfinite(val) & (lab > 0) & (lab < n)
    lab, val = lab[ok], val[ok]
    out = np.zeros((3, n))
    out[0] = np.bincount(lab, minlength=n)
    out[1] = np.bincount(lab, weights=val, minlength=n)
    out[2] = np.bincount(lab, weights=(val < below).astype(np.float64), minlength=n)
    return out


def roi_mri(
    where: StoreLike,
    *,
    labels: da.Array,
    grid: str,
    mri: str,
    rois: list[int],
    positive_below: float,
    positive_fraction: float = 0.1,
    via: Any = None,
) -> pd.DataFrame:
    """Per ROI: MRI voxels sampled, mean, fraction below the threshold, and the status.

    Parameters
    ----------
    where : str, path or store
        The subject store with the registration joining ``mri`` and ``grid``.
    labels : dask array
        ROI labels on ``grid``'s (z, y, x) grid.
    grid : str
        The image whose grid ``labels`` lie on (the lesion map).
    mri : str
        The MRI image (e.g. an ex vivo T2* map).
    rois : list of int
        ROI labels to report.
    positive_below : float
        Hypointensity threshold, in the MRI's values (ms for a T2* map).
    positive_fraction : float
        Fraction of an ROI's voxels below the threshold that makes it positive.
    via : str or list, optional
        Registration chain, when several join the images.

    Returns
    -------
    DataFrame
        ``roi, mri_voxels, mri_mean, mri_fraction_below, mri_below, positive_fraction,
        mri_status``.
    """
    from bridge_xr.resampling import resample

    if not 0 < positive_fraction <= 1:
        raise InvalidInputError(f"positive_fraction must lie in (0, 1]; got {positive_fraction}")
    sampled = resample(where, moving=mri, onto=grid, order=1, nan_outside=True, via=via,
                       chunks=tuple(int(c[0]) for c in labels.chunks))  # fmt: skip
    values = sampled.data.rechunk(labels.chunks, method=rechunk_method())
    n = max(rois) + 1
    parts = [
        dask.delayed(_block_sums)(lb, vb, positive_below, n)
        for lb, vb in zip(labels.to_delayed().ravel(), values.to_delayed().ravel(), strict=True)
    ]
    sums = (
        np.sum(dask.compute(*parts, scheduler=scheduler()), axis=0) if parts else np.zeros((3, n))
    )
    rows = []
    for r in rois:
        count, total, low = sums[:, r]
        if count == 0:
            raise InvalidInputError(
                f"ROI {r} lies outside the MRI {mri!r} once registered; check the registration"
            )
        frac = low / count
        rows.append({
            "roi": r,
            "mri_voxels": int(count),
            "mri_mean": total / count,
            "mri_fraction_below": frac,
            "mri_below": float(positive_below),
            "positive_fraction": float(positive_fraction),
            "mri_status": STATUSES[int(frac >= positive_fraction)],
        })  # fmt: skip
    return pd.DataFrame(rows)


def read_status(path: str | Path) -> pd.DataFrame:
    """A rating table (``roi, mri_status`` with positive/negative), e.g. T2* status by eye."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"no such status table: {str(p)!r}; check the path")
    try:
        table = pd.read_csv(p)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InvalidInputError(f"cannot read status table {str(p)!r}: {exc}") from None
    if not {"roi", "mri_status"} <= set(table.columns):
        raise InvalidInputError(
            f"status table {str(p)!r} needs columns roi, mri_status; it has {list(table.columns)}"
        )
    status = table["mri_status"].astype(str).str.strip().str.lower()
    bad = sorted(set(status) - set(STATUSES))
    if bad:
        raise InvalidInputError(f"status table {str(p)!r}: mri_status must be positive or "
                                f"negative; got {bad}")  # fmt: skip
    if table["roi"].duplicated().any():
        raise InvalidInputError(f"status table {str(p)!r} rates an ROI twice")
    return pd.DataFrame({"roi": table["roi"].astype(int), "mri_status": status})


def compare_status(
    rois: pd.DataFrame, metrics: tuple[str, ...] = ("lesions", "total_um3")
) -> pd.DataFrame:
    """Mann-Whitney U, positive against negative ROIs, per object and metric (Fig. 3E-H).

    Returns
    -------
    DataFrame
        ``object, metric, median_negative, median_positive, statistic, z, p, rank_biserial,
        n_a`` (negative), ``n_b`` (positive).
    """
    from bridge_xr.stats.group_tests import mann_whitney

    rows = []
    for obj, part in rois.groupby("object", sort=True):
        groups = {s: part[part["mri_status"] == s] for s in STATUSES}
        if any(g.empty for g in groups.values()):
            continue
        for metric in metrics:
            neg, pos = (groups[s][metric].to_numpy(float) for s in STATUSES)
            rows.append({
                "object": obj,
                "metric": metric,
                "median_negative": float(np.median(neg)),
                "median_positive": float(np.median(pos)),
                **mann_whitney(neg, pos),
            })  # fmt: skip
    return pd.DataFrame(rows)


def status_figure(rois: pd.DataFrame, comparison: pd.DataFrame, output: str | Path) -> list[Path]:
    """Fig. 3E-H: lesion count and total volume per ROI, negative vs positive, with the test.

    One row of panels per object; boxes (median, quartiles) with every ROI as a point, and the
    Mann-Whitney p above each panel. PNG also writes an SVG beside it.
    """
    from bridge_xr.stats.plots import _plt, _save

    if "mri_status" not in rois:
        raise InvalidInputError("a status figure needs each ROI's MRI status (--mri or --status)")
    plt = _plt()
    objects = sorted(rois["object"].unique())
    metrics = (("lesions", "lesions per ROI"), ("total_um3", "total volume per ROI (µm³)"))
    fig, axes = plt.subplots(len(objects), 2, figsize=(6.4, 3.2 * len(objects)), squeeze=False)
    rng = np.random.default_rng(0)
    for i, obj in enumerate(objects):
        part = rois[rois["object"] == obj]
        for j, (metric, label) in enumerate(metrics):
            ax = axes[i][j]
            vals = [part.loc[part["mri_status"] == s, metric].to_numpy(float) for s in STATUSES]
            ax.boxplot([v if len(v) else [np.nan] for v in vals], showfliers=False,
                       medianprops={"color": "black"})  # fmt: skip
            for k, v in enumerate(vals, start=1):
                ax.plot(k + rng.uniform(-0.12, 0.12, len(v)), v, "o", ms=3, alpha=0.7)
            ax.set_xticks([1, 2], [f"{s}\nn={len(v)}" for s, v in zip(STATUSES, vals, strict=True)])
            row = pd.DataFrame()
            if not comparison.empty:
                row = comparison[(comparison["object"] == obj) & (comparison["metric"] == metric)]
            p = f"Mann-Whitney p = {row['p'].iloc[0]:.3g}" if len(row) else "no test (one group)"
            ax.set_title(f"{obj.rsplit('/', 1)[-1]}: {p}", fontsize=9)
            ax.set_ylabel(label)
    fig.tight_layout()
    return _save(fig, Path(output))
