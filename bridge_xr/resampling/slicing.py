"""The paper's preprocessing: reslice to the cranial-window plane, group z-slices to a thickness.

Both write a new image and a rigid registration edge between it and its source (named
``reslice:<out>`` / ``group:<out>``), so points and images map through them like any registration.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.downsample import _downsample
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import add_image, read_subject
from bridge_xr.model.grid import Grid
from bridge_xr.model.image import make_image, physical_extent
from bridge_xr.model.metadata import Acquisition, ImageMetadata, LandmarkSet, Provenance
from bridge_xr.model.pointmaps import LinearModel
from bridge_xr.model.units import conversion_factor
from bridge_xr.resampling.blockwise import resample_through
from bridge_xr.scene.edges import add_registration


def plane_frame(points_xyz_um: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit a plane to >= 3 points; returns ``(R, centroid, rms_off_plane_um)``.

    ``R``'s columns are the new x, y, z axes (z = plane normal pointing along +z, x = the old x
    projected into the plane), so ``p = centroid + R @ q`` maps resliced to original coordinates.
    """
    p = np.asarray(points_xyz_um, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 3:
        raise InvalidInputError(f"a plane needs at least 3 points (x, y, z); got {p.shape}")
    c = p.mean(axis=0)
    _, sv, vt = np.linalg.svd(p - c)
    if sv[1] < 1e-9 * max(sv[0], 1e-300):
        raise InvalidInputError("plane points are collinear; give points spread over the window")
    n = vt[2] if vt[2][2] >= 0 else -vt[2]
    ex = np.array([1.0, 0.0, 0.0]) - n[0] * n
    if np.linalg.norm(ex) < 1e-6:
        ex = np.array([0.0, 1.0, 0.0]) - n[1] * n
    ex /= np.linalg.norm(ex)
    ey = np.cross(n, ex)
    rms = float(np.sqrt(np.mean(((p - c) @ n) ** 2)))
    return np.stack([ex, ey, n], axis=1), c, rms


def reslice(
    where: StoreLike,
    *,
    image: str,
    plane_points_xyz_um: np.ndarray,
    image_out: str,
    spacing_um: tuple[float, float, float] | None = None,
    order: int = 1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Reslice ``image`` so that its z axis is the normal of the plane through the given points.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    image : str
        Image to reslice.
    plane_points_xyz_um : ndarray of shape (N >= 3, 3)
        Points on the plane (e.g. the cranial window), x, y, z µm (a point table's order).
    image_out : str
        Output image path (joined to ``image`` by an exact rigid edge).
    spacing_um : (z, y, x), optional
        Output voxel size (default: the image's).
    order : int
        Interpolation order.
    overwrite : bool
        Replace ``image_out``.

    Returns
    -------
    dict
        ``tilt_deg``, ``plane_rms_um`` ...

    Examples
    --------
    >>> import numpy as np
    >>> from bridge_xr.testing import tiny_scene
    >>> plane = np.array([[0, 0, 20.0], [80, 0, 20.0], [0, 80, 20.0]])  # x, y, z: flat, z = 20 µm
    >>> round(reslice(tiny_scene(), image="micro", plane_points_xyz_um=plane,
    ...               image_out="micro_flat")["tilt_deg"], 6)
    0.0
    """
    store = resolve_store(where)
    src = read_image(store, image)
    fac = conversion_factor(src.attrs["unit"], "micrometer")
    rot, centre, rms = plane_frame(plane_points_xyz_um)
    ext = physical_extent(src)
    corners = np.array([[x, y, z] for x in ext["x"] for y in ext["y"] for z in ext["z"]]) * fac
    q = (corners - centre) @ rot  # corners in the new frame (xyz)
    sp_zyx = spacing_um or (
        src.attrs["spacing"]["z"] * fac,
        min(src.attrs["spacing"]["y"], src.attrs["spacing"]["x"]) * fac,
        min(src.attrs["spacing"]["y"], src.attrs["spacing"]["x"]) * fac,
    )
    lo, hi = q.min(axis=0)[::-1], q.max(axis=0)[::-1]  # zyx
    shape = tuple(
        max(1, int(np.floor((h - lo_) / s))) for lo_, h, s in zip(lo, hi, sp_zyx, strict=True)
    )
    origin = tuple(float(lo_ + s / 2) for lo_, s in zip(lo, sp_zyx, strict=True))
    grid = Grid(shape, tuple(float(s) for s in sp_zyx), origin, "micrometer")  # type: ignore[arg-type]
    model = LinearModel("rigid", rot, centre)  # resliced (xyz µm) -> original (xyz µm)
    out = resample_through(store, moving=image, models=[(model, True)], grid=grid, order=order)
    meta = _derived(store, image, image_out, "reslice", plane_rms_um=rms, normal=rot[:, 2].tolist())
    add_image(store, out, meta, overwrite=overwrite)
    report = {
        "model": "rigid",
        "n_landmarks": 0,
        "rmse_um": 0.0,
        "plane_rms_um": rms,
        "normal_xyz": rot[:, 2].tolist(),
        "tilt_deg": float(np.degrees(np.arccos(rot[2, 2]))),
    }
    _link(store, image_out, image, "reslice", model, report)
    return report


def group_slices(
    where: StoreLike, *, image: str, thickness_um: float, image_out: str, overwrite: bool = False
) -> dict[str, Any]:
    """Average consecutive z-slices into slabs of (about) ``thickness_um``, lazily.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    image : str
        Image whose z slices to group.
    thickness_um : float
        Target slab thickness.
    image_out : str
        Output image path (joined to ``image`` by an exact edge).
    overwrite : bool
        Replace ``image_out``.

    Returns
    -------
    dict
        ``slices_per_group``, ``thickness_um``.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> group_slices(tiny_scene(), image="micro", thickness_um=10, image_out="micro_10um")["slices_per_group"]
    2
    """
    store = resolve_store(where)
    src = read_image(store, image)
    if "z" not in src.dims:
        raise InvalidInputError(f"{image!r} has no z axis to group")
    fac = conversion_factor(src.attrs["unit"], "micrometer")
    dz = src.attrs["spacing"]["z"] * fac
    n = int(round(thickness_um / dz))
    if n < 1:
        raise InvalidInputError(f"thickness {thickness_um} µm is below the z step {dz:g} µm")
    if n > src.sizes["z"]:
        raise InvalidInputError(
            f"thickness {thickness_um} µm exceeds the stack ({src.sizes['z']} slices of {dz:g} µm)"
        )
    data = _downsample(src.data, tuple(str(d) for d in src.dims), {"z": n}, "mean")
    spacing = dict(src.attrs["spacing"])
    origin = dict(src.attrs["origin"])
    origin["z"] = origin["z"] + (n - 1) / 2 * spacing["z"]
    spacing["z"] = spacing["z"] * n
    names = [str(v) for v in src.c.values] if "c" in src.dims else None
    out = make_image(
        data,
        dims=tuple(str(d) for d in src.dims),
        spacing=spacing,
        origin=origin,
        unit=src.attrs["unit"],
        channel_names=names,
    )
    meta = _derived(
        store, image, image_out, "group-slices", slices_per_group=n, thickness_um=n * dz
    )
    add_image(store, out, meta, overwrite=overwrite)
    ident = LinearModel.identity()
    report = {
        "model": "rigid",
        "n_landmarks": 0,
        "rmse_um": 0.0,
        "slices_per_group": n,
        "thickness_um": n * dz,
        "requested_thickness_um": thickness_um,
    }
    _link(store, image_out, image, "group", ident, report)
    return report


def _link(
    store: Any, image_out: str, image: str, kind: str, model: LinearModel, report: dict[str, Any]
) -> None:
    """Store the rigid edge image_out -> image so both stay connected in the registration graph."""
    name = f"{kind}.{image_out.replace('/', '.')}"
    add_registration(
        store,
        model,
        fixed=image_out,
        moving=image,
        name=name,
        landmarks=LandmarkSet(fixed=image_out, moving=image, landmarks=()),
        report=report,
        overwrite=True,
        provenance=Provenance.now(kind, inputs=(image_out, image), model="rigid"),
    )


def _derived(
    store: Any, image: str, image_out: str, operation: str, **params: Any
) -> ImageMetadata:
    src = read_subject(store).images.get(image)
    return ImageMetadata(
        path=image_out,
        modality=src.modality if src else "derived",
        session=src.session if src else None,
        channel_names=src.channel_names if src else None,
        source=f"{operation} of {image}",
        acquisition=src.acquisition if src else Acquisition(),
        provenance=Provenance.now(operation, inputs=(image,), **params),
    )
