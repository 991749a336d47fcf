"""OME-Zarr 0.6 coordinate transformations as typed, frozen models that map points.

Every transform is a forward *point* map from its ``input`` coordinate system to its ``output``
system (RFC-5). Points are arrays of shape ``(N, D)`` in the axis order of the coordinate systems
(``z, y, x`` for space). Each model implements ``transform_points``, ``inverse`` (or raises
:class:`~bridge_xr.errors.NotInvertibleError`), ``to_affine`` (or raises
:class:`~bridge_xr.errors.NoAffineError`) and serialises to the spec's JSON with ``to_ome``.

Examples
--------
>>> import numpy as np
>>> s = Scale(scale=(2.0, 1.0, 0.5))
>>> t = Translation(translation=(1.0, 0.0, 0.0))
>>> seq = s.then(t)
>>> seq.transform_points(np.array([[1.0, 1.0, 1.0]]))
array([[3. , 1. , 0.5]])
>>> np.allclose(seq.inverse().transform_points(seq.transform_points(np.ones((1, 3)))), 1.0)
True
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from bridge_xr.errors import InvalidInputError, NoAffineError, NotInvertibleError
from bridge_xr.model._transform_base import (
    CoordinateSystemRef,
    FloatArray,
    _as_points,
    _Base,
)
from bridge_xr.model.transform_fields import Coordinates, Displacements, ProjectAxis


class Identity(_Base):
    """The identity map."""

    type: Literal["identity"] = "identity"

    def transform_points(self, points: FloatArray) -> FloatArray:  # noqa: D102
        return np.array(points, dtype=np.float64, copy=True)

    def inverse(self) -> Transform:  # noqa: D102
        return Identity(**self._swapped())

    def to_affine(self, ndim: int | None = None) -> FloatArray:  # noqa: D102
        if ndim is None:
            raise NoAffineError("identity needs `ndim` to become a matrix")
        return np.eye(ndim + 1)


class Scale(_Base):
    """Per-axis scaling ``x' = s * x``."""

    type: Literal["scale"] = "scale"
    scale: tuple[float, ...]

    @model_validator(mode="after")
    def _nonzero(self) -> Scale:
        if any(s == 0 for s in self.scale):
            raise ValueError(f"scale factors must be non-zero; got {self.scale}")
        return self

    def transform_points(self, points: FloatArray) -> FloatArray:  # noqa: D102
        return _as_points(points, len(self.scale)) * np.asarray(self.scale)

    def inverse(self) -> Transform:  # noqa: D102
        return Scale(scale=tuple(1.0 / s for s in self.scale), **self._swapped())

    def to_affine(self, ndim: int | None = None) -> FloatArray:  # noqa: D102
        m = np.eye(len(self.scale) + 1)
        m[:-1, :-1] = np.diag(self.scale)
        return m


class Translation(_Base):
    """Per-axis offset ``x' = x + t``."""

    type: Literal["translation"] = "translation"
    translation: tuple[float, ...]

    def transform_points(self, points: FloatArray) -> FloatArray:  # noqa: D102
        return _as_points(points, len(self.translation)) + np.asarray(self.translation)

    def inverse(self) -> Transform:  # noqa: D102
        return Translation(translation=tuple(-t for t in self.translation), **self._swapped())

    def to_affine(self, ndim: int | None = None) -> FloatArray:  # noqa: D102
        m = np.eye(len(self.translation) + 1)
        m[:-1, -1] = self.translation
        return m


class Affine(_Base):
    """Affine map stored inline as M x (N+1) rows (no homogeneous row), as OME-Zarr 0.6 says."""

    type: Literal["affine"] = "affine"
    affine: tuple[tuple[float, ...], ...] = ()
    path: str | None = Field(default=None, description="zarr array holding the matrix instead")

    @model_validator(mode="after")
    def _shape(self) -> Affine:
        if not self.affine:
            if self.path is None:
                raise ValueError("`affine` needs the matrix rows or a `path` to a zarr array")
            return self
        rows = {len(r) for r in self.affine}
        if len(rows) != 1 or rows.pop() != len(self.affine) + 1:
            raise ValueError("`affine` must have N rows of N+1 numbers (M x (N+1), no last row)")
        return self

    def _need_matrix(self) -> None:
        if not self.affine:
            raise InvalidInputError(
                f"affine stored at {self.path!r} is not loaded; read it with the scene first"
            )

    @classmethod
    def from_matrix(cls, matrix: Any, **kwargs: Any) -> Affine:
        """Build from a homogeneous (N+1)x(N+1) or an N x (N+1) matrix."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape[0] == m.shape[1]:
            m = m[:-1]
        return cls(affine=tuple(tuple(float(v) for v in row) for row in m), **kwargs)

    @property
    def matrix(self) -> FloatArray:
        """Homogeneous (N+1)x(N+1) matrix."""
        self._need_matrix()
        n = len(self.affine)
        m = np.eye(n + 1)
        m[:-1] = np.asarray(self.affine)
        return m

    def transform_points(self, points: FloatArray) -> FloatArray:  # noqa: D102
        m = self.matrix
        p = _as_points(points, m.shape[0] - 1)
        return p @ m[:-1, :-1].T + m[:-1, -1]

    def inverse(self) -> Transform:  # noqa: D102
        m = self.matrix
        if abs(np.linalg.det(m)) < 1e-300:
            raise NotInvertibleError("affine matrix is singular")
        return Affine.from_matrix(np.linalg.inv(m), **self._swapped())

    def to_affine(self, ndim: int | None = None) -> FloatArray:  # noqa: D102
        return self.matrix


class Rotation(_Base):
    """Rotation about the origin, an orthonormal N x N matrix with determinant +1."""

    type: Literal["rotation"] = "rotation"
    rotation: tuple[tuple[float, ...], ...] = ()
    path: str | None = Field(default=None, description="zarr array holding the matrix instead")

    @model_validator(mode="after")
    def _orthonormal(self) -> Rotation:
        if not self.rotation:
            if self.path is None:
                raise ValueError("`rotation` needs the matrix rows or a `path` to a zarr array")
            return self
        r = np.asarray(self.rotation, dtype=np.float64)
        if r.ndim != 2 or r.shape[0] != r.shape[1]:
            raise ValueError("`rotation` must be a square N x N matrix")
        if not np.allclose(r @ r.T, np.eye(r.shape[0]), atol=1e-9):
            raise ValueError("`rotation` matrix is not orthonormal")
        return self

    def transform_points(self, points: FloatArray) -> FloatArray:  # noqa: D102
        r = np.asarray(self.rotation)
        return _as_points(points, r.shape[0]) @ r.T

    def inverse(self) -> Transform:  # noqa: D102
        r = np.asarray(self.rotation).T
        return Rotation(
            rotation=tuple(tuple(float(v) for v in row) for row in r), **self._swapped()
        )

    def to_affine(self, ndim: int | None = None) -> FloatArray:  # noqa: D102
        r = np.asarray(self.rotation)
        m = np.eye(r.shape[0] + 1)
        m[:-1, :-1] = r
        return m


class MapAxis(_Base):
    """Axis permutation: output axis ``i`` takes input axis ``mapAxis[i]``."""

    type: Literal["mapAxis"] = "mapAxis"
    mapAxis: tuple[int, ...]

    def transform_points(self, points: FloatArray) -> FloatArray:  # noqa: D102
        return _as_points(points, len(self.mapAxis))[:, list(self.mapAxis)]

    def inverse(self) -> Transform:  # noqa: D102
        inv = tuple(int(i) for i in np.argsort(self.mapAxis))
        return MapAxis(mapAxis=inv, **self._swapped())

    def to_affine(self, ndim: int | None = None) -> FloatArray:  # noqa: D102
        n = len(self.mapAxis)
        m = np.zeros((n + 1, n + 1))
        for out, inp in enumerate(self.mapAxis):
            m[out, inp] = 1.0
        m[n, n] = 1.0
        return m


class _DimPart(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    transformation: Transform
    inputAxes: tuple[int, ...]
    outputAxes: tuple[int, ...]


class ByDimension(_Base):
    """Independent transforms on subsets of axes: ``out[outputAxes] = t(in[inputAxes])``."""

    type: Literal["byDimension"] = "byDimension"
    transformations: tuple[_DimPart, ...]

    @model_validator(mode="after")
    def _disjoint(self) -> ByDimension:
        outs = [a for part in self.transformations for a in part.outputAxes]
        if len(set(outs)) != len(outs):
            raise ValueError("byDimension writes one output axis more than once")
        if sorted(outs) != list(range(len(outs))):
            raise ValueError(f"byDimension output axes {sorted(outs)} must cover 0..N-1")
        return self

    def transform_points(self, points: FloatArray) -> FloatArray:  # noqa: D102
        p = np.asarray(points, dtype=np.float64)
        n_out = sum(len(part.outputAxes) for part in self.transformations)
        out = np.zeros((p.shape[0], n_out))
        for part in self.transformations:
            if any(i >= p.shape[1] for i in part.inputAxes):
                raise InvalidInputError(
                    f"byDimension reads input axes {list(part.inputAxes)} of {p.shape[1]}"
                )
            out[:, list(part.outputAxes)] = part.transformation.transform_points(
                p[:, list(part.inputAxes)]
            )
        return out

    def inverse(self) -> Transform:  # noqa: D102
        parts = tuple(
            _DimPart(
                transformation=part.transformation.inverse(),
                inputAxes=part.outputAxes,
                outputAxes=part.inputAxes,
            )
            for part in self.transformations
        )
        return ByDimension(transformations=parts, **self._swapped())

    def to_affine(self, ndim: int | None = None) -> FloatArray:  # noqa: D102
        n_out = sum(len(part.outputAxes) for part in self.transformations)
        n_in = max((max(part.inputAxes, default=-1) for part in self.transformations), default=-1)
        m = np.zeros((n_out + 1, n_in + 2))
        m[-1, -1] = 1.0
        for part in self.transformations:
            a = part.transformation.to_affine(len(part.inputAxes))
            for r, o in enumerate(part.outputAxes):
                for c, i in enumerate(part.inputAxes):
                    m[o, i] = a[r, c]
                m[o, -1] = a[r, -1]
        if m.shape[0] != m.shape[1]:
            raise NoAffineError("byDimension changes the number of axes")
        return m


class Sequence(_Base):
    """Transforms applied in order (first element first)."""

    type: Literal["sequence"] = "sequence"
    transformations: tuple[Transform, ...]

    def transform_points(self, points: FloatArray) -> FloatArray:  # noqa: D102
        out = np.asarray(points, dtype=np.float64)
        for t in self.transformations:
            out = t.transform_points(out)
        return out

    def inverse(self) -> Transform:  # noqa: D102
        inv = tuple(t.inverse() for t in reversed(self.transformations))
        return Sequence(transformations=inv, **self._swapped())

    def to_affine(self, ndim: int | None = None) -> FloatArray:  # noqa: D102
        m: FloatArray | None = None
        for t in self.transformations:
            a = t.to_affine(ndim if m is None else m.shape[0] - 1)
            m = a if m is None else a @ m
        if m is None:
            if ndim is None:
                raise NoAffineError("empty sequence needs `ndim`")
            return np.eye(ndim + 1)
        return m


class Bijection(_Base):
    """A forward transform paired with its explicitly given inverse."""

    type: Literal["bijection"] = "bijection"
    forward: Transform
    inverse_: Transform = Field(alias="inverse")

    def transform_points(self, points: FloatArray) -> FloatArray:  # noqa: D102
        return self.forward.transform_points(points)

    def inverse(self) -> Transform:  # noqa: D102
        return Bijection(forward=self.inverse_, inverse=self.forward, **self._swapped())  # type: ignore[call-arg]

    def to_affine(self, ndim: int | None = None) -> FloatArray:  # noqa: D102
        return self.forward.to_affine(ndim)


Transform = Annotated[
    Identity
    | Scale
    | Translation
    | Affine
    | Rotation
    | MapAxis
    | Displacements
    | Coordinates
    | ProjectAxis
    | ByDimension
    | Sequence
    | Bijection,
    Field(discriminator="type"),
]

_DimPart.model_rebuild()
ByDimension.model_rebuild()
Sequence.model_rebuild()
Bijection.model_rebuild()

_ADAPTER: TypeAdapter[Transform] = TypeAdapter(Transform)


def parse_transform(data: Any, *, where: str = "") -> Transform:
    """Parse one transform from its OME-Zarr JSON (0.6 form); a malformed one is one clear line.

    ``where`` says where it was found (e.g. ``"scene of M001.ome.zarr"``) for the message.

    Parameters
    ----------
    data : dict
        One transformation as OME-Zarr 0.6 JSON (``{"type": "scale", ...}``).
    where : str
        Where it was found, for the error message.

    Returns
    -------
    Transform

    Examples
    --------
    >>> t = parse_transform({"type": "scale", "scale": [2.0, 1.0, 1.0]})
    >>> t.transform_points([[1.0, 1.0, 1.0]]).tolist()
    [[2.0, 1.0, 1.0]]
    """
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith("function-"))
        name = data.get("name") if isinstance(data, dict) else None
        kind = data.get("type") if isinstance(data, dict) else None
        at = f" in {where}" if where else ""
        label = f"{kind!r} transform" + (f" {name!r}" if name else "")
        raise InvalidInputError(
            f"malformed {label}{at}: {loc or 'value'}: {err.get('msg', 'invalid')}; "
            "see the OME-Zarr 0.6 coordinateTransformations specification"
        ) from None


def simplify(t: Transform, ndim: int = 3) -> Transform:
    """Collapse an all-affine sequence into a single :class:`Affine` (keeps ``input``/``output``)."""
    if isinstance(t, Sequence) and t.is_affine():
        return Affine.from_matrix(t.to_affine(ndim), name=t.name, input=t.input, output=t.output)
    return t


# fmt: off
__all__ = [
    "Affine", "Bijection", "ByDimension", "CoordinateSystemRef", "Coordinates", "Displacements", "FloatArray", "Identity",
    "MapAxis", "ProjectAxis", "Rotation", "Scale", "Sequence", "Transform", "Translation", "parse_transform", "simplify",
]
# fmt: on
