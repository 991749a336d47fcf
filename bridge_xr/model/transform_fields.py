"""Transforms stored as arrays (displacement and coordinate fields) and axis projections."""

from __future__ import annotations

from typing import Any, Literal, Self

import numpy as np
from pydantic import (
    PrivateAttr,
    model_validator,
)

from bridge_xr.errors import InvalidInputError
from bridge_xr.model._transform_base import FloatArray, _as_points, _Base


class _Field(_Base):
    """A transformation stored as a vector field (an OME-Zarr multiscale image at ``path``).

    Bound to its data with :meth:`bind` (shape (D_out, *grid), voxel centres at
    ``origin + i * spacing``) before points can be mapped.
    """

    path: str
    interpolation: Literal["nearest", "linear", "cubic"] = "linear"
    _field: FloatArray | None = PrivateAttr(default=None)
    _scale: FloatArray | None = PrivateAttr(default=None)
    _origin: FloatArray | None = PrivateAttr(default=None)

    def bind(self, field: FloatArray, *, spacing: Any, origin: Any) -> Self:
        """Attach field data of shape (D, *grid) whose voxel centres sit at origin + i*spacing."""
        out = self.model_copy()
        out._field = np.asarray(field, dtype=np.float64)
        out._scale = np.asarray(spacing, dtype=np.float64)
        out._origin = np.asarray(origin, dtype=np.float64)
        return out

    def _sample(self, points: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``(points, field values at the points)``, both (N, D)."""
        from scipy.ndimage import map_coordinates

        if self._field is None or self._scale is None or self._origin is None:
            msg = f"{self.type} field {self.path!r} is not loaded; read it with the scene first"  # type: ignore[attr-defined]
            raise InvalidInputError(msg)
        p = _as_points(points, self._field.ndim - 1)
        idx = ((p - self._origin) / self._scale).T
        order = {"nearest": 0, "linear": 1, "cubic": 3}[self.interpolation]
        vals = np.stack(
            [map_coordinates(c, idx, order=order, mode="nearest") for c in self._field], axis=1
        )
        return p, vals


class Displacements(_Field):
    """A displacement field.

    A displacement field: ``x' = x + d(x)``; components ordered like the output axes, in
    output units.
    """

    type: Literal["displacements"] = "displacements"

    def transform_points(self, points: FloatArray) -> FloatArray:  # noqa: D102
        p, disp = self._sample(points)
        return p + disp


class Coordinates(_Field):
    """A coordinate field: ``x' = c(x)``; no closed-form inverse."""

    type: Literal["coordinates"] = "coordinates"

    def transform_points(self, points: FloatArray) -> FloatArray:  # noqa: D102
        return self._sample(points)[1]


class ProjectAxis(_Base):
    """Drop input axes (``droppedInputs``) and/or insert zero axes (``createdOutputs``)."""

    type: Literal["projectAxis"] = "projectAxis"
    droppedInputs: tuple[int, ...] = ()
    createdOutputs: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _some(self) -> ProjectAxis:
        if not (self.droppedInputs or self.createdOutputs):
            raise ValueError("projectAxis needs droppedInputs and/or createdOutputs")
        return self

    def transform_points(self, points: FloatArray) -> FloatArray:  # noqa: D102
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2:
            raise InvalidInputError(f"points must have shape (N, D); got {p.shape}")
        if any(i >= p.shape[1] for i in self.droppedInputs):
            raise InvalidInputError(
                f"projectAxis drops input axes {list(self.droppedInputs)} of {p.shape[1]}"
            )
        kept = [i for i in range(p.shape[1]) if i not in set(self.droppedInputs)]
        out = p[:, kept]
        for i in sorted(self.createdOutputs):
            out = np.insert(out, min(i, out.shape[1]), 0.0, axis=1)
        return out
