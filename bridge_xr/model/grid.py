"""TODO docstring."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from bridge_xr.model.image import physical_extent
from bridge_xr.model.units import conversion_factor


@dataclass(frozen=True)
class Grid:
    """Output grid: voxel centres at ``origin + index * spacing`` (zyx, in ``unit``)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    unit: str


def target_grid(onto: xr.DataArray, spacing_um: tuple[float, float, float] | None = None) -> Grid:
    """The ``onto`` image's grid, or its extent covered at ``spacing_um`` (zyx)."""
    unit = onto.attrs["unit"]
    if spacing_um is None:
        return Grid(
            tuple(int(onto.sizes[d]) for d in "zyx"),  # type: ignore[arg-type]
            tuple(float(onto.attrs["spacing"][d]) for d in "zyx"),  # type: ignore[arg-type]
            tuple(float(onto.attrs["origin"][d]) for d in "zyx"),  # type: ignore[arg-type]
            unit,
        )
    fac = conversion_factor("micrometer", unit)
    sp = tuple(s * fac for s in spacing_um)
    ext = physical_extent(onto)
    shape = tuple(
        max(1, int(np.floor((ext[d][1] - ext[d][0]) / s + 1e-9)))
        for d, s in zip("zyx", sp, strict=True)
    )
    origin = tuple(ext[d][0] + s / 2 for d, s in zip("zyx", sp, strict=True))
    return Grid(shape, sp, origin, unit)  # type: ignore[arg-type]
