"""Check a store with two independent validators: ngff-zarr's JSON schemas and ome-zarr-models.

Needs the ``validate`` extra (``pip install 'bridge_xr[validate]'``).
"""

from __future__ import annotations

import warnings
from typing import Any

import zarr

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.convert import _discover
from bridge_xr.io.read import ome_block
from bridge_xr.io.subject import read_subject


def _validators() -> tuple[Any, Any]:
    try:
        import ngff_zarr
        import ome_zarr_models
    except ImportError as exc:
        msg = "validation needs ngff-zarr and ome-zarr-models: pip install 'bridge_xr[validate]'"
        raise InvalidInputError(msg) from exc
    return ngff_zarr, ome_zarr_models


def validate_group(group: zarr.Group, *, model: str = "image") -> list[str]:
    """Problems found in one group by each validator (empty when both accept it)."""
    ngff_zarr, ozm = _validators()
    attrs = group.attrs.asdict()
    problems = []
    try:
        _, version = ome_block(attrs)
    except InvalidInputError as exc:
        return [f"{group.path or '/'}: {exc}"]
    try:
        ngff_zarr.validate(attrs, version=version, model=model)
    except Exception as exc:
        problems.append(f"{group.path or '/'}: ngff-zarr {model}: {str(exc).splitlines()[0]}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if model == "scene":
                from ome_zarr_models.v06 import Scene

                Scene.from_zarr(group)
            else:
                obj = ozm.open_ome_zarr(group, version=version)
                kind = type(obj).__name__
                if kind not in {"Image", "ImageLabel"}:
                    problems.append(
                        f"{group.path}: ome-zarr-models read it as {kind}, not an image"
                    )
    except Exception as exc:
        problems.append(f"{group.path or '/'}: ome-zarr-models {model}: {str(exc).splitlines()[0]}")
    return problems


def validate_store(where: StoreLike, *, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Validate the scene root and every image of a store; returns the problems found.

    Parameters
    ----------
    where : str, path or zarr store
        The store.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    list of str
        One line per problem; empty when every reader accepts the store.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> from bridge_xr.io import add_image
    >>> from bridge_xr.model.image import make_image
    >>> from bridge_xr.model.metadata import ImageMetadata, Provenance
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "M.ome.zarr"
    >>> img = make_image(np.zeros((2, 8, 8), np.uint8), dims="zyx", spacing=(2, 1, 1), unit="um")
    >>> _ = add_image(path, img, ImageMetadata(path="a", modality="other",
    ...                                        provenance=Provenance.now("x")))
    >>> validate_store(path)
    []
    """
    store = resolve_store(where, read_only=True, storage_options=storage_options)
    subject = read_subject(store)
    paths = list(subject.images) or _discover(store)
    if not paths:
        return ["no OME-Zarr image found in the store"]
    problems: list[str] = []
    for p in paths:
        group = zarr.open_group(store, path=p or None, mode="r")
        problems += validate_group(group, model="image")
    root = zarr.open_group(store, mode="r")
    ome: Any = root.attrs.get("ome") or {}
    if "scene" in ome:
        problems += validate_group(root, model="scene")
    elif paths != [""]:
        problems.append("/: no ome.scene at the root; the store is incomplete (interrupted write?)")
    return problems
