"""Images in memory: dask-backed :class:`xarray.DataArray` with physical coordinates.

Dims are a subset of ``(t, c, z, y, x)``. Spatial coordinates are voxel centres
``index * spacing + origin`` in the image's ``intrinsic`` system, in ``attrs['unit']``.
``attrs`` also holds ``spacing`` and ``origin`` (dicts by axis, exact even for length-1 axes) and
``transforms``: a dict from coordinate-system name to the :class:`Transform` that maps intrinsic
points there (e.g. ``scanner_ras`` for MRI).

Examples
--------
>>> import numpy as np
>>> img = make_image(np.zeros((2, 3, 4)), dims=("z", "y", "x"), spacing=(5.0, 1.2, 1.2), unit="um")
>>> float(img.x[1]), img.attrs["unit"]
(1.2, 'micrometer')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from bridge_xr._constants import SPATIAL_AXES
from bridge_xr.errors import InvalidInputError
from bridge_xr.model.units import canonical_unit, conversion_factor

ALLOWED_DIMS = ("t", "c", "z", "y", "x")


def _validate_dims(dims: Sequence[str]) -> tuple[str, ...]:
    dims = tuple(dims)
    order = [ALLOWED_DIMS.index(d) for d in dims if d in ALLOWED_DIMS]
    if len(order) != len(dims) or order != sorted(order) or len(set(dims)) != len(dims):
        msg = f"dims must be an ordered subset of {ALLOWED_DIMS}; got {dims}"
        raise InvalidInputError(msg)
    if not any(d in SPATIAL_AXES for d in dims):
        raise InvalidInputError(f"an image needs at least one spatial axis; got {dims}")
    return dims


def spatial_dims(dims: Sequence[str]) -> tuple[str, ...]:
    """The spatial dims among ``dims``, in order."""
    return tuple(d for d in dims if d in SPATIAL_AXES)


def make_image(
    data: Any,
    *,
    dims: Sequence[str],
    spacing: Sequence[float] | Mapping[str, float],
    unit: str,
    origin: Sequence[float] | Mapping[str, float] | None = None,
    channel_names: Sequence[str] | None = None,
    name: str | None = None,
    transforms: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Wrap an array (numpy or dask) as a calibrated image.

    Parameters
    ----------
    data : array-like
        Pixel data; numpy input is wrapped in a single-chunk dask array.
    dims : sequence of str
        Ordered subset of ``('t', 'c', 'z', 'y', 'x')``.
    spacing, origin : sequence or mapping
        Voxel size and first voxel centre per spatial axis, in ``unit``.
    unit : str
        Any length unit pint parses; stored as its UDUNITS long name.
    """
    dims = _validate_dims(dims)
    sdims = spatial_dims(dims)
    arr = data if isinstance(data, da.Array) else da.asarray(data)
    if arr.ndim != len(dims):
        msg = f"data has {arr.ndim} dimensions but dims {dims} name {len(dims)}"
        raise InvalidInputError(msg)
    sp = _per_axis(spacing, sdims, "spacing")
    org = _per_axis(origin if origin is not None else [0.0] * len(sdims), sdims, "origin")
    if any(v <= 0 for v in sp.values()):
        raise InvalidInputError(f"spacing must be positive; got {sp}")
    coords: dict[str, Any] = {
        d: org[d] + np.arange(arr.shape[dims.index(d)]) * sp[d] for d in sdims
    }
    if "c" in dims and channel_names is not None:
        if len(channel_names) != arr.shape[dims.index("c")]:
            msg = f"{len(channel_names)} channel names for {arr.shape[dims.index('c')]} channels"
            raise InvalidInputError(msg)
        coords["c"] = list(channel_names)
    attrs = {
        "unit": canonical_unit(unit),
        "spacing": sp,
        "origin": org,
        "transforms": dict(transforms or {}),
    }
    return xr.DataArray(arr, dims=dims, coords=coords, name=name, attrs=attrs)


def _per_axis(
    values: Sequence[float] | Mapping[str, float], sdims: tuple[str, ...], what: str
) -> dict[str, float]:
    if isinstance(values, Mapping):
        missing = [d for d in sdims if d not in values]
        if missing:
            raise InvalidInputError(f"{what} lacks axes {missing}")
        return {d: float(values[d]) for d in sdims}
    vals = list(values)
    if len(vals) != len(sdims):
        msg = f"{what} needs {len(sdims)} values for axes {sdims}; got {len(vals)}"
        raise InvalidInputError(msg)
    return {d: float(v) for d, v in zip(sdims, vals, strict=True)}


def physical_extent(img: xr.DataArray) -> dict[str, tuple[float, float]]:
    """Outer bounds (voxel edges) of the image per spatial axis, in its unit."""
    out = {}
    for d in spatial_dims(img.dims):  # type: ignore[arg-type]
        s, o, n = img.attrs["spacing"][d], img.attrs["origin"][d], img.sizes[d]
        out[d] = (o - s / 2, o + (n - 0.5) * s)
    return out


def um_factor(img: xr.DataArray) -> float:
    """Micrometres per unit of ``img``'s spatial axes.

    Examples
    --------
    >>> import numpy as np
    >>> um_factor(make_image(np.zeros((2, 2, 2)), dims="zyx", spacing=(1, 1, 1), unit="millimeter"))
    1000.0
    """
    return float(conversion_factor(img.attrs["unit"], "micrometer"))


def spacing_um(img: xr.DataArray) -> np.ndarray:
    """Voxel size of ``img`` in micrometres, z, y, x.

    Examples
    --------
    >>> import numpy as np
    >>> spacing_um(make_image(np.zeros((2, 2, 2)), dims="zyx", spacing=(0.1, 0.05, 0.05), unit="mm")).tolist()
    [100.0, 50.0, 50.0]
    """
    return np.array([img.attrs["spacing"][d] for d in SPATIAL_AXES], dtype=np.float64) * um_factor(
        img
    )


def origin_um(img: xr.DataArray) -> np.ndarray:
    """Centre of ``img``'s first voxel in micrometres, z, y, x.

    Examples
    --------
    >>> import numpy as np
    >>> origin_um(make_image(np.zeros((2, 2, 2)), dims="zyx", spacing=(1, 1, 1), origin=(1, 2, 3), unit="mm")).tolist()
    [1000.0, 2000.0, 3000.0]
    """
    return np.array([img.attrs["origin"][d] for d in SPATIAL_AXES], dtype=np.float64) * um_factor(
        img
    )
