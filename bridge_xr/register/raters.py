"""How far two raters' registrations of the same image pair disagree (the paper's inter-rater RMSE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike
from bridge_xr.io.read import read_image
from bridge_xr.model.image import physical_extent, um_factor
from bridge_xr.model.pointmaps import Kernel, ModelName
from bridge_xr.register.accuracy import grid_points, inter_rater_rmse_um
from bridge_xr.register.registration import fit

__all__ = ["inter_rater"]


def inter_rater(
    where: StoreLike,
    *,
    moving: str,
    landmark_sets: Sequence[pd.DataFrame],
    model: ModelName = "tps",
    kernel: Kernel = "r",
) -> dict[str, Any]:
    """Distance between two raters' registrations on the paper's grid and on a dense grid.

    Each rater's landmarks are fitted with ``model``; both fits map the same grid points, spread
    over ``moving``'s extent: 50 x 50 per image slice (the paper) and 100 x 100 on 20 planes.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject (for ``moving``'s extent).
    moving : str
        The image both raters registered.
    landmark_sets : two landmark tables
        One per rater (columns ``fixed_x ... moving_z``).
    model, kernel
        Model fitted to each set, and TPS kernel.

    Returns
    -------
    dict
        ``rmse_um`` (paper grid), ``grid_50x50_per_slice`` and ``dense_grid`` figures.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene, tiny_landmarks
    >>> a = tiny_landmarks(); b = a.copy(); b["moving_x"] += 1.0   # rater B: 1 µm further in x
    >>> r = inter_rater(tiny_scene(), moving="micro", landmark_sets=[a, b], model="rigid")
    >>> round(r["rmse_um"], 6)
    1.0
    """
    if len(landmark_sets) != 2:
        msg = f"`landmark_sets` needs exactly two tables (one per rater); got {len(landmark_sets)}"
        raise InvalidInputError(msg)
    models = [fit(model, lms, kernel=kernel) for lms in landmark_sets]
    img = read_image(where, moving)
    fac = um_factor(img)
    ext = physical_extent(img)
    e = np.array([[ext[d][0] * fac, ext[d][1] * fac] for d in ("x", "y", "z")])
    zs = img["z"].values * fac if "z" in img.dims else None
    paper = inter_rater_rmse_um(models[0], models[1], grid_points(e, 50, per_slice_z=zs))
    planes = np.linspace(e[2, 0], e[2, 1], 20)
    dense = inter_rater_rmse_um(models[0], models[1], grid_points(e, 100, per_slice_z=planes))
    return {
        "model": model,
        "rmse_um": paper["rmse_um"],
        "grid_50x50_per_slice": paper,
        "dense_grid": dense,
    }
