"""What every OME-Zarr transform shares: the coordinate-system references and the point-map protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge_xr.model.transforms import Transform


from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import (
    BaseModel,
    ConfigDict,
)

from bridge_xr.errors import InvalidInputError, NoAffineError, NotInvertibleError

FloatArray = NDArray[np.float64]


class CoordinateSystemRef(BaseModel):
    """Reference to a coordinate system: ``name``, plus ``path`` when it lives in a child image."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str | None = None
    path: str | None = None


class _Base(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    name: str | None = None
    input: CoordinateSystemRef | None = None
    output: CoordinateSystemRef | None = None

    # -- shared behaviour -------------------------------------------------------------------
    def transform_points(self, points: FloatArray) -> FloatArray:  # pragma: no cover - abstract
        """Map points of shape (N, D) from ``input`` to ``output``."""
        raise NotImplementedError

    def inverse(self) -> Transform:  # pragma: no cover - abstract
        """The inverse transform (``input`` and ``output`` swapped)."""
        raise NotInvertibleError(f"{type(self).__name__} has no closed-form inverse")

    def to_affine(self, ndim: int | None = None) -> FloatArray:
        """Homogeneous (D+1)x(D+1) matrix of this transform."""
        raise NoAffineError(f"{type(self).__name__} is not affine")

    def is_affine(self) -> bool:
        """Whether :meth:`to_affine` succeeds."""
        try:
            self.to_affine(3)
        except NoAffineError:
            return False
        return True

    def then(self, other: Transform) -> Transform:
        """Composition: apply ``self`` first, then ``other`` (a flat :class:`Sequence`)."""
        from bridge_xr.model.transforms import Sequence

        parts: list[Transform] = []
        for t in (self, other):
            if isinstance(t, Sequence):
                parts.extend(t.transformations)
            else:
                parts.append(
                    t.model_copy(update={"input": None, "output": None, "name": None})  # type: ignore[arg-type]
                )
        return Sequence(transformations=tuple(parts), input=self.input, output=other.output)

    def with_io(
        self, input: CoordinateSystemRef | None, output: CoordinateSystemRef | None
    ) -> Transform:
        """Copy with new ``input``/``output`` references."""
        return self.model_copy(update={"input": input, "output": output})  # type: ignore[return-value]

    def _swapped(self) -> dict[str, Any]:
        return {"input": self.output, "output": self.input, "name": _inv_name(self.name)}

    def to_ome(self) -> dict[str, Any]:
        """The spec JSON (``None`` fields left out)."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


def _inv_name(name: str | None) -> str | None:
    return None if name is None else f"inverse({name})"


def _as_points(points: FloatArray, ndim: int) -> FloatArray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != ndim:
        msg = f"points must have shape (N, {ndim}); got {arr.shape}"
        raise InvalidInputError(msg)
    return arr
