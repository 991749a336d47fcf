"""Intensity-based local refinement of landmarks (3D Slicer's "local refinement", with SimpleITK).

For each landmark a cube of ``radius_um`` around it is cut from the fixed image and a larger one
from the moving image (at the pyramid level closest to the fixed voxel size); a rigid or affine
transform, started from the global affine fit of all landmarks, is optimised for Mattes mutual
information; the moving landmark moves to where the optimised transform puts the fixed landmark.
``model="bspline"`` adds a second stage: a cubic B-spline (a ``mesh``³ control grid over the fixed
cube, L-BFGS-B) on top of the optimised affine, for local deformations an affine cannot follow.
Moves larger than half the radius are rejected as divergent (the landmark is kept).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import open_group, read_image, read_multiscale_info
from bridge_xr.model.pointmaps import LinearModel, fit
from bridge_xr.model.units import conversion_factor
from bridge_xr.register.landmark_formats import validate
from bridge_xr.register.landmarks import arrays


def _crop(img: Any, centre_xyz_um: np.ndarray, radius_um: float) -> sitk.Image | None:
    """A sitk image (physical µm, xyz, identity direction) of the cube around ``centre``."""
    fac = conversion_factor(img.attrs["unit"], "micrometer")
    sp = np.array([img.attrs["spacing"][d] for d in "xyz"]) * fac
    org = np.array([img.attrs["origin"][d] for d in "xyz"]) * fac
    shape = np.array([img.sizes[d] for d in "xyz"])
    lo = np.maximum(np.floor((centre_xyz_um - radius_um - org) / sp).astype(int), 0)
    hi = np.minimum(np.ceil((centre_xyz_um + radius_um - org) / sp).astype(int) + 1, shape)
    if np.any(hi - lo < 4):
        return None
    data = img.isel(x=slice(lo[0], hi[0]), y=slice(lo[1], hi[1]), z=slice(lo[2], hi[2]))
    if "c" in data.dims:
        data = data.isel(c=0)
    out = sitk.GetImageFromArray(np.asarray(data.values, dtype=np.float32))
    out.SetSpacing(tuple(float(v) for v in sp))
    out.SetOrigin(tuple(float(v) for v in org + lo * sp))
    return out


def _moving_level(store: Any, moving: str, target_um: float) -> int:
    info = read_multiscale_info(open_group(store, moving))
    fac = conversion_factor(info.unit or "micrometer", "micrometer")
    best = 0
    for k, scale in enumerate(info.level_scale):
        sp = [s * fac for s, d in zip(scale, info.dims, strict=True) if d in ("y", "x")]
        if max(sp) <= target_um * 1.0001:
            best = k
    return best


def _mi_registration(seed: int) -> sitk.ImageRegistrationMethod:
    """Mattes mutual information on a seeded random half of the voxels, linear interpolation."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=24)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.5, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    return reg


def _bspline_stage(
    fixed: sitk.Image,
    moving: sitk.Image,
    initial: sitk.Transform,
    *,
    mesh: int,
    iterations: int,
    seed: int,
) -> sitk.Transform:
    """A B-spline over the fixed cube on top of ``initial``; returns the composite transform."""
    bspline = sitk.BSplineTransformInitializer(fixed, [mesh] * 3, order=3)
    reg = _mi_registration(seed)
    reg.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-6,
        numberOfIterations=iterations,
        maximumNumberOfCorrections=5,
        maximumNumberOfFunctionEvaluations=4 * iterations,
    )
    reg.SetMovingInitialTransform(initial)
    reg.SetInitialTransform(bspline, inPlace=True)
    reg.Execute(fixed, moving)
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(initial)
    composite.AddTransform(bspline)
    return composite


def refine_landmarks(
    where: StoreLike,
    *,
    fixed: str,
    moving: str,
    landmarks: pd.DataFrame,
    radius_um: float = 150.0,
    model: str = "affine",
    iterations: int = 100,
    seed: int = 0,
    mesh: int = 3,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Refined landmarks and a table of per-landmark moves (µm, accepted or not).

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    fixed, moving : str
        Image paths.
    landmarks : DataFrame
        Canonical landmarks.
    radius_um : float
        Half-size of the cube around each landmark.
    model : {'rigid', 'affine', 'bspline'}
        Local registration model (Mattes mutual information, SimpleITK).
    iterations, seed, mesh
        Optimiser iterations, sampling seed, B-spline mesh size.

    Returns
    -------
    (DataFrame, DataFrame)
        Refined landmarks, and per landmark its move (µm) and whether it was accepted.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene, tiny_landmarks
    >>> lm, moves = refine_landmarks(tiny_scene(), fixed="mri", moving="micro",
    ...                              landmarks=tiny_landmarks(), radius_um=20, model="rigid")
    >>> len(lm) == len(moves) == 5
    True
    """
    if model not in {"rigid", "affine", "bspline"}:
        raise InvalidInputError(f"`model` must be rigid, affine or bspline; got {model!r}")
    store = resolve_store(where)
    df = validate(landmarks, source="landmarks")
    names, f_pts, m_pts = arrays(df)
    glob = fit("affine" if len(names) >= 4 else "rigid", f_pts, m_pts)
    if not isinstance(glob, LinearModel):  # pragma: no cover - fit() of a linear model
        raise TypeError("expected a linear model")
    fimg = read_image(store, fixed)
    f_sp = min(fimg.attrs["spacing"][d] for d in "yx") * conversion_factor(
        fimg.attrs["unit"], "micrometer"
    )
    mimg = read_image(store, moving, level=_moving_level(store, moving, f_sp))
    rows = []
    refined = df.copy()
    for name, f, m in zip(names, f_pts, m_pts, strict=True):
        fc, mc = _crop(fimg, f, radius_um), _crop(mimg, m, 1.5 * radius_um)
        if fc is None or mc is None:
            rows.append(
                {"name": name, "move_um": 0.0, "accepted": False, "reason": "outside image"}
            )
            continue
        tx = sitk.Euler3DTransform() if model == "rigid" else sitk.AffineTransform(3)
        tx.SetCenter(tuple(float(v) for v in f))
        if model != "rigid":
            tx.SetMatrix(glob.matrix.ravel().tolist())
        tx.SetTranslation(tuple(float(v) for v in (m - f)))
        reg = _mi_registration(seed)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=min(f_sp, radius_um / 10),
            minStep=1e-3 * f_sp,
            numberOfIterations=iterations,
        )
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetInitialTransform(tx, inPlace=False)
        try:
            final = reg.Execute(fc, mc)
            if model == "bspline":
                final = _bspline_stage(fc, mc, final, mesh=mesh, iterations=iterations, seed=seed)
        except RuntimeError as exc:
            rows.append(
                {
                    "name": name,
                    "move_um": 0.0,
                    "accepted": False,
                    "reason": str(exc).splitlines()[0][:80],
                }
            )
            continue
        new_m = np.array(final.TransformPoint(tuple(float(v) for v in f)))
        move = float(np.linalg.norm(new_m - m))
        ok = move <= radius_um / 2
        rows.append(
            {"name": name, "move_um": move, "accepted": ok, "reason": "" if ok else "diverged"}
        )
        if ok:
            sel = refined["name"] == name
            refined.loc[sel, ["moving_x", "moving_y", "moving_z"]] = new_m
    return refined, pd.DataFrame(rows)
