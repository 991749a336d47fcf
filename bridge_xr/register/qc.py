"""QC figures: checkerboard and overlay of fixed vs resampled moving, landmark residuals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _norm(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [1, 99])
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)


def qc_figure(
    fixed: np.ndarray,
    moving_resampled: np.ndarray,
    path: Path,
    *,
    residuals_xy: np.ndarray | None = None,
    landmarks_xy: np.ndarray | None = None,
    title: str = "",
    tiles: int = 6,
) -> Path:
    """Save a PNG: fixed, resampled moving, checkerboard, overlay, and landmark residual arrows.

    ``fixed`` and ``moving_resampled`` are 2D slices on the same grid; ``landmarks_xy`` and
    ``residuals_xy`` are (N, 2) positions and residual vectors in that slice's pixel units.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, m = _norm(np.asarray(fixed, float)), _norm(np.asarray(moving_resampled, float))
    yy, xx = np.indices(f.shape)
    ty, tx = max(1, f.shape[0] // tiles), max(1, f.shape[1] // tiles)
    checker = np.where(((yy // ty) + (xx // tx)) % 2 == 0, f, m)
    overlay = np.stack([m, f, m], axis=-1)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    panels: list[tuple[Any, str]] = [
        (f, "fixed (MRI)"),
        (m, "moving, resampled"),
        (checker, "checkerboard"),
        (overlay, "overlay: MRI green, moving magenta"),
    ]
    for ax, (img, name) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap=None if img.ndim == 3 else "gray", interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    if landmarks_xy is not None and residuals_xy is not None and len(landmarks_xy):
        axes[3].quiver(
            landmarks_xy[:, 0],
            landmarks_xy[:, 1],
            residuals_xy[:, 0],
            residuals_xy[:, 1],
            color="yellow",
            angles="xy",
            scale_units="xy",
            scale=1,
        )
        axes[3].scatter(landmarks_xy[:, 0], landmarks_xy[:, 1], s=8, c="yellow")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
