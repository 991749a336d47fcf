"""Elastic intensity registration of two MRIs (in vivo onto ex vivo): affine + cubic B-spline.

The paper registers in vivo onto ex vivo MRI elastically in 3D Slicer. With
:func:`register_intensity` it is a SimpleITK registration (Mattes mutual information): a start
from landmarks (an affine fit) or from the images' centres of mass, an affine stage, then a
cubic B-spline over a ``mesh``³ control lattice (L-BFGS-B). The result is stored exactly as a
:class:`~bridge_xr.model.bspline.BSplineModel` (affine + inline lattice coefficients, checked
against SimpleITK's own transform before it is stored), so points, resampling and densities
follow it in any chain like a landmark registration. ``check_landmarks`` (independent pairs, not
used by the fit) give the registration's error figure, which chains accumulate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from bridge_xr.errors import EstimationError, InvalidInputError
from bridge_xr.io._store import StoreLike, describe_store, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject
from bridge_xr.model.bspline import BSplineModel
from bridge_xr.model.image import um_factor
from bridge_xr.model.metadata import LandmarkSet, Provenance, Registration
from bridge_xr.model.pointmaps import LinearModel, fit
from bridge_xr.register.landmark_formats import validate
from bridge_xr.register.landmarks import arrays
from bridge_xr.register.refine import _bspline_stage, _mi_registration
from bridge_xr.register.registration import landmark_set
from bridge_xr.scene.edges import add_registration, check_new_registration

__all__ = ["register_intensity"]


def _to_sitk(img: Any, which: str, path: str) -> sitk.Image:
    if set(img.dims) != {"z", "y", "x"}:
        raise InvalidInputError(
            f"{which} image {path!r} has axes {img.dims}; intensity registration needs one 3D "
            "image (z, y, x)"
        )
    f = um_factor(img)
    out = sitk.GetImageFromArray(np.asarray(img.values, dtype=np.float32))
    out.SetSpacing(tuple(float(img.attrs["spacing"][d] * f) for d in "xyz"))
    out.SetOrigin(tuple(float(img.attrs["origin"][d] * f) for d in "xyz"))
    return out


def _as_sitk_affine(model: LinearModel) -> sitk.AffineTransform:
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(tuple(float(v) for v in model.matrix.ravel()))
    tx.SetTranslation(tuple(float(v) for v in model.translation))
    return tx


def _linear_of(tx: sitk.Transform) -> LinearModel:
    """The exact linear model of a SimpleITK linear transform (from 4 mapped points)."""
    pts = np.array([[0, 0, 0], [1e3, 0, 0], [0, 1e3, 0], [0, 0, 1e3]], dtype=np.float64)
    moved = np.array([tx.TransformPoint(tuple(float(v) for v in p)) for p in pts])
    model = fit("affine", pts, moved)
    assert isinstance(model, LinearModel)
    return model


def _affine_stage(
    fixed: sitk.Image, moving: sitk.Image, init: LinearModel, seed: int
) -> LinearModel:
    reg = _mi_registration(seed)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=200, gradientMagnitudeTolerance=1e-8
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1, 0])
    tx = _as_sitk_affine(init)
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(fixed, moving)
    return _linear_of(tx)


def register_intensity(
    where: StoreLike,
    *,
    fixed: str,
    moving: str,
    name: str = "intensity",
    landmarks: pd.DataFrame | None = None,
    check_landmarks: pd.DataFrame | None = None,
    mesh: int = 6,
    iterations: int = 100,
    affine: bool = True,
    seed: int = 0,
    field_spacing_um: float | None = None,
    overwrite: bool = False,
    current: bool = False,
) -> tuple[Registration, dict[str, Any]]:
    """Register ``moving`` onto ``fixed`` by Mattes mutual information: affine, then B-spline.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    fixed, moving : str
        3D images (e.g. the ex vivo MRI, fixed, and an in vivo MRI).
    name : str
        Registration name.
    landmarks : DataFrame, optional
        Canonical landmarks for the start (affine fit); default: the centres of mass.
    check_landmarks : DataFrame, optional
        Independent landmark pairs to measure the result (``tre_rms_um``; chains use it).
    mesh : int
        Control lattice cells per axis over the fixed image.
    iterations : int
        L-BFGS-B iterations of the B-spline stage.
    affine : bool
        Optimise an affine before the B-spline (else the start is kept as it is).
    seed : int
        Seeds the metric's random sampling (reproducible results).
    field_spacing_um : float, optional
        Spacing of the stored displacement fields (the scene edge).
    overwrite, current : bool
        As for :func:`bridge_xr.register.register`.

    Returns
    -------
    (Registration, dict)
        The stored record and its report (metric, lattice, the check landmarks' errors).

    Examples
    --------
    >>> from bridge_xr.testing.exvivo import mri_pair
    >>> pair = mri_pair(n=16)
    >>> rec, rep = register_intensity(pair.scene, fixed="exvivo_mri/T2w",
    ...                               moving="invivo_mri/d060/T2w", mesh=2, iterations=5)
    >>> rec.model, rep["lattice_nodes"]
    ('bspline', [5, 5, 5])
    """
    store = resolve_store(where)
    check_new_registration(read_subject(store), fixed=fixed, moving=moving, name=name,
                           overwrite=overwrite, where=describe_store(store))  # fmt: skip
    if mesh < 1 or iterations < 1:
        raise InvalidInputError("`mesh` and `iterations` must be at least 1")
    fimg, mimg = read_image(store, fixed), read_image(store, moving)
    fs, ms = _to_sitk(fimg, "fixed", fixed), _to_sitk(mimg, "moving", moving)
    names: list[str] = []
    f_pts = m_pts = np.zeros((0, 3))
    if landmarks is not None:
        names, f_pts, m_pts = arrays(validate(landmarks, source="landmarks"))
        init = fit("affine", f_pts, m_pts)
        assert isinstance(init, LinearModel)
        start = "landmarks (affine fit)"
    else:
        c = sitk.CenteredTransformInitializer(
            fs, ms, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
        init = _linear_of(c)
        start = "centres of mass"
    lin = _affine_stage(fs, ms, init, seed) if affine else init
    initial = _as_sitk_affine(lin)
    composite: Any = _bspline_stage(fs, ms, initial, mesh=mesh, iterations=iterations, seed=seed)
    bs = composite.GetNthTransform(1).Downcast() if composite.GetNumberOfTransforms() > 1 else None
    if bs is None:  # pragma: no cover - _bspline_stage always adds the B-spline
        raise EstimationError("the B-spline stage returned no B-spline")
    coef = bs.GetCoefficientImages()
    lattice = coef[0]
    if not np.allclose(lattice.GetDirection(), np.eye(3).ravel()):  # pragma: no cover
        raise EstimationError("the B-spline lattice is not axis-aligned")
    model = BSplineModel(
        lin.matrix, lin.translation, np.stack([sitk.GetArrayFromImage(c) for c in coef]),
        np.array(lattice.GetOrigin()), np.array(lattice.GetSpacing()),
    )  # fmt: skip
    # the stored model must be SimpleITK's transform, exactly
    rng = np.random.default_rng(seed)
    lo = np.array(fs.GetOrigin())
    hi = lo + (np.array(fs.GetSize()) - 1) * np.array(fs.GetSpacing())
    probe = lo + rng.uniform(size=(500, 3)) * (hi - lo)
    ref = np.array([composite.TransformPoint(tuple(float(v) for v in p)) for p in probe])
    dev = float(np.abs(model.forward_points(probe) - ref).max())
    if dev > 1e-6:  # pragma: no cover - a convention error, never a user's
        raise EstimationError(f"the stored B-spline differs from SimpleITK's by {dev:.3g} µm")
    reg = _mi_registration(seed)
    reg.SetInitialTransform(composite)
    report: dict[str, Any] = {
        "model": "bspline",
        "start": start,
        "affine_stage": affine,
        "mesh": mesh,
        "lattice_nodes": list(lattice.GetSize()),
        "iterations": iterations,
        "final_metric": float(reg.MetricEvaluate(fs, ms)),
        "n_landmarks": len(names),
        "rmse_um": None,
        "loo_tre_rms_um": None,
        "sitk_deviation_um": dev,
    }
    if len(names):
        res = np.linalg.norm(model.forward_points(f_pts) - m_pts, axis=1)
        report["start_landmarks_rms_um"] = float(np.sqrt(np.mean(res**2)))
    if check_landmarks is not None:
        _, cf, cm = arrays(validate(check_landmarks, source="check landmarks"))
        err = np.linalg.norm(model.forward_points(cf) - cm, axis=1)
        report["check_landmarks"] = len(cf)
        report["tre_rms_um"] = float(np.sqrt(np.mean(err**2)))
        report["rmse_um"] = report["tre_rms_um"]  # the hop's error figure for chains
    lms = (landmark_set(f_pts, m_pts, fixed=fixed, moving=moving, names=names) if len(names)
           else LandmarkSet(moving=moving, fixed=fixed, landmarks=()))  # fmt: skip
    rec = add_registration(
        store, model, fixed=fixed, moving=moving, name=name, landmarks=lms, report=report,
        field_spacing_um=field_spacing_um, overwrite=overwrite, current=current,
        provenance=Provenance.now("register intensity (Mattes MI, affine + B-spline)",
                                  inputs=(fixed, moving), mesh=mesh, iterations=iterations,
                                  seed=seed, start=start),
    )  # fmt: skip
    return rec, dict(rec.report)
