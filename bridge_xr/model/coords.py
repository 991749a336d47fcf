"""Axes and coordinate systems (OME-Zarr 0.6), with unit checks across transform edges.

Examples
--------
>>> cs_um = spatial_system("intrinsic", "um")
>>> cs_mm = spatial_system("scanner_ras", "mm")
>>> [a.unit for a in cs_mm.axes]
['millimeter', 'millimeter', 'millimeter']
>>> from bridge_xr.model.transforms import Scale
>>> check_edge_units(Scale(scale=(0.001,) * 3), cs_um, cs_mm)
>>> check_edge_units(Scale(scale=(1.0,) * 3), cs_um, cs_mm)
Traceback (most recent call last):
...
bridge_xr.errors.UnitError: edge 'intrinsic' -> 'scanner_ras' converts micrometer to millimeter but has no explicit scale of 0.001; add a `scale` edge for the unit change
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from bridge_xr._constants import SPATIAL_AXES
from bridge_xr.errors import UnitError
from bridge_xr.model.transforms import Bijection, Identity, Scale, Sequence, Transform
from bridge_xr.model.units import canonical_unit, conversion_factor

AnatomicalDirection = Literal[
    "left-to-right",
    "right-to-left",
    "anterior-to-posterior",
    "posterior-to-anterior",
    "inferior-to-superior",
    "superior-to-inferior",
    "dorsal-to-ventral",
    "ventral-to-dorsal",
    "dorsal-to-palmar",
    "palmar-to-dorsal",
    "dorsal-to-plantar",
    "plantar-to-dorsal",
    "rostral-to-caudal",
    "caudal-to-rostral",
    "cranial-to-caudal",
    "caudal-to-cranial",
    "proximal-to-distal",
    "distal-to-proximal",
]


class Orientation(BaseModel):
    """RFC-4 anatomical orientation of an axis (direction of increasing coordinate)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["anatomical"] = "anatomical"
    value: AnatomicalDirection


class Axis(BaseModel):
    """One axis of a coordinate system."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    type: str | None = None
    unit: str | None = None
    discrete: bool | None = None
    orientation: Orientation | None = None
    longName: str | None = None

    @field_validator("unit")
    @classmethod
    def _udunits(cls, unit: str | None) -> str | None:
        return None if unit is None else canonical_unit(unit)


class CoordinateSystem(BaseModel):
    """A named coordinate system with ordered axes."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    axes: tuple[Axis, ...]

    @property
    def spatial_unit(self) -> str | None:
        """The unit of the spatial axes (they share one unit by bridge_xr convention)."""
        units = {a.unit for a in self.axes if a.type == "space" and a.unit is not None}
        if len(units) > 1:
            raise UnitError(f"coordinate system {self.name!r} mixes spatial units {sorted(units)}")
        return units.pop() if units else None


RAS_ORIENTATION = (
    Orientation(value="inferior-to-superior"),
    Orientation(value="posterior-to-anterior"),
    Orientation(value="left-to-right"),
)


def spatial_system(
    name: str, unit: str, orientation: tuple[Orientation, ...] | None = None
) -> CoordinateSystem:
    """A z, y, x space coordinate system in ``unit``.

    Parameters
    ----------
    name : str
        System name (e.g. ``intrinsic``, ``scanner_ras``).
    unit : str
        Any length unit pint reads.
    orientation : tuple of Orientation, optional
        Anatomical orientation of the z, y, x axes.

    Returns
    -------
    CoordinateSystem

    Examples
    --------
    >>> cs = spatial_system("intrinsic", "um")
    >>> [a.name for a in cs.axes], cs.spatial_unit
    (['z', 'y', 'x'], 'micrometer')
    """
    u = canonical_unit(unit)
    axes = tuple(
        Axis(name=n, type="space", unit=u, orientation=None if orientation is None else o)
        for n, o in zip(SPATIAL_AXES, orientation or (None, None, None), strict=True)
    )
    return CoordinateSystem(name=name, axes=axes)


def _scales_in(t: Transform) -> list[Scale]:
    if isinstance(t, Scale):
        return [t]
    if isinstance(t, Bijection):
        return _scales_in(t.forward)
    if isinstance(t, Sequence):
        return [s for s in t.transformations if isinstance(s, Scale)]
    return []


def check_edge_units(t: Transform, src: CoordinateSystem, dst: CoordinateSystem) -> None:
    """Refuse an edge whose unit change is not made explicit by a ``scale`` of the right factor."""
    u_in, u_out = src.spatial_unit, dst.spatial_unit
    if u_in is None or u_out is None or u_in == u_out:
        return
    factor = conversion_factor(u_in, u_out)
    if isinstance(t, Identity):
        pass
    elif any(np.allclose(s.scale, factor, rtol=1e-9) for s in _scales_in(t)):
        return
    msg = (
        f"edge {src.name!r} -> {dst.name!r} converts {u_in} to {u_out} but has no explicit "
        f"scale of {factor:g}; add a `scale` edge for the unit change"
    )
    raise UnitError(msg)
