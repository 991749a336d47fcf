"""Transforms that keep their numbers in arrays of the store (fields, matrices by path), loaded."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from bridge_xr.errors import InvalidInputError
from bridge_xr.io.read import read_image
from bridge_xr.model.transforms import (
    Affine,
    Bijection,
    ByDimension,
    Coordinates,
    Displacements,
    Rotation,
    Sequence,
    Transform,
)

__all__ = ["bind_arrays"]


def bind_arrays(store: Any, t: Transform, *, where: str) -> Transform:
    """Load what a transform keeps in arrays (fields, matrices by path)."""
    if isinstance(t, Displacements | Coordinates):
        img = read_image(store, t.path)
        sp = [img.attrs["spacing"][d] for d in img.dims if d in img.attrs["spacing"]]
        org = [img.attrs["origin"][d] for d in img.dims if d in img.attrs["origin"]]
        return t.bind(np.asarray(img.values, dtype=np.float64), spacing=sp, origin=org)
    if isinstance(t, Affine | Rotation) and t.path is not None and not getattr(t, t.type):
        try:
            arr = np.asarray(zarr.open_array(store, path=t.path, mode="r")[...])
        except (FileNotFoundError, KeyError, ValueError, zarr.errors.ArrayNotFoundError):
            raise InvalidInputError(
                f"{t.type} of {where} points to array {t.path!r}, which is not there"
            ) from None
        rows = tuple(tuple(float(v) for v in r) for r in arr)
        update = {"affine": rows} if isinstance(t, Affine) else {"rotation": rows}
        return type(t).model_validate({**t.model_dump(by_alias=True), **update, "path": None})
    if isinstance(t, Sequence):
        return t.model_copy(
            update={
                "transformations": tuple(
                    bind_arrays(store, x, where=where) for x in t.transformations
                )
            }
        )
    if isinstance(t, Bijection):
        return t.model_copy(
            update={
                "forward": bind_arrays(store, t.forward, where=where),
                "inverse_": bind_arrays(store, t.inverse_, where=where),
            }
        )
    if isinstance(t, ByDimension):
        parts = tuple(
            p.model_copy(
                update={"transformation": bind_arrays(store, p.transformation, where=where)}
            )
            for p in t.transformations
        )
        return t.model_copy(update={"transformations": parts})
    return t
