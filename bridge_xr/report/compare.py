"""Model comparison (paper Figure 1D): rigid, similarity, affine and TPS on the same landmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bridge_xr.errors import EstimationError
from bridge_xr.model.pointmaps import Kernel, fit
from bridge_xr.register.accuracy import loo_tre_um
from bridge_xr.register.landmark_formats import validate
from bridge_xr.register.landmarks import arrays
from bridge_xr.stats.group_tests import kruskal_dunn

MODELS = ("rigid", "similarity", "affine", "tps")


def compare_models(
    datasets: dict[str, pd.DataFrame], *, kernel: Kernel = "r", smoothing: float = 0.0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-landmark LOO TRE and per-dataset summaries for every model, with statistics.

    Returns ``(per_landmark, per_dataset, omnibus, pairwise)``. With two or more datasets the
    statistics compare per-dataset LOO-TRE RMS values (n = datasets per model, as in the paper);
    with one dataset they compare per-landmark LOO errors.

    Parameters
    ----------
    datasets : mapping name -> DataFrame
        Landmark sets (e.g. one per rater).
    kernel, smoothing
        TPS kernel and regularisation.

    Returns
    -------
    (DataFrame, DataFrame, DataFrame, DataFrame)
        Per landmark, per dataset, omnibus test, pairwise tests.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_landmarks
    >>> per_lm, per_ds, omnibus, pairs = compare_models({"rater1": tiny_landmarks()})
    >>> sorted(per_ds["model"])  # 5 landmarks: too few for a leave-one-out TPS
    ['affine', 'rigid', 'similarity']
    """
    rows, summary = [], []
    for ds, df in datasets.items():
        names, f, m = arrays(validate(df, source=ds))
        for model in MODELS:
            try:
                loo = loo_tre_um(model, f, m, kernel=kernel, smoothing=smoothing)
                fitted = fit(model, f, m, kernel=kernel, smoothing=smoothing)
            except EstimationError:
                continue
            resid = np.linalg.norm(fitted.forward_points(f) - m, axis=1)
            rows += [
                {"dataset": ds, "model": model, "landmark": n, "loo_tre_um": float(e)}
                for n, e in zip(names, loo, strict=True)
            ]
            summary.append(
                {
                    "dataset": ds,
                    "model": model,
                    "n_landmarks": len(names),
                    "rmse_um": float(np.sqrt(np.mean(resid**2))),
                    "loo_tre_rms_um": float(np.sqrt(np.mean(loo**2))),
                }
            )
    per_landmark, per_dataset = pd.DataFrame(rows), pd.DataFrame(summary)
    if len(datasets) >= 2:
        omnibus, pairs = kruskal_dunn(per_dataset, value="loo_tre_rms_um", group="model")
    else:
        omnibus, pairs = kruskal_dunn(per_landmark, value="loo_tre_um", group="model")
    return per_landmark, per_dataset, omnibus, pairs


def plot_comparison(per_landmark: pd.DataFrame, per_dataset: pd.DataFrame, path: Path) -> Path:
    """Box plot of LOO TRE per model (points: landmarks or datasets), PNG or SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use = per_dataset if per_dataset["dataset"].nunique() >= 2 else per_landmark
    col = "loo_tre_rms_um" if use is per_dataset else "loo_tre_um"
    models = [m for m in MODELS if m in set(use["model"])]
    data = [use.loc[use["model"] == m, col].to_numpy() for m in models]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(models) + 1), models)
    for i, d in enumerate(data, start=1):
        ax.scatter(
            np.full(len(d), i) + np.random.default_rng(i).uniform(-0.12, 0.12, len(d)),
            d,
            s=10,
            alpha=0.6,
        )
        ax.text(i, ax.get_ylim()[1], f"n={len(d)}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("leave-one-out TRE (µm)")
    ax.set_title("registration model comparison")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
