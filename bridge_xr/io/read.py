"""Reading OME-Zarr 0.4/0.5/0.6 images: versions, multiscale metadata, lazy calibrated DataArrays."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import xarray as xr
import zarr
from zarr.abc.store import Store

from bridge_xr._constants import ATTRS_KEY
from bridge_xr.errors import FormatVersionError, InvalidInputError
from bridge_xr.io._store import StoreLike, cached, resolve_store
from bridge_xr.model.coords import CoordinateSystem
from bridge_xr.model.image import make_image, spatial_dims
from bridge_xr.model.transforms import (
    Transform,
    parse_transform,
)
from bridge_xr.model.units import canonical_unit

_VERSION_RE = re.compile(r"^(0\.[456])")


def normalise_version(tag: str) -> str:
    """Map a version tag (``0.6.dev4``, ``0.6rc0``, ``0.5-dev-spatialdata`` ...) to its release."""
    m = _VERSION_RE.match(str(tag))
    if m is None:
        msg = f"OME-Zarr version {tag!r} is not supported; bridge_xr reads 0.4, 0.5 and 0.6"
        raise FormatVersionError(msg)
    return m.group(1)


def ome_block(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The OME metadata block and its normalised version (0.4 keeps it at top level)."""
    if "ome" in attrs:
        block = dict(attrs["ome"])
        tag = block.get("version")
        if tag is None and block.get("multiscales"):
            tag = block["multiscales"][0].get("version")
        return block, normalise_version(tag or "")
    if "multiscales" in attrs:
        tag = attrs["multiscales"][0].get("version", "0.4")
        return dict(attrs), normalise_version(tag)
    raise FormatVersionError("no OME-Zarr metadata (neither `ome` nor `multiscales`) in group")


def _legacy_io(t: dict[str, Any]) -> dict[str, Any]:
    """Accept pre-0.6-final spellings (string input/output, ``input_axes``)."""
    out = dict(t)
    for key in ("input", "output"):
        if isinstance(out.get(key), str):
            out[key] = {"name": out[key]}
    for key in ("transformations",):
        if key in out:
            out[key] = [_legacy_io(x) for x in out[key]]
    for key in ("forward", "inverse"):
        if key in out:
            out[key] = _legacy_io(out[key])
    return out


def _dataset_geometry(cts: Sequence[dict[str, Any]], ndim: int) -> tuple[list[float], list[float]]:
    scale, trans = [1.0] * ndim, [0.0] * ndim
    flat: list[dict[str, Any]] = []
    for t in cts:
        flat.extend(t["transformations"] if t.get("type") == "sequence" else [t])
    for t in flat:
        if t["type"] == "scale":
            s = [float(v) for v in t["scale"]]
            scale = [a * b for a, b in zip(scale, s, strict=True)]
            trans = [a * b for a, b in zip(trans, s, strict=True)]
        elif t["type"] == "translation":
            trans = [a + float(b) for a, b in zip(trans, t["translation"], strict=True)]
        elif t["type"] != "identity":
            msg = f"unsupported dataset transform {t['type']!r}"
            raise FormatVersionError(msg)
    return scale, trans


@dataclass(frozen=True)
class MultiscaleInfo:
    """Parsed multiscale metadata of one image group."""

    version: str
    dims: tuple[str, ...]
    unit: str | None
    level_paths: tuple[str, ...]
    level_scale: tuple[tuple[float, ...], ...]
    level_translation: tuple[tuple[float, ...], ...]
    systems: dict[str, CoordinateSystem]
    transforms: dict[str, Transform]
    bridge: dict[str, Any]
    name: str | None


def read_multiscale_info(group: zarr.Group) -> MultiscaleInfo:
    """Parse any supported version's multiscales block into one in-memory form."""
    attrs = group.attrs.asdict()
    block, version = ome_block(attrs)
    ms = block["multiscales"][0]
    if version == "0.6" and "coordinateSystems" in ms:
        intrinsic = _pick_intrinsic(ms)
        axes = intrinsic["axes"]
    else:
        axes = ms.get("axes") or [{"name": n, "type": "space"} for n in ("z", "y", "x")]
        axes = [{"name": a, "type": "space"} if isinstance(a, str) else a for a in axes]
    dims = _canonical_names(axes, where=group.path or "/")
    units = {a.get("unit") for a in axes if a.get("type") == "space" and a.get("unit")}
    unit = canonical_unit(units.pop()) if len(units) == 1 else None
    paths, scales, trans = [], [], []
    top = ms.get("coordinateTransformations") if version != "0.6" else None
    for ds in ms["datasets"]:
        s, t = _dataset_geometry(ds.get("coordinateTransformations", []), len(dims))
        if top:
            s2, t2 = _dataset_geometry(top, len(dims))
            t = [a * b + c for a, b, c in zip(t, s2, t2, strict=True)]
            s = [a * b for a, b in zip(s, s2, strict=True)]
        paths.append(ds["path"])
        scales.append(tuple(s))
        trans.append(tuple(t))
    systems: dict[str, CoordinateSystem] = {}
    transforms: dict[str, Transform] = {}
    if version == "0.6":
        for cs in ms.get("coordinateSystems", []):
            try:
                systems[cs["name"]] = CoordinateSystem.model_validate(cs)
            except ValueError:
                continue
        for t in ms.get("coordinateTransformations", []) or []:
            parsed = parse_transform(_legacy_io(t))
            if parsed.output is not None and parsed.output.name:
                transforms[parsed.output.name] = parsed
    return MultiscaleInfo(
        version=version,
        dims=dims,
        unit=unit,
        level_paths=tuple(paths),
        level_scale=tuple(scales),
        level_translation=tuple(trans),
        systems=systems,
        transforms=transforms,
        bridge=dict(attrs.get(ATTRS_KEY) or {}),  # type: ignore[arg-type]
        name=ms.get("name"),
    )


_CANONICAL = ("t", "c", "z", "y", "x")


def _canonical_names(axes: Sequence[dict[str, Any]], *, where: str) -> tuple[str, ...]:
    """Axis names mapped onto t, c, z, y, x by type and name, or one clear refusal.

    Space axes must be named x, y, z (any case, any order); one ``time`` axis is ``t`` and one
    ``channel`` (or vector: ``displacement``, ``coordinate``) axis is ``c`` whatever their names.
    """
    names: list[str] = []
    for a in axes:
        kind, name = a.get("type"), str(a.get("name", ""))
        if kind == "space" or (kind is None and name.lower() in ("x", "y", "z")):
            if name.lower() not in ("x", "y", "z"):
                space = ", ".join(str(b.get("name")) for b in axes if b.get("type") == "space")
                raise InvalidInputError(
                    f"image {where!r} has space axes ({space}); bridge_xr needs them named "
                    "x, y, z (any order): rename the axes in its metadata"
                )
            names.append(name.lower())
        elif kind == "time" or name == "t":
            names.append("t")
        elif kind in ("channel", "displacement", "coordinate") or name == "c":
            names.append("c")
        else:
            raise InvalidInputError(
                f"image {where!r} has an axis {name!r} of type {kind!r}; bridge_xr reads "
                "space (x, y, z), time and channel axes"
            )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"image {where!r} has repeated axes {names}")
    return tuple(names)


def _pick_intrinsic(ms: dict[str, Any]) -> dict[str, Any]:
    systems = ms["coordinateSystems"]
    outputs = set()
    for ds in ms["datasets"]:
        for t in ds.get("coordinateTransformations", []):
            out = t.get("output")
            outputs.add(out.get("name") if isinstance(out, dict) else out)
    for cs in systems:
        if cs["name"] in outputs:
            return dict(cs)
    return dict(systems[-1])


def open_group(where: StoreLike, path: str) -> zarr.Group:
    """Open an existing group read-only with a clear error when it is not there."""
    store = resolve_store(where)
    key = path.strip("/")
    return cached(store, ("group", key), lambda: _open_group(store, key))


def _open_group(store: Store, path: str) -> zarr.Group:
    try:
        return zarr.open_group(store, path=path or None, mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError) as exc:
        msg = f"no image group {path!r} in the store; `bridge info` lists the images"
        raise InvalidInputError(msg) from exc


def read_image(where: StoreLike, path: str, *, level: int = 0) -> xr.DataArray:
    """Read one pyramid level of an image as a lazy, calibrated :class:`xarray.DataArray`.

    Parameters
    ----------
    where : str, path, zarr store or Scene
        The store (a Scene's store is read once and cached until the next write).
    path : str
        Image path in the store, e.g. ``invivo_mri/d060/T2w``.
    level : int
        Pyramid level (0: full resolution).

    Returns
    -------
    xarray.DataArray
        Dask-backed, dims a subset of ``t, c, z, y, x``, coordinates in ``attrs["unit"]``;
        ``attrs`` holds ``spacing``, ``origin``, ``transforms`` and the ``bridge_xr`` block.

    Raises
    ------
    InvalidInputError
        No such image or level.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> img = read_image(tiny_scene(), "mri")
    >>> img.dims, img.attrs["unit"]
    (('z', 'y', 'x'), 'micrometer')
    """
    store = resolve_store(where)
    img = cached(store, ("image", path.strip("/"), level), lambda: _read_image(store, path, level))
    out = img.copy(deep=False)
    out.attrs = copy.deepcopy(img.attrs)
    return out


def _read_image(store: Store, path: str, level: int) -> xr.DataArray:
    group = open_group(store, path)
    info = read_multiscale_info(group)
    if not 0 <= level < len(info.level_paths):
        msg = f"image {path!r} has levels 0..{len(info.level_paths) - 1}; got level {level}"
        raise InvalidInputError(msg)
    arr = group[info.level_paths[level]]
    assert isinstance(arr, zarr.Array)
    data = da.from_zarr(arr, chunks=arr.shards or arr.chunks)
    order = sorted(range(len(info.dims)), key=lambda i: _CANONICAL.index(info.dims[i]))
    dims = tuple(info.dims[i] for i in order)
    if dims != info.dims:  # stored e.g. x, y, z: the same voxels, seen as z, y, x
        data = data.transpose(order)
    sdims = spatial_dims(dims)
    scale = dict(zip(info.dims, info.level_scale[level], strict=True))
    trans = dict(zip(info.dims, info.level_translation[level], strict=True))
    channel_names = info.bridge.get("channel_names")
    img = make_image(
        data,
        dims=dims,
        spacing={d: scale[d] for d in sdims},
        origin={d: trans[d] for d in sdims},
        unit=info.unit or "micrometer",
        channel_names=channel_names if "c" in info.dims else None,
        name=path,
        transforms=info.transforms,
    )
    img.attrs["ome_version"] = info.version
    img.attrs["bridge_xr"] = info.bridge
    img.attrs["level"] = level
    img.attrs["n_levels"] = len(info.level_paths)
    return img


def read_multiscale(store: Store | str, path: str) -> xr.DataTree:
    """Every level of an image as an :class:`xarray.DataTree` (children ``s0``, ``s1`` ...).

    Parameters
    ----------
    store : str, path, zarr store or Scene
        The subject store.
    path : str
        Image path.

    Returns
    -------
    xarray.DataTree

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> sorted(read_multiscale(tiny_scene().store, "mri").children)
    ['s0']
    """
    group = open_group(store, path)
    info = read_multiscale_info(group)
    children = {}
    for k, lp in enumerate(info.level_paths):
        img = read_image(store, path, level=k)
        children[lp] = xr.Dataset({"image": img.drop_attrs()}, attrs=_plain_attrs(img.attrs))
    return xr.DataTree.from_dict(children, name=path.strip("/").rsplit("/", 1)[-1])


def _plain_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "unit": attrs["unit"],
        "spacing": dict(attrs["spacing"]),
        "origin": dict(attrs["origin"]),
        "level": attrs.get("level", 0),
    }
