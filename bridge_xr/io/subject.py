"""The subject store: one OME-Zarr 0.6 *scene* holding every image of one animal or patient.

Layout::

    M001.ome.zarr/            zarr.json: ome.scene (edges), bridge_xr (index, provenance, ...)
      invivo_mri/d060/T2w/    multiscale image (s0, s1, ...)
      twophoton/d060/angiogram/

The root metadata is written last: a store whose root has no ``ome.scene`` is incomplete.
The scene always has a ``reference`` coordinate system (micrometres) reached from the first
image by an explicit edge (a ``scale`` when the units differ), so it is valid from the first image.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import xarray as xr
import zarr
from zarr.abc.store import Store

from bridge_xr._constants import ATTRS_KEY, INTRINSIC, OME_VERSION, REFERENCE, SCANNER_RAS
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import (
    StoreLike,
    cached,
    delete_prefix,
    describe_store,
    key_exists,
    resolve_store,
)
from bridge_xr.io.downsample import Method
from bridge_xr.io.ome_zarr import _publish_group_attrs, write_multiscale
from bridge_xr.io.read import ome_block
from bridge_xr.model.coords import CoordinateSystem, check_edge_units, spatial_system
from bridge_xr.model.image import spatial_dims
from bridge_xr.model.metadata import ImageMetadata, Provenance, SubjectMetadata
from bridge_xr.model.transforms import (
    CoordinateSystemRef,
    Identity,
    Scale,
    Transform,
    parse_transform,
)
from bridge_xr.model.units import conversion_factor

_IMAGE_PATH_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./")


def _root_attrs(where: StoreLike) -> dict[str, Any]:
    store = resolve_store(where)
    return copy.deepcopy(cached(store, "root attrs", lambda: _read_root_attrs(store)))


def _read_root_attrs(store: Store) -> dict[str, Any]:
    if not key_exists(store, "zarr.json"):
        return {}
    try:
        return dict(zarr.open_group(store, mode="r").attrs.asdict())
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError):
        return {}


def read_subject(store: StoreLike) -> SubjectMetadata:
    """The ``bridge_xr`` block of a subject store (empty when the store is new).

    Parameters
    ----------
    store : str, path, zarr store or Scene
        The subject store.

    Returns
    -------
    SubjectMetadata

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> sorted(read_subject(tiny_scene()).images)
    ['micro', 'mri']
    """
    st = resolve_store(store)
    # frozen and never mutated in place: a Scene's store parses it once per state of the store
    return cached(st, "subject", lambda: _parse_subject(st))


def _parse_subject(store: Store) -> SubjectMetadata:
    block = _root_attrs(store).get(ATTRS_KEY)
    return SubjectMetadata() if block is None else SubjectMetadata.model_validate(block)


def scene_transforms(store: StoreLike) -> list[Transform]:
    """Every registration edge of the scene, parsed."""
    attrs = _root_attrs(store)
    if "ome" not in attrs:
        return []
    block, _ = ome_block(attrs)
    return [parse_transform(t) for t in block.get("scene", {}).get("coordinateTransformations", [])]


def scene_systems(store: StoreLike) -> list[CoordinateSystem]:
    """Scene-level coordinate systems (the first is the default display system)."""
    attrs = _root_attrs(store)
    block = attrs.get("ome", {})
    return [
        CoordinateSystem.model_validate(cs)
        for cs in block.get("scene", {}).get("coordinateSystems", [])
    ]


def check_image_path(path: str) -> str:
    """Validate an image path such as ``invivo_mri/d060/T2w``."""
    clean = path.strip("/")
    parts = clean.split("/")
    if not clean or set(clean) - _IMAGE_PATH_OK or any(p in {"", ".", ".."} for p in parts):
        msg = f"image path {path!r} must be like 'invivo_mri/d060/T2w' (letters, digits, _-.)"
        raise InvalidInputError(msg)
    if parts[0] == "coordinateTransformations" or any(
        p.startswith("s") and p[1:].isdigit() for p in parts
    ):
        msg = f"image path {path!r} uses a reserved name (coordinateTransformations, s0, s1 ...)"
        raise InvalidInputError(msg)
    return clean


def _reference_edge(meta: ImageMetadata, systems: Mapping[str, CoordinateSystem]) -> Transform:
    src_name = SCANNER_RAS if SCANNER_RAS in systems else INTRINSIC
    src = systems[src_name]
    ref = spatial_system(REFERENCE, "micrometer")
    unit = src.spatial_unit or "micrometer"
    factor = conversion_factor(unit, "micrometer")
    t: Transform = Identity() if factor == 1.0 else Scale(scale=(factor,) * 3)
    t = t.with_io(
        CoordinateSystemRef(name=src_name, path=meta.path), CoordinateSystemRef(name=REFERENCE)
    )
    check_edge_units(t, src, ref)
    return t.model_copy(update={"name": f"{meta.path}:{src_name}_to_reference"})


def publish_subject(
    store: Store,
    subject: SubjectMetadata,
    transforms: Sequence[Transform],
    systems: Sequence[CoordinateSystem],
) -> None:
    """Write the root group's attributes (``ome.scene`` + ``bridge_xr``); the last write."""
    attrs: dict[str, Any] = {
        "ome": {
            "version": OME_VERSION,
            "scene": {
                "coordinateSystems": [
                    cs.model_dump(mode="json", exclude_none=True) for cs in systems
                ],
                "coordinateTransformations": [t.to_ome() for t in transforms],
            },
        },
        ATTRS_KEY: subject.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    _publish_group_attrs(store, "", attrs)


def add_image(
    where: StoreLike,
    image: xr.DataArray,
    meta: ImageMetadata,
    *,
    extra_systems: Sequence[tuple[CoordinateSystem, Transform]] = (),
    overwrite: bool = False,
    method: Method = "mean",
    levels: int | None = None,
    chunks: Mapping[str, int] | None = None,
    shards: Mapping[str, int] | Literal[False] | None = None,
    compressor: str = "auto",
    progress: Any = None,
    storage_options: dict[str, Any] | None = None,
) -> SubjectMetadata:
    """Write ``image`` into the subject store at ``meta.path`` and register it in the scene.

    Nothing is left behind when it fails: a new store is removed, a new image's keys deleted.

    Parameters
    ----------
    where : str, path, zarr store or Scene
        The subject store (created when new).
    image : xarray.DataArray
        A calibrated image (:func:`bridge_xr.model.image.make_image`, or a resample result).
    meta : ImageMetadata
        Path, modality, provenance ...
    extra_systems : sequence of (CoordinateSystem, Transform)
        More coordinate systems of the image (e.g. ``scanner_ras``).
    overwrite : bool
        Replace an image at the same path.
    method : {'mean', 'mode'}
        Pyramid reduction (``mode`` for labels).
    levels, chunks, shards, compressor
        Storage (see :func:`bridge_xr.io.write_multiscale`).
    progress : callable, optional
        ``progress(levels_done, levels_total)``.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    SubjectMetadata
        The subject after the image was added.

    Examples
    --------
    >>> import numpy as np
    >>> from zarr.storage import MemoryStore
    >>> from bridge_xr.model.image import make_image
    >>> from bridge_xr.model.metadata import ImageMetadata, Provenance
    >>> img = make_image(np.ones((2, 4, 4), np.uint8), dims="zyx", spacing=(5, 1, 1), unit="um")
    >>> meta = ImageMetadata(path="twophoton/d1/angiogram", modality="twophoton",
    ...                      provenance=Provenance.now("example"))
    >>> sorted(add_image(MemoryStore(), img, meta).images)
    ['twophoton/d1/angiogram']
    """
    # long by design: validate, write, then publish the metadata last, with cleanup on failure: one transaction
    store = resolve_store(where, storage_options=storage_options)
    path = check_image_path(meta.path)
    if "c" in image.dims and "c" in image.coords and meta.channel_names is None:
        names = tuple(str(v) for v in image.coords["c"].values)
        meta = meta.model_copy(update={"channel_names": names})
    new_store = not key_exists(store, "zarr.json")
    subject = read_subject(store)
    if not new_store and ATTRS_KEY not in _root_attrs(store) and "ome" in _root_attrs(store):
        msg = f"{describe_store(store)} is an OME-Zarr store not made by bridge_xr; write to a new store"
        raise InvalidInputError(msg)
    if (path in subject.images or key_exists(store, f"{path}/zarr.json")) and not overwrite:
        msg = (
            f"image {path!r} already exists in {describe_store(store)}; "
            "choose another path or pass `overwrite`"
        )
        raise InvalidInputError(msg)
    try:
        write_multiscale(
            store,
            path,
            image.data,
            dims=image.dims,  # type: ignore[arg-type]
            spacing=image.attrs["spacing"],
            origin=image.attrs["origin"],
            unit=image.attrs["unit"],
            extra_systems=extra_systems,
            bridge_attrs=meta.model_dump(mode="json", exclude_none=True),
            method=method,
            kind=meta.kind,
            levels=levels,
            chunks=chunks,
            shards=shards,
            compressor=compressor,
            extra_ome={"image-label": {}} if meta.kind == "labels" else None,
            progress=progress,
        )
        systems = {cs.name: cs for cs, _ in extra_systems}
        from bridge_xr.io.ome_zarr import intrinsic_system

        systems[INTRINSIC] = intrinsic_system(
            tuple(d for d in image.dims if d in spatial_dims(image.dims)),  # type: ignore[arg-type]
            image.attrs["unit"],
        )
        edges = [t for t in scene_transforms(store) if not _touches(t, path)]
        ref_systems = scene_systems(store) or [spatial_system(REFERENCE, "micrometer")]
        reference = subject.reference_image
        if reference is None or reference == path:
            reference = path
            edges.insert(0, _reference_edge(meta, systems))
        images = dict(subject.images)
        images[path] = meta
        subject = subject.model_copy(
            update={
                "images": images,
                "reference_image": reference,
                "provenance": (*subject.provenance, meta.provenance),
            }
        )
        publish_subject(store, subject, edges, ref_systems)
    except BaseException:
        delete_prefix(store, "" if new_store else path)
        raise
    return subject


def _touches(t: Transform, path: str) -> bool:
    return any(ref is not None and ref.path == path for ref in (t.input, t.output))


def subject_provenance(operation: str, **kw: Any) -> Provenance:
    """Shortcut for :meth:`Provenance.now`."""
    return Provenance.now(operation, **kw)
