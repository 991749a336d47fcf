"""Figures of the per-voxel tables (matplotlib; PNG and SVG side by side).

* ``box``      — response per density category, median and IQR, n per box (Figure 4J-K);
* ``heatmap``  — 2D histogram of density vs normalised MRI (Figure 4M-N);
* ``timeline`` — per-voxel trajectories over days with the median (Figure 4O-Q).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bridge_xr.errors import InvalidInputError
from bridge_xr.stats.categories import DENSITY_BINS, density_category

KINDS = ("box", "heatmap", "timeline")


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, output: Path) -> list[Path]:  # type: ignore[no-untyped-def]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    paths = [output]
    if output.suffix.lower() == ".png":
        paths.append(output.with_suffix(".svg"))
    elif output.suffix.lower() != ".svg":
        raise InvalidInputError(f"figure {str(output)!r} must end in .png or .svg")
    for p in paths:
        fig.savefig(p, dpi=130)
    _plt().close(fig)
    return paths


def _need(df: pd.DataFrame, *cols: str) -> None:
    for c in cols:
        if c not in df.columns:
            raise InvalidInputError(f"no column {c!r} in the tables; columns: {list(df.columns)}")


def box(
    df: pd.DataFrame,
    *,
    response: str,
    by: str,
    output: Path,
    bins: Sequence[float] | None = DENSITY_BINS,
    title: str = "",
) -> list[Path]:
    """Box plot of ``response`` per category of ``by`` (binned when ``bins``), n above each box."""
    _need(df, response, by)
    plt = _plt()
    if bins is not None and pd.api.types.is_numeric_dtype(df[by]):
        cat = density_category(df[by].to_numpy(float), bins)
    else:
        cat = pd.Categorical(df[by].astype(str))
    groups = [(str(c), df[response].to_numpy(float)[np.asarray(cat == c)]) for c in cat.categories]
    groups = [(k, v[np.isfinite(v)]) for k, v in groups]
    groups = [(k, v) for k, v in groups if len(v)]
    if not groups:
        raise InvalidInputError(f"no values of {response!r} to plot")
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(groups), 4))
    ax.boxplot([v for _, v in groups], showfliers=False, medianprops={"color": "black"})
    ax.set_xticks(range(1, len(groups) + 1), [k for k, _ in groups], rotation=30)
    top = ax.get_ylim()[1]
    for i, (_, v) in enumerate(groups, start=1):
        ax.text(i, top, f"n={len(v)}", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel(by)
    ax.set_ylabel(response)
    ax.set_title(title or f"{response} by {by}", pad=16)
    fig.tight_layout()
    return _save(fig, output)


def heatmap(
    df: pd.DataFrame, *, x: str, y: str, output: Path, bins: int = 30, title: str = ""
) -> list[Path]:
    """2D histogram (voxel counts, log colour) of ``x`` against ``y``."""
    _need(df, x, y)
    plt = _plt()
    from matplotlib.colors import LogNorm

    xv, yv = df[x].to_numpy(float), df[y].to_numpy(float)
    ok = np.isfinite(xv) & np.isfinite(yv)
    if not ok.any():
        raise InvalidInputError(f"no complete ({x}, {y}) pairs to plot")
    fig, ax = plt.subplots(figsize=(5, 4))
    h = ax.hist2d(xv[ok], yv[ok], bins=bins, cmap="magma", norm=LogNorm())
    fig.colorbar(h[3], ax=ax, label="voxels")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title or f"{y} vs {x} (n = {int(ok.sum())} voxels)")
    fig.tight_layout()
    return _save(fig, output)


def timeline(
    df: pd.DataFrame, *, response: str, output: Path, time: str = "day", max_lines: int = 200
) -> list[Path]:
    """Per-voxel trajectories of ``response`` over ``time`` (a sample of voxels) and the median."""
    _need(df, response, time, "z", "y", "x")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    keys = df.groupby(["subject", "z", "y", "x"], observed=True) if "subject" in df else None
    if keys is None:
        keys = df.groupby(["z", "y", "x"], observed=True)
    rng = np.random.default_rng(0)
    names = list(keys.groups)
    pick = set(rng.choice(len(names), size=min(max_lines, len(names)), replace=False).tolist())
    for i, (_, g) in enumerate(keys):
        if i in pick:
            g = g.sort_values(time)
            ax.plot(g[time], g[response], color="0.6", lw=0.5, alpha=0.5)
    med = df.groupby(time)[response].median()
    ax.plot(med.index, med.values, color="crimson", lw=2, marker="o", label="median")
    ax.set_xlabel(time)
    ax.set_ylabel(response)
    ax.legend()
    ax.set_title(f"{response} per voxel over {time}")
    fig.tight_layout()
    return _save(fig, output)
