"""Fit a landmark registration and store it in a subject: :func:`fit`, :func:`register`.

The stored form (an exact record plus an OME-Zarr 0.6 scene edge) is written by
:func:`bridge_xr.scene.edges.add_registration`; this module adds what needs landmarks: the fit,
its accuracy report and the bootstrap TRE map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bridge_xr._constants import tre_map_path
from bridge_xr.io._store import StoreLike, describe_store, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import add_image, read_subject
from bridge_xr.model.image import make_image, physical_extent, um_factor
from bridge_xr.model.metadata import ImageMetadata, Landmark, LandmarkSet, Provenance, Registration
from bridge_xr.model.pointmaps import Kernel, Model, ModelName
from bridge_xr.model.pointmaps import fit as _fit_points
from bridge_xr.register.accuracy import bootstrap_tre_map, registration_report
from bridge_xr.register.landmark_formats import validate
from bridge_xr.register.landmarks import arrays
from bridge_xr.scene.edges import add_registration, check_new_registration

__all__ = ["fit", "landmark_set", "register"]


def fit(
    model: ModelName,
    fixed: Any,
    moving: Any | None = None,
    *,
    kernel: Kernel = "r",
    smoothing: float = 0.0,
) -> Model:
    """Fit a map from ``fixed`` to ``moving`` landmarks (µm, x, y, z, the landmark CSV order).

    Parameters
    ----------
    model : {'rigid', 'similarity', 'affine', 'tps'}
        The model to fit.
    fixed : ndarray of shape (N, 3), or a landmark table
        Fixed points; or a landmark frame (``fixed_x ... moving_z``) with ``moving`` omitted.
    moving : ndarray of shape (N, 3), optional
        Moving points, paired with ``fixed`` row by row.
    kernel : {'r', 'r2logr'}
        TPS kernel.
    smoothing : float
        TPS regularisation (0: interpolate the landmarks exactly).

    Returns
    -------
    LinearModel or ThinPlateSpline
        Maps fixed points to moving points (the resampling direction).

    Raises
    ------
    EstimationError
        Too few, duplicate or degenerate landmarks.

    Examples
    --------
    >>> import numpy as np
    >>> fixed = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100.0]])
    >>> m = fit("affine", fixed, fixed + [10.0, 0, 0])
    >>> m.forward_points(np.zeros((1, 3))).round(6).tolist()[0][0]
    10.0
    """
    if moving is None:
        if not isinstance(fixed, pd.DataFrame):
            msg = "`moving` is needed unless `fixed` is a landmark table"
            raise TypeError(msg)
        _, f_pts, m_pts = arrays(validate(fixed, source="landmarks"))
        return _fit_points(model, f_pts, m_pts, kernel=kernel, smoothing=smoothing)
    return _fit_points(
        model,
        np.asarray(fixed, float),
        np.asarray(moving, float),
        kernel=kernel,
        smoothing=smoothing,
    )


def landmark_set(
    fixed_xyz_um: Any,
    moving_xyz_um: Any,
    *,
    fixed: str,
    moving: str,
    names: Sequence[str] | None = None,
) -> LandmarkSet:
    """Paired landmarks (µm, x, y, z) between two images, as stored with a registration.

    Examples
    --------
    >>> import numpy as np
    >>> lms = landmark_set(np.zeros((1, 3)), np.ones((1, 3)), fixed="mri", moving="micro")
    >>> lms.landmarks[0].name, lms.landmarks[0].moving
    ('L1', (1.0, 1.0, 1.0))

    Parameters
    ----------
    fixed_xyz_um, moving_xyz_um : array of shape (N, 3)
        Paired points, x, y, z µm.
    fixed, moving : str
        Image paths.
    names : sequence of str, optional
        Landmark names (default ``L1``, ``L2`` ...).

    Returns
    -------
    LandmarkSet
    """
    f = np.asarray(fixed_xyz_um, dtype=np.float64).reshape(-1, 3)
    m = np.asarray(moving_xyz_um, dtype=np.float64).reshape(-1, 3)
    labels = list(names) if names is not None else [f"L{i + 1}" for i in range(len(f))]
    return LandmarkSet(
        moving=moving,
        fixed=fixed,
        landmarks=tuple(
            Landmark(name=n, fixed=tuple(a), moving=tuple(b))
            for n, a, b in zip(labels, f.tolist(), m.tolist(), strict=True)
        ),
    )


def register(
    where: StoreLike,
    *,
    fixed: str,
    moving: str,
    landmarks: pd.DataFrame,
    model: ModelName,
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

    Parameters
    ----------
    where : str, path, zarr store or Scene
        The subject store.
    fixed, moving : str
        Image paths; the model maps ``fixed`` points to ``moving`` points.
    landmarks : DataFrame
        Columns ``name, fixed_x, fixed_y, fixed_z, moving_x, moving_y, moving_z`` (µm, each
        image's intrinsic space).
    model : {'rigid', 'similarity', 'affine', 'tps'}
        The model to fit.
    name : str
        Registration name.
    kernel, smoothing
        TPS kernel and regularisation.
    field_spacing_um : float, optional
        Spacing of the rasterised TPS field.
    overwrite : bool
        Replace a registration of the same name.
    precomputed : (model, report), optional
        Store this model and report instead of fitting (reslicing, slice grouping).
    tre_map : bool
        Also write a bootstrap TRE map over the fixed image (``qc/<name>/tre_map``).
    fle_um : float, optional
        Fiducial localisation error for the TRE map (default: LOO TRE RMS / sqrt 2).
    current : bool
        Mark it as the one to use for its image pair when several join them.

    Returns
    -------
    (Registration, dict)
        The stored record and its accuracy report (RMSE, LOO TRE, folding ...).

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene, tiny_landmarks
    >>> scene = tiny_scene()
    >>> rec, report = register(scene, fixed="mri", moving="micro", landmarks=tiny_landmarks(),
    ...                        model="rigid", name="micro_to_mri")
    >>> rec.model, report["rmse_um"] < 1e-6
    ('rigid', True)
    """
    store = resolve_store(where)
    check_new_registration(
        read_subject(store),
        fixed=fixed,
        moving=moving,
        name=name,
        overwrite=overwrite,
        where=describe_store(store),
    )
    names, f_pts, m_pts = arrays(validate(landmarks, source="landmarks"))
    if precomputed is not None:
        fitted, report = precomputed
    else:
        fitted, report = registration_report(
            model, f_pts, m_pts, kernel=kernel, smoothing=smoothing, names=names
        )
    if tre_map and len(names):
        fimg = read_image(store, fixed)
        report["tre_map"] = _write_tre_map(
            store, name, fimg, um_factor(fimg), model, f_pts, m_pts, kernel,
            float(report.get("smoothing") or 0.0), fle_um, report,
        )  # fmt: skip
    rec = add_registration(
        store,
        fitted,
        fixed=fixed,
        moving=moving,
        name=name,
        landmarks=landmark_set(f_pts, m_pts, fixed=fixed, moving=moving, names=names),
        report=report,
        field_spacing_um=field_spacing_um,
        overwrite=overwrite,
        current=current,
        provenance=Provenance.now(
            "register",
            inputs=(fixed, moving),
            model=model,
            kernel=kernel,
            smoothing=smoothing,
            n_landmarks=len(names),
        ),
    )
    return rec, dict(rec.report)


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
    path = tre_map_path(name)
    meta = ImageMetadata(
        path=path,
        modality="derived",
        source=f"bootstrap TRE of {name} (µm)",
        provenance=Provenance.now("bootstrap TRE map", inputs=(name,), fle_rms_um=fle, n_boot=30),
    )
    add_image(store, img, meta, overwrite=True, shards=False)
    return {
        "path": path,
        "fle_rms_um": fle,
        "median_um": float(np.median(tre)),
        "max_um": float(tre.max()),
    }
