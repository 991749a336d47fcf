"""Registrations as OME-Zarr 0.6 scene edges: rasterised fields, edges, the current mark.

A registration of ``moving`` onto ``fixed`` is kept twice:

* exactly, under ``bridge_xr.registrations[name]`` (model, landmarks, TPS centres and weights,
  direction fixed -> moving, µm, x/y/z) - this is what point mapping uses;
* as one OME-Zarr 0.6 scene edge from ``fixed``'s ``intrinsic`` system to ``moving``'s (a forward
  point map in the resampling direction): a ``bijection`` of affines for linear models, or a
  ``bijection`` of ``sequence``s with rasterised ``displacements`` fields for the TPS, whose
  certified maximum deviation from the exact TPS is recorded.

:func:`add_registration` writes both for a fitted model; fitting from landmarks is
:func:`bridge_xr.register.register`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
import xarray as xr

from bridge_xr._constants import INTRINSIC, field_path
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, describe_store, resolve_store
from bridge_xr.io.ome_zarr import intrinsic_system, write_multiscale
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import publish_subject, read_subject, scene_systems, scene_transforms
from bridge_xr.model.bspline import BSplineModel
from bridge_xr.model.coords import check_edge_units
from bridge_xr.model.image import physical_extent, spatial_dims, um_factor
from bridge_xr.model.metadata import LandmarkSet, Provenance, Registration, SubjectMetadata
from bridge_xr.model.pointmaps import Model, ThinPlateSpline
from bridge_xr.model.slices import SliceStackModel
from bridge_xr.model.transforms import (
    Affine,
    Bijection,
    CoordinateSystemRef,
    Displacements,
    Scale,
    Sequence,
    Transform,
)
from bridge_xr.scene.fields import (
    default_field_spacing,
    rasterise_model,
    rasterise_slices,
    rasterise_tps,
    rasterise_tps_inverse,
)

__all__ = [
    "add_registration",
    "default_field_spacing",
    "rasterise_tps",
    "rasterise_tps_inverse",
    "set_current",
]

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _intrinsic_of(img: xr.DataArray) -> Any:
    dims = tuple(str(d) for d in img.dims)
    return intrinsic_system(spatial_dims(dims), img.attrs["unit"])


def _wrap(parts: list[Transform]) -> Transform:
    return parts[0] if len(parts) == 1 else Sequence(transformations=tuple(parts))


def _scaled(core: Transform, f_in: float, f_out: float) -> Transform:
    """``core`` (µm -> µm) between systems in units ``f_in``/``f_out`` µm per unit."""
    parts: list[Transform] = []
    if f_in != 1.0:
        parts.append(Scale(scale=(f_in,) * 3))
    parts.append(core)
    if f_out != 1.0:
        parts.append(Scale(scale=(1.0 / f_out,) * 3))
    return _wrap(parts)


def _linear_edge(model: Model, f_fixed: float, f_moving: float) -> Transform:
    fwd = _scaled(Affine.from_matrix(model.to_affine()), f_fixed, f_moving)
    return Bijection(forward=fwd, inverse=fwd.inverse())  # type: ignore[call-arg]


def _write_field(
    store: Any,
    path: str,
    field: np.ndarray,
    origin: np.ndarray,
    spacing: float | tuple[float, float, float],
) -> None:
    sp = (spacing,) * 3 if isinstance(spacing, float | int) else spacing
    write_multiscale(
        store,
        path,
        field,
        dims="czyx",
        spacing=dict(zip("zyx", sp, strict=True)),
        origin=dict(zip("zyx", origin, strict=True)),
        unit="micrometer",
        kind="displacements",
        levels=1,
        shards=False,
        compressor="zstd",
    )


def _tps_edge(
    store: Any,
    tps: ThinPlateSpline,
    name: str,
    images: tuple[xr.DataArray, xr.DataArray],
    field_spacing_um: float | None,
) -> tuple[Transform, dict[str, Any]]:
    """Write the forward and inverse fields of ``tps``; the edge and the fields' figures."""
    fimg, mimg = images
    f_fac, m_fac = um_factor(fimg), um_factor(mimg)
    ext = {d: (lo * f_fac, hi * f_fac) for d, (lo, hi) in physical_extent(fimg).items()}
    if field_spacing_um is None:
        field_spacing_um = default_field_spacing(ext, min(fimg.attrs["spacing"].values()) * f_fac)
    field, origin, cert = rasterise_tps(tps, ext, field_spacing_um)
    fwd_path = field_path(name)
    _write_field(store, fwd_path, field, origin, field_spacing_um)
    m_ext = {d: (lo * m_fac, hi * m_fac) for d, (lo, hi) in physical_extent(mimg).items()}
    inv_spacing = max(
        field_spacing_um, default_field_spacing(m_ext, field_spacing_um, max_points=1e6)
    )
    inv_field, inv_origin, inv_cert, n_folded = rasterise_tps_inverse(tps, m_ext, inv_spacing)
    inv_path = field_path(name, inverse=True)
    _write_field(store, inv_path, inv_field, inv_origin, inv_spacing)
    edge = Bijection(  # type: ignore[call-arg]
        forward=_scaled(Displacements(path=fwd_path, interpolation="linear"), f_fac, m_fac),
        inverse=_scaled(Displacements(path=inv_path, interpolation="linear"), m_fac, f_fac),
    )
    figures = {
        "field_path": fwd_path,
        "field_spacing_um": field_spacing_um,
        "certified_max_error_um": cert,
        "inverse_field": {
            "path": inv_path,
            "spacing_um": inv_spacing,
            "max_error_um": inv_cert,
            "points_without_inverse": n_folded,
        },
    }
    return edge, figures


def _um_extents(
    images: tuple[xr.DataArray, xr.DataArray],
) -> tuple[float, float, dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """µm per unit of the fixed and moving images, and their extents in µm."""
    facs = [um_factor(img) for img in images]
    ext = [{d: (lo * f, hi * f) for d, (lo, hi) in physical_extent(img).items()}
           for img, f in zip(images, facs, strict=True)]  # fmt: skip
    return facs[0], facs[1], ext[0], ext[1]


def _field_pair(
    store: Any,
    name: str,
    forward: tuple[np.ndarray, np.ndarray, Any],
    inverse: tuple[np.ndarray, np.ndarray, Any],
    facs: tuple[float, float],
    interpolation: Literal["nearest", "linear"],
) -> tuple[Transform, str, str]:
    """Write a map's forward and inverse fields (field, origin, spacing); their edge and paths."""
    fwd_path, inv_path = field_path(name), field_path(name, inverse=True)
    _write_field(store, fwd_path, *forward)
    _write_field(store, inv_path, *inverse)
    f_fac, m_fac = facs
    edge = Bijection(  # type: ignore[call-arg]
        forward=_scaled(Displacements(path=fwd_path, interpolation=interpolation), f_fac, m_fac),
        inverse=_scaled(Displacements(path=inv_path, interpolation=interpolation), m_fac, f_fac),
    )
    return edge, fwd_path, inv_path


def _slices_edge(
    store: Any,
    model: SliceStackModel,
    name: str,
    images: tuple[xr.DataArray, xr.DataArray],
    field_spacing_um: float | None,
) -> tuple[Transform, dict[str, Any]]:
    """Forward and inverse fields of a slice stack, one plane per slice, nearest interpolation."""
    fimg = images[0]
    f_fac, m_fac, ext, m_ext = _um_extents(images)
    if field_spacing_um is None:
        field_spacing_um = default_field_spacing(
            {d: ext[d] for d in "yx"}, min(fimg.attrs["spacing"][d] for d in "yx") * f_fac,
            max_points=4e6,
        )  # fmt: skip
    fwd, f_org, f_sp, f_err = rasterise_slices(model, ext, field_spacing_um)
    inv, i_org, i_sp, i_err = rasterise_slices(model, m_ext, field_spacing_um, inverse=True)
    edge, fwd_path, inv_path = _field_pair(store, name, (fwd, f_org, f_sp), (inv, i_org, i_sp),
                                           (f_fac, m_fac), "nearest")  # fmt: skip
    return edge, {
        "field_path": fwd_path,
        "field_spacing_um": field_spacing_um,
        "certified_max_error_um": f_err,
        "field_error": "measured at 4000 random points (nearest sampling, one plane per slice)",
        "inverse_field": {"path": inv_path, "spacing_um": list(i_sp), "max_error_um": i_err},
    }


def _smooth_edge(
    store: Any,
    model: Model,
    name: str,
    images: tuple[xr.DataArray, xr.DataArray],
    field_spacing_um: float | None,
) -> tuple[Transform, dict[str, Any]]:
    """Forward and inverse trilinear fields of any smooth non-linear map (a B-spline)."""
    fimg = images[0]
    f_fac, m_fac, ext, m_ext = _um_extents(images)
    if field_spacing_um is None:  # smooth on the lattice scale: one sample per fixed voxel
        field_spacing_um = default_field_spacing(
            ext, 2 * min(fimg.attrs["spacing"].values()) * f_fac, max_points=2e6
        )
    fwd, f_org, f_err = rasterise_model(model, ext, field_spacing_um)
    inv_spacing = max(
        field_spacing_um, default_field_spacing(m_ext, 2 * field_spacing_um, max_points=5e5)
    )
    inv, i_org, i_err = rasterise_model(model, m_ext, inv_spacing, inverse=True)
    edge, fwd_path, inv_path = _field_pair(store, name, (fwd, f_org, field_spacing_um),
                                           (inv, i_org, inv_spacing), (f_fac, m_fac), "linear")  # fmt: skip
    return edge, {
        "field_path": fwd_path,
        "field_spacing_um": field_spacing_um,
        "certified_max_error_um": f_err,
        "field_error": "measured at 4000 random points (trilinear)",
        "inverse_field": {"path": inv_path, "spacing_um": inv_spacing, "max_error_um": i_err},
    }


def check_new_registration(
    subject: SubjectMetadata, *, fixed: str, moving: str, name: str, overwrite: bool, where: str
) -> None:
    """Refuse unknown images, a malformed ``name``, or an existing one without ``overwrite``."""
    for p in (fixed, moving):
        if p not in subject.images:
            raise InvalidInputError(f"no image {p!r} in {where}; `bridge info` lists them")
    if not _NAME.match(name):
        raise InvalidInputError(
            f"registration `name` {name!r} may use letters, digits, '_', '-', '.'"
        )
    if name in subject.registrations and not overwrite:
        raise InvalidInputError(
            f"registration {name!r} exists in {where}; choose another `name` or pass `overwrite`"
        )


def add_registration(
    where: StoreLike,
    model: Model,
    *,
    fixed: str,
    moving: str,
    name: str,
    landmarks: LandmarkSet,
    report: dict[str, Any] | None = None,
    field_spacing_um: float | None = None,
    overwrite: bool = False,
    current: bool = False,
    provenance: Provenance | None = None,
) -> Registration:
    """Store a fitted ``model`` (fixed -> moving) as an exact record plus a scene edge.

    Parameters
    ----------
    where : str, path or zarr store
        The subject store.
    model : LinearModel or ThinPlateSpline
        The fitted map from ``fixed`` points to ``moving`` points (µm, intrinsic spaces).
    fixed, moving : str
        Image paths in the store.
    name : str
        Registration name (letters, digits, ``_ - .``).
    landmarks : LandmarkSet
        The landmarks it was fitted from (kept with it; may be empty).
    report : dict, optional
        Accuracy figures to keep with it (RMSE, TRE ...); the field figures are added.
    field_spacing_um : float, optional
        Spacing of the rasterised TPS field (default: half the fixed voxel, coarsened to at most
        8 M points).
    overwrite : bool
        Replace a registration of the same name.
    current : bool
        Mark it as the one to use for its image pair when several join them.
    provenance : Provenance, optional
        How it was made (default: a ``register`` record).

    Returns
    -------
    Registration
        The stored record.

    Raises
    ------
    InvalidInputError
        Unknown images, a bad or taken ``name``, or units the edge cannot join.

    Examples
    --------
    >>> import numpy as np, bridge_xr as bx
    >>> from bridge_xr.testing import tiny_scene
    >>> scene = tiny_scene()
    >>> m = bx.register.fit("rigid", np.eye(3) * 100, np.eye(3) * 100 + 5.0)
    >>> lms = bx.register.landmark_set(np.eye(3) * 100, np.eye(3) * 100 + 5.0, fixed="mri", moving="micro")
    >>> add_registration(scene, m, fixed="mri", moving="micro", name="shift", landmarks=lms).model
    'rigid'
    """
    store = resolve_store(where)
    subject = read_subject(store)
    label = describe_store(store)
    check_new_registration(
        subject, fixed=fixed, moving=moving, name=name, overwrite=overwrite, where=label
    )
    images = (read_image(store, fixed), read_image(store, moving))
    report = dict(report or {})
    figures: dict[str, Any] = {}
    if isinstance(model, ThinPlateSpline):
        edge, figures = _tps_edge(store, model, name, images, field_spacing_um)
        report.update({k: v for k, v in figures.items() if k != "field_path"})
    elif isinstance(model, SliceStackModel):
        edge, figures = _slices_edge(store, model, name, images, field_spacing_um)
        report.update({k: v for k, v in figures.items() if k != "field_path"})
    elif isinstance(model, BSplineModel):
        edge, figures = _smooth_edge(store, model, name, images, field_spacing_um)
        report.update({k: v for k, v in figures.items() if k != "field_path"})
    else:
        edge = _linear_edge(model, um_factor(images[0]), um_factor(images[1]))
    edge = edge.with_io(
        CoordinateSystemRef(path=fixed, name=INTRINSIC),
        CoordinateSystemRef(path=moving, name=INTRINSIC),
    ).model_copy(update={"name": name})
    check_edge_units(edge, _intrinsic_of(images[0]), _intrinsic_of(images[1]))
    spacing = figures.get("field_spacing_um")
    rec = Registration(
        name=name,
        fixed=fixed,
        moving=moving,
        model=model.kind,
        kernel=model.kernel if isinstance(model, ThinPlateSpline) else None,
        smoothing=report.get("smoothing"),
        definition=model.describe(),
        landmarks=landmarks,
        field_path=figures.get("field_path"),
        field_spacing_um=(spacing,) * 3 if spacing else None,
        certified_max_error_um=figures.get("certified_max_error_um"),
        report=report,
        provenance=provenance
        or Provenance.now("register", inputs=(fixed, moving), model=model.kind),
    )
    _publish(store, rec, edge, current=current)
    return rec


def _publish(store: Any, rec: Registration, edge: Transform, *, current: bool) -> None:
    subject = read_subject(store)
    edges = [t for t in scene_transforms(store) if t.name != rec.name]
    edges.append(edge)
    regs = {**subject.registrations, rec.name: rec}
    marked = tuple(
        n
        for n in subject.current_registrations
        if n != rec.name and n in regs and not (current and _same_pair(regs[n], rec))
    )
    subject = subject.model_copy(
        update={
            "registrations": regs,
            "landmarks": {**subject.landmarks, rec.name: rec.landmarks},
            "current_registrations": (*marked, rec.name) if current else marked,
            "provenance": (*subject.provenance, rec.provenance),
        }
    )
    publish_subject(store, subject, edges, scene_systems(store))


def _same_pair(a: Registration, b: Registration) -> bool:
    return {a.fixed, a.moving} == {b.fixed, b.moving}


def set_current(where: StoreLike, name: str) -> Registration:
    """Mark registration ``name`` current for its image pair (unmarking any other of the pair).

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    name : str
        A stored registration.

    Returns
    -------
    Registration

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> scene = tiny_scene(registered=True)
    >>> set_current(scene, "micro_to_mri").name, scene.subject.current_registrations
    ('micro_to_mri', ('micro_to_mri',))
    """
    store = resolve_store(where)
    subject = read_subject(store)
    if name not in subject.registrations:
        known = ", ".join(sorted(subject.registrations)) or "none"
        raise InvalidInputError(
            f"no registration {name!r} in {describe_store(store)}; known: {known}"
        )
    rec = subject.registrations[name]
    marked = tuple(
        n
        for n in subject.current_registrations
        if n in subject.registrations and not _same_pair(subject.registrations[n], rec)
    )
    subject = subject.model_copy(update={"current_registrations": (*marked, name)})
    publish_subject(store, subject, scene_transforms(store), scene_systems(store))
    return rec
