"""The paper's bilinear density: microscopy sampled at the MRI voxel centres through the chain."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from bridge_xr.errors import InvalidInputError
from bridge_xr.extract.footprint import (
    plan_footprint,
)
from bridge_xr.io.read import read_image
from bridge_xr.model.pointmaps import LinearModel


def _bilinear(
    st: Any, microscopy: str, mri: str, channel: str | int | None, threshold: float | None
) -> tuple[da.Array, da.Array]:
    """The paper's way: trilinear samples of the microscopy at the MRI voxel centres."""
    from bridge_xr.resampling.blocks import map_block

    fp = plan_footprint(st, microscopy, mri)
    mic = read_image(st, microscopy)
    if "c" in mic.dims:
        if channel is None:
            raise InvalidInputError(
                f"{microscopy!r} has channels {list(mic.c.values)}; choose one with `channel`"
            )
        mic = mic.isel(c=channel) if isinstance(channel, int) else mic.sel(c=str(channel))
    mr = read_image(st, mri)
    src = mic.data
    n_mic = np.array(src.shape)
    inv = [(m, not f) for m, f in fp.models[::-1]] or [(LinearModel.identity(), True)]

    def sample(block: np.ndarray, block_info: Any = None) -> np.ndarray:
        from scipy.ndimage import map_coordinates

        loc = block_info[0]["array-location"]
        axes = [
            fp.mri_origin_um[i] + np.arange(a, b) * fp.mri_spacing_um[i]
            for i, (a, b) in enumerate(loc)
        ]
        coords = map_block(inv, axes, 0.01)
        idx = [(coords[i] - fp.mic_origin_um[i]) / fp.mic_spacing_um[i] for i in range(3)]
        ok = np.ones(block.shape, dtype=bool)
        for i in range(3):
            ok &= np.isfinite(idx[i]) & (idx[i] >= -0.5) & (idx[i] <= n_mic[i] - 0.5)
        out = np.stack([np.full(block.shape, np.nan), ok.astype(np.float64)])
        if not ok.any():
            return out
        lo = [max(int(np.floor(idx[i][ok].min())), 0) for i in range(3)]
        hi = [min(int(np.ceil(idx[i][ok].max())) + 2, int(n_mic[i])) for i in range(3)]
        sub = np.asarray(src[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]).astype(np.float64)
        if threshold is not None:
            sub = (sub > threshold).astype(np.float64)
        pts = np.stack([np.clip(idx[i][ok], 0, n_mic[i] - 1) - lo[i] for i in range(3)])
        out[0][ok] = map_coordinates(sub, pts, order=1, mode="nearest")
        return out

    both = mr.data.map_blocks(sample, dtype=np.float64, new_axis=0, chunks=((2,), *mr.data.chunks))
    return both[0], both[1]
