"""Registrations as scene edges, and mapping points through the graph of registrations.

A registration of ``moving`` onto ``fixed`` is kept twice:

* exactly, under ``bridge_xr.registrations[name]`` (model, landmarks, TPS centres and weights,
  direction fixed -> moving, µm, x/y/z) - this is what point mapping uses;
* as one OME-Zarr 0.6 scene edge from ``fixed``'s ``intrinsic`` system to ``moving``'s (a forward
  point map in the resampling direction): a ``bijection`` of affines for linear models, or a
  ``sequence`` with a rasterised ``displacements`` field for the TPS, whose certified maximum
  deviation from the exact TPS is recorded.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from bridge_xr._constants import INTRINSIC
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, describe_store, resolve_store
from bridge_xr.io.ome_zarr import intrinsic_system, read_image, write_multiscale
from bridge_xr.io.scene import publish_subject, read_subject, scene_systems, scene_transforms
from bridge_xr.model.coords import check_edge_units
from bridge_xr.model.image import physical_extent, spatial_dims
from bridge_xr.model.metadata import Landmark, LandmarkSet, Provenance, Registration
from bridge_xr.model.transforms import (
    Affine,
    Bijection,
    CoordinateSystemRef,
    Displacements,
    Scale,
    Sequence,
    Transform,
)
from bridge_xr.model.units import conversion_factor
from bridge_xr.register.errors import registration_report
from bridge_xr.register.graph import Via, resolve_chain
from bridge_xr.register.landmarks import arrays, validate
from bridge_xr.register.models import Kernel, LinearModel, Model, ThinPlateSpline

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
P4 = np.eye(4)
P4[:3, :3] = np.eye(3)[::-1]


def _intrinsic_of(img: Any) -> Any:
    dims = tuple(str(d) for d in img.dims)
    return intrinsic_system(spatial_dims(dims), img.attrs["unit"])


def model_from_record(rec: Registration) -> Model:
    """The exact model of a stored registration."""
    d = rec.definition
    if rec.model == "tps":
        return ThinPlateSpline.from_description(d)
    return LinearModel(rec.model, np.asarray(d["matrix"]), np.asarray(d["translation"]))


def _um_factor(unit: str) -> float:
    return conversion_factor(unit, "micrometer")


def _wrap(parts: list[Transform]) -> Transform:
    return parts[0] if len(parts) == 1 else Sequence(transformations=tuple(parts))


def _linear_edge(model: LinearModel, f_fixed: float, f_moving: float) -> Transform:
    zyx = P4 @ model.homogeneous() @ P4
    parts: list[Transform] = []
    if f_fixed != 1.0:
        parts.append(Scale(scale=(f_fixed,) * 3))
    parts.append(Affine.from_matrix(zyx))
    if f_moving != 1.0:
        parts.append(Scale(scale=(1.0 / f_moving,) * 3))
    fwd = _wrap(parts)
    return Bijection(forward=fwd, inverse=fwd.inverse())  # type: ignore[call-arg]


def default_field_spacing(
    extent: dict[str, tuple[float, float]], voxel_um: float, *, max_points: float = 8e6
) -> float:
    """Half the fixed voxel size, coarsened until the field has at most ``max_points`` points."""
    spacing = voxel_um / 2
    span = np.array([hi - lo for lo, hi in extent.values()])
    while np.prod(np.ceil(span / spacing) + 1) > max_points:
        spacing *= 1.25
    return float(spacing)


def rasterise_tps_inverse(
    tps: ThinPlateSpline,
    extent_zyx_um: dict[str, tuple[float, float]],
    spacing_um: float,
    *,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Inverse (moving -> fixed) displacements on a grid over the moving image, by Newton inversion.

    Grid points where a folded TPS has no inverse take the nearest valid value and are counted.
    Returns ``(field, origin_zyx, max_error_um, n_without_inverse)``; the error is the largest
    ``|TPS(field-mapped probe) - probe|`` at random probes away from folds.
    """
    from scipy.ndimage import distance_transform_edt, map_coordinates

    lo = np.array([extent_zyx_um[d][0] for d in "zyx"])
    hi = np.array([extent_zyx_um[d][1] for d in "zyx"])
    shape = np.maximum(2, np.ceil((hi - lo) / spacing_um).astype(int) + 1)
    axes = [lo[i] + np.arange(shape[i]) * spacing_um for i in range(3)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    q = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)
    p = tps.inverse_points(q[:, ::-1], strict=False)[:, ::-1]
    disp = (p - q).T.reshape(3, *shape)
    bad = ~np.isfinite(disp).all(axis=0)
    n_bad = int(bad.sum())
    if n_bad:
        if n_bad == bad.size:
            raise InvalidInputError("the TPS has no inverse anywhere on the moving image")
        _, idx = distance_transform_edt(bad, return_indices=True)
        disp = disp[(slice(None), *idx)]
    field = disp.astype(np.float32)
    rng = np.random.default_rng(seed)
    probe = lo + rng.uniform(0, 1, size=(4000, 3)) * (shape - 1) * spacing_um
    pidx = ((probe - lo) / spacing_um).T
    near_bad = map_coordinates(bad.astype(np.float32), pidx, order=1) > 0
    inv = probe + np.stack(
        [map_coordinates(c.astype(np.float64), pidx, order=1) for c in field], axis=1
    )
    back = tps.forward_points(inv[:, ::-1])[:, ::-1]
    err = np.linalg.norm(back - probe, axis=1)[~near_bad]
    return field, lo, float(err.max(initial=0.0)), n_bad


def rasterise_tps(
    tps: ThinPlateSpline,
    extent_zyx_um: dict[str, tuple[float, float]],
    spacing_um: float,
    *,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact TPS displacements (zyx µm, float32) on a grid covering ``extent``; certified error.

    Returns ``(field (3, nz, ny, nx), origin_zyx, max_error_um)``; the error is the largest
    deviation between trilinear interpolation of the stored field and the exact TPS at random
    points plus points around every landmark.
    """
    from scipy.ndimage import map_coordinates

    lo = np.array([extent_zyx_um[d][0] for d in "zyx"])
    hi = np.array([extent_zyx_um[d][1] for d in "zyx"])
    shape = np.maximum(2, np.ceil((hi - lo) / spacing_um).astype(int) + 1)
    axes = [lo[i] + np.arange(shape[i]) * spacing_um for i in range(3)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    pts_zyx = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)
    moved = tps.forward_points(pts_zyx[:, ::-1])[:, ::-1]
    field = (moved - pts_zyx).T.reshape(3, *shape).astype(np.float32)
    rng = np.random.default_rng(seed)
    span = (shape - 1) * spacing_um
    probe = lo + rng.uniform(0, 1, size=(4000, 3)) * span
    near = tps.centres[:, ::-1][:, None, :] + rng.normal(
        0, spacing_um, size=(len(tps.centres), 20, 3)
    )
    probe = np.vstack([probe, np.clip(near.reshape(-1, 3), lo, lo + span)])
    idx = ((probe - lo) / spacing_um).T
    interp = np.stack([map_coordinates(c.astype(np.float64), idx, order=1) for c in field], axis=1)
    exact = tps.forward_points(probe[:, ::-1])[:, ::-1] - probe
    err = float(np.linalg.norm(interp - exact, axis=1).max())
    return field, lo, err


def register(
    where: StoreLike,
    *,
    fixed: str,
    moving: str,
    landmarks: pd.DataFrame,
    model: str,
    name: str,
    kernel: Kernel = "r",
    smoothing: float = 0.0,
    field_spacing_um: float | None = None,
    overwrite: bool = False,
    precomputed: tuple[Model, dict[str, Any]] | None = None,
    tre_map: bool = False,
    fle_um: float | None = None,
    current: bool = False,
) -> tuple[Registration, dict[str, Any]]:
    """Fit ``model`` from landmarks and store it as a scene edge plus its exact definition.

    ``precomputed`` stores a given ``(model, report)`` instead (reslicing, slice grouping).
    ``current`` marks it as the one to use for its image pair when several join them.
    """
    store = resolve_store(where)
    subject = read_subject(store)
    for p in (fixed, moving):
        if p not in subject.images:
            raise InvalidInputError(
                f"no image {p!r} in {describe_store(store)}; `bridge info` lists them"
            )
    if not _NAME.match(name):
        raise InvalidInputError(
            f"registration name {name!r} may use letters, digits, '_', '-', '.'"
        )
    if name in subject.registrations and not overwrite:
        raise InvalidInputError(
            f"registration {name!r} exists; choose another --name or pass --overwrite"
        )
    names, f_pts, m_pts = arrays(validate(landmarks, source="landmarks"))
    if precomputed is not None:
        fitted, report = precomputed
    else:
        fitted, report = registration_report(
            model, f_pts, m_pts, kernel=kernel, smoothing=smoothing, names=names
        )
    fimg, mimg = read_image(store, fixed), read_image(store, moving)
    f_fac, m_fac = _um_factor(fimg.attrs["unit"]), _um_factor(mimg.attrs["unit"])
    field_path = None
    cert = None
    if isinstance(fitted, ThinPlateSpline):
        ext = {d: (lo * f_fac, hi * f_fac) for d, (lo, hi) in physical_extent(fimg).items()}
        if field_spacing_um is None:
            field_spacing_um = default_field_spacing(
                ext, min(fimg.attrs["spacing"].values()) * f_fac
            )
        field, origin, cert = rasterise_tps(fitted, ext, field_spacing_um)
        field_path = f"coordinateTransformations/{name}"
        write_multiscale(
            store,
            field_path,
            field,
            dims="czyx",
            spacing=dict.fromkeys("zyx", field_spacing_um),
            origin=dict(zip("zyx", origin, strict=True)),
            unit="micrometer",
            kind="displacements",
            levels=1,
            shards=False,
            compressor="zstd",
        )
        parts: list[Transform] = []
        if f_fac != 1.0:
            parts.append(Scale(scale=(f_fac,) * 3))
        parts.append(Displacements(path=field_path, interpolation="linear"))
        if m_fac != 1.0:
            parts.append(Scale(scale=(1.0 / m_fac,) * 3))
        fwd_edge = _wrap(parts)
        m_ext = {d: (lo * m_fac, hi * m_fac) for d, (lo, hi) in physical_extent(mimg).items()}
        inv_spacing = max(
            field_spacing_um, default_field_spacing(m_ext, field_spacing_um, max_points=1e6)
        )
        inv_field, inv_origin, inv_cert, n_folded = rasterise_tps_inverse(
            fitted, m_ext, inv_spacing
        )
        inv_path = f"coordinateTransformations/{name}_inverse"
        write_multiscale(
            store,
            inv_path,
            inv_field,
            dims="czyx",
            spacing=dict.fromkeys("zyx", inv_spacing),
            origin=dict(zip("zyx", inv_origin, strict=True)),
            unit="micrometer",
            kind="displacements",
            levels=1,
            shards=False,
            compressor="zstd",
        )
        inv_parts: list[Transform] = []
        if m_fac != 1.0:
            inv_parts.append(Scale(scale=(m_fac,) * 3))
        inv_parts.append(Displacements(path=inv_path, interpolation="linear"))
        if f_fac != 1.0:
            inv_parts.append(Scale(scale=(1.0 / f_fac,) * 3))
        edge: Transform = Bijection(forward=fwd_edge, inverse=_wrap(inv_parts))  # type: ignore[call-arg]
        report["field_spacing_um"] = field_spacing_um
        report["certified_max_error_um"] = cert
        report["inverse_field"] = {
            "path": inv_path,
            "spacing_um": inv_spacing,
            "max_error_um": inv_cert,
            "points_without_inverse": n_folded,
        }
    else:
        assert isinstance(fitted, LinearModel)  # noqa: S101 - fit() returns one of the two
        edge = _linear_edge(fitted, f_fac, m_fac)
    edge = edge.with_io(
        CoordinateSystemRef(path=fixed, name=INTRINSIC),
        CoordinateSystemRef(path=moving, name=INTRINSIC),
    )
    edge = edge.model_copy(update={"name": name})
    fsys = _intrinsic_of(fimg)
    msys = _intrinsic_of(mimg)
    check_edge_units(edge, fsys, msys)
    lset = LandmarkSet(
        moving=moving,
        fixed=fixed,
        landmarks=tuple(
            Landmark(name=n, fixed=tuple(f), moving=tuple(m))  # type: ignore[arg-type]
            for n, f, m in zip(names, f_pts.tolist(), m_pts.tolist(), strict=True)
        ),
    )
    rec = Registration(
        name=name,
        fixed=fixed,
        moving=moving,
        model=model,  # type: ignore[arg-type]
        kernel=kernel if model == "tps" else None,
        smoothing=report.get("smoothing"),
        definition=fitted.describe(),
        landmarks=lset,
        field_path=field_path,
        field_spacing_um=(field_spacing_um,) * 3 if field_path else None,
        certified_max_error_um=cert,
        report=report,
        provenance=Provenance.now(
            "register",
            inputs=(fixed, moving),
            model=model,
            kernel=kernel,
            smoothing=smoothing,
            n_landmarks=len(names),
        ),
    )
    if tre_map and len(names):
        report["tre_map"] = _write_tre_map(
            store,
            name,
            fimg,
            f_fac,
            model,
            f_pts,
            m_pts,
            kernel,
            float(report.get("smoothing") or 0.0),
            fle_um,
            report,
        )
    subject = read_subject(store)  # the TRE map (if any) added an image
    edges = [t for t in scene_transforms(store) if t.name != name]
    edges.append(edge)
    regs = dict(subject.registrations)
    regs[name] = rec
    lms = dict(subject.landmarks)
    lms[name] = lset
    marked = tuple(
        n
        for n in subject.current_registrations
        if n != name and n in regs and not (current and _same_pair(regs[n], rec))
    )
    subject = subject.model_copy(
        update={
            "registrations": regs,
            "landmarks": lms,
            "current_registrations": (*marked, name) if current else marked,
            "provenance": (*subject.provenance, rec.provenance),
        }
    )
    publish_subject(store, subject, edges, scene_systems(store))
    return rec, report


def _same_pair(a: Registration, b: Registration) -> bool:
    return {a.fixed, a.moving} == {b.fixed, b.moving}


def set_current(where: StoreLike, name: str) -> Registration:
    """Mark registration ``name`` current for its image pair (unmarking any other of the pair)."""
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


def _write_tre_map(
    store: Any,
    name: str,
    fimg: Any,
    f_fac: float,
    model: str,
    f_pts: np.ndarray,
    m_pts: np.ndarray,
    kernel: Kernel,
    smoothing: float,
    fle_um: float | None,
    report: dict[str, Any],
) -> dict[str, Any]:
    """Bootstrap TRE map on a grid over the fixed image, written as ``qc/<name>/tre_map``."""
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata
    from bridge_xr.register.errors import bootstrap_tre_map

    fle = fle_um if fle_um is not None else float(report["loo_tre_rms_um"]) / np.sqrt(2.0)
    ext = physical_extent(fimg)
    shape = tuple(int(min(fimg.sizes[d], 32)) for d in "zyx")
    sp = tuple((ext[d][1] - ext[d][0]) / n for d, n in zip("zyx", shape, strict=True))
    org = tuple(ext[d][0] + s / 2 for d, s in zip("zyx", sp, strict=True))
    axes = [(o + np.arange(n) * s) * f_fac for o, n, s in zip(org, shape, sp, strict=True)]
    gz, gy, gx = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)
    tre = bootstrap_tre_map(
        model, f_pts, m_pts, pts, fle_rms_um=fle, kernel=kernel, smoothing=smoothing
    )
    img = make_image(
        tre.reshape(shape).astype(np.float32),
        dims="zyx",
        spacing=sp,
        origin=org,
        unit=fimg.attrs["unit"],
    )
    path = f"qc/{name}/tre_map"
    meta = ImageMetadata(
        path=path,
        modality="derived",
        source=f"bootstrap TRE of {name} (µm)",
        provenance=Provenance.now("bootstrap TRE map", inputs=(name,), fle_rms_um=fle, n_boot=30),
    )
    from bridge_xr.io.scene import add_image

    add_image(store, img, meta, overwrite=True, shards=False)
    return {
        "path": path,
        "fle_rms_um": fle,
        "median_um": float(np.median(tre)),
        "max_um": float(tre.max()),
    }


def path_between(
    where: StoreLike, src: str, dst: str, *, via: Via = None
) -> list[tuple[Registration, bool]]:
    """Registrations leading from image ``src`` to ``dst``: ``(record, forward?)`` per hop.

    Ambiguous chains (two registrations of one pair, two routes) need ``via`` (registration
    names in chain order) or a registration marked current; see :mod:`bridge_xr.register.graph`.
    """
    return resolve_chain(read_subject(resolve_store(where)), src, dst, via=via)


def map_points(
    where: StoreLike,
    points_xyz_um: np.ndarray,
    src: str,
    dst: str,
    *,
    strict: bool = True,
    via: Via = None,
) -> np.ndarray:
    """Map points (x, y, z µm, ``src`` intrinsic) into ``dst``'s intrinsic space, exactly.

    Going against a TPS (moving -> fixed) needs its inverse; where the warp folds there is none:
    such points raise, or become NaN with ``strict=False``.
    """
    hops = [
        (model_from_record(rec), forward) for rec, forward in path_between(where, src, dst, via=via)
    ]
    return apply_hops(hops, np.asarray(points_xyz_um, dtype=np.float64), strict=strict)


def apply_hops(
    hops: list[tuple[Model, bool]], points_xyz_um: np.ndarray, *, strict: bool = False
) -> np.ndarray:
    """Points (x, y, z µm) through a chain of models; ``forward`` = fixed -> moving per hop.

    Against a TPS (moving -> fixed) points without an inverse raise, or become NaN when not
    ``strict``.
    """
    out = points_xyz_um
    for model, forward in hops:
        if forward:
            out = model.forward_points(out)
        elif isinstance(model, ThinPlateSpline):
            out = model.inverse_points(out, strict=strict)
        else:
            out = model.inverse_points(out)
    return out
