"""Register a stack of 2D sections onto the matching slices of a resliced MRI, slice by slice.

The paper's ex vivo workflow: the MRI is resliced to the cutting plane (the 3D-printed device),
its slice thickness equals the section thickness, and each widefield section (moving) is
registered in 2D onto its MRI slice (fixed) from landmarks on DAPI (corpus callosum, anterior
commissure), then the map is applied to all channels. :func:`register_slices` fits one 2D model
per section from a canonical landmark CSV (µm in each image's intrinsic space): a landmark's
moving z names its section, its fixed z names the MRI slice; every landmark of one section must
name the same MRI slice. The fitted maps are stored as one registration
(:class:`~bridge_xr.model.slices.SliceStackModel`) that resampling, point mapping and density
extraction (``method="resliced"``) follow like any other, alone or in a chain.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bridge_xr.errors import EstimationError, InvalidInputError
from bridge_xr.io._store import StoreLike, describe_store, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject
from bridge_xr.model.image import um_factor
from bridge_xr.model.metadata import Provenance, Registration
from bridge_xr.model.pointmaps import Kernel
from bridge_xr.model.slices import (
    MIN_POINTS_2D,
    PlaneModel,
    SliceStackModel,
    fit_plane,
    slice_index,
)
from bridge_xr.register.landmark_formats import validate
from bridge_xr.register.landmarks import arrays
from bridge_xr.register.registration import landmark_set
from bridge_xr.scene.edges import add_registration, check_new_registration

__all__ = ["register_slices", "slice_error_figure"]

#: slice thicknesses (fixed vs moving) may differ by this fraction at most
THICKNESS_TOLERANCE = 0.05


def _z_geometry(img: Any, which: str, path: str) -> tuple[float, float]:
    if "z" not in img.dims or img.sizes["z"] < 1:
        raise InvalidInputError(f"{which} image {path!r} has no z axis; a slice stack needs one")
    f = um_factor(img)
    return float(img.attrs["origin"]["z"] * f), float(img.attrs["spacing"]["z"] * f)


def _plane_report(
    model: PlaneModel, f: np.ndarray, m: np.ndarray, kernel: Kernel, smoothing: float
) -> tuple[Any, dict[str, Any]]:
    fitted = fit_plane(model, f, m, kernel=kernel, smoothing=smoothing)
    flat = np.hstack([f, np.zeros((len(f), 1))])
    res = np.linalg.norm(fitted.forward_points(flat)[:, :2] - m, axis=1)
    loo: list[float] = []
    if len(f) > MIN_POINTS_2D[model]:
        for i in range(len(f)):
            keep = np.arange(len(f)) != i
            try:
                mi = fit_plane(model, f[keep], m[keep], kernel=kernel, smoothing=smoothing)
            except EstimationError:
                loo = []
                break
            p = mi.forward_points(flat[i : i + 1])[0, :2]
            loo.append(float(np.linalg.norm(p - m[i])))
    lo, hi = f.min(axis=0), f.max(axis=0)
    g = np.stack(np.meshgrid(*[np.linspace(a, b, 20) for a, b in zip(lo, hi, strict=True)]), -1)
    grid = np.hstack([g.reshape(-1, 2), np.zeros((400, 1))])
    det = np.linalg.det(fitted.jacobian(grid))
    return fitted, {
        "n_landmarks": len(f),
        "rmse_um": float(np.sqrt(np.mean(res**2))),
        "loo_tre_um": loo,
        "loo_tre_rms_um": float(np.sqrt(np.mean(np.square(loo)))) if loo else None,
        "min_jacobian_det": float(det.min()),
        "folded": bool((det <= 0).any()),
    }


def register_slices(
    where: StoreLike,
    *,
    fixed: str,
    moving: str,
    landmarks: pd.DataFrame,
    model: PlaneModel = "tps",
    name: str = "slices",
    kernel: Kernel = "r2logr",
    smoothing: float = 0.0,
    field_spacing_um: float | None = None,
    overwrite: bool = False,
    current: bool = False,
) -> tuple[Registration, dict[str, Any]]:
    """One 2D registration per section of ``moving`` onto its slice of ``fixed``, stored as one.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject store.
    fixed : str
        The resliced MRI (slices as thick as the sections).
    moving : str
        The section stack (``bridge convert slices``).
    landmarks : DataFrame
        Canonical landmarks (``name, fixed_x ... moving_z``, µm); moving z picks the section,
        fixed z its MRI slice.
    model : {'rigid', 'similarity', 'affine', 'tps'}
        The 2D model of every section.
    name : str
        Registration name.
    kernel : {'r2logr', 'r'}
        2D TPS kernel.
    smoothing : float
        TPS regularisation.
    field_spacing_um : float, optional
        In-plane spacing of the stored displacement fields.
    overwrite, current : bool
        As for :func:`bridge_xr.register.register`.

    Returns
    -------
    (Registration, dict)
        The stored record and its report: overall RMSE and LOO TRE, and ``per_slice`` (section,
        MRI slice, landmarks, RMSE, LOO TRE, folding); ``unregistered_slices`` lists sections
        without landmarks (they map nowhere).

    Examples
    --------
    >>> from bridge_xr.testing.exvivo import slice_scene
    >>> scene, lms = slice_scene()
    >>> rec, rep = register_slices(scene, fixed="exvivo_mri/T2w", moving="exvivo/slab03",
    ...                            landmarks=lms, model="affine")
    >>> rec.model, len(rep["per_slice"]), rep["rmse_um"] < 1e-6
    ('slices', 3, True)
    """
    store = resolve_store(where)
    label = describe_store(store)
    check_new_registration(
        read_subject(store), fixed=fixed, moving=moving, name=name, overwrite=overwrite,
        where=label,
    )  # fmt: skip
    if model not in MIN_POINTS_2D:
        raise InvalidInputError(f"unknown model {model!r}; use rigid, similarity, affine or tps")
    fimg, mimg = read_image(store, fixed), read_image(store, moving)
    fz, mz = _z_geometry(fimg, "fixed", fixed), _z_geometry(mimg, "moving", moving)
    if abs(fz[1] - mz[1]) > THICKNESS_TOLERANCE * mz[1]:
        raise InvalidInputError(
            f"{fixed!r} has {fz[1]:g} µm slices, the sections of {moving!r} are {mz[1]:g} µm "
            "thick; reslice the MRI to the section thickness first (`bridge reslice`)"
        )
    names, f_pts, m_pts = arrays(validate(landmarks, source="landmarks"))
    if not len(names):
        raise InvalidInputError("no active landmarks; place some on each section to register")
    k_of = slice_index(m_pts[:, 2], *mz)
    j_of = slice_index(f_pts[:, 2], *fz)
    n_moving, n_fixed = int(mimg.sizes["z"]), int(fimg.sizes["z"])
    planes: list[tuple[int, int, Any]] = []
    per_slice: list[dict[str, Any]] = []
    for k in sorted(set(k_of.tolist())):
        sel = k_of == k
        js = sorted(set(j_of[sel].tolist()))
        if not 0 <= k < n_moving:
            raise InvalidInputError(
                f"landmarks {[names[i] for i in np.flatnonzero(sel)][:5]} lie outside the "
                f"{n_moving} sections of {moving!r} (moving z); check their z"
            )
        if len(js) != 1 or not 0 <= js[0] < n_fixed:
            raise InvalidInputError(
                f"the landmarks of section {k + 1} point at MRI slices "
                f"{[j + 1 for j in js]} of {fixed!r}; each section pairs with one slice"
            )
        try:
            fitted, rep = _plane_report(model, f_pts[sel, :2], m_pts[sel, :2], kernel, smoothing)
        except EstimationError as exc:
            raise InvalidInputError(f"section {k + 1}: {exc}") from exc
        planes.append((k, js[0], fitted))
        per_slice.append({"section": k + 1, "mri_slice": js[0] + 1, **rep})
    used_j = [j for _, j, _ in planes]
    if len(set(used_j)) != len(used_j):
        raise InvalidInputError(
            f"two sections point at the same MRI slice of {fixed!r} ({sorted(used_j)}); "
            "check the landmarks' fixed z"
        )
    stack = SliceStackModel(model, fz, mz, tuple(planes))
    offsets = sorted({j - k for k, j, _ in planes})
    n_all = sum(s["n_landmarks"] for s in per_slice)
    rmse = float(np.sqrt(sum(s["n_landmarks"] * s["rmse_um"] ** 2 for s in per_slice) / n_all))
    loo = [v for s in per_slice for v in s["loo_tre_um"]]
    report: dict[str, Any] = {
        "model": "slices",
        "plane_model": model,
        "kernel": kernel if model == "tps" else None,
        "smoothing": smoothing if model == "tps" else None,
        "n_landmarks": len(names),
        "rmse_um": rmse,
        "loo_tre_rms_um": float(np.sqrt(np.mean(np.square(loo)))) if loo else None,
        "per_slice": per_slice,
        "unregistered_slices": [k + 1 for k in range(n_moving) if k not in {p[0] for p in planes}],
        "slice_offsets": offsets,
        "consecutive": len(offsets) == 1,
        "slice_thickness_um": {"fixed": fz[1], "moving": mz[1]},
    }
    rec = add_registration(
        store,
        stack,
        fixed=fixed,
        moving=moving,
        name=name,
        landmarks=landmark_set(f_pts, m_pts, fixed=fixed, moving=moving, names=names),
        report=report,
        field_spacing_um=field_spacing_um,
        overwrite=overwrite,
        current=current,
        provenance=Provenance.now(
            "register-slices",
            inputs=(fixed, moving),
            model=model,
            kernel=kernel,
            smoothing=smoothing,
            n_landmarks=len(names),
        ),
    )
    return rec, dict(rec.report)


def slice_error_figure(report: dict[str, Any], path: Any) -> None:
    """Per-section RMSE and LOO TRE (µm) as a bar chart, one bar pair per section.

    Parameters
    ----------
    report : dict
        The report of :func:`register_slices`.
    path : str or path
        PNG to write.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> rep = {"per_slice": [{"section": 1, "rmse_um": 2.0, "loo_tre_rms_um": 5.0}]}
    >>> slice_error_figure(rep, pathlib.Path(tempfile.mkdtemp()) / "e.png")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["per_slice"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(rows) + 2), 3.2), dpi=120)
    ax.bar(x - 0.2, [r["rmse_um"] for r in rows], 0.4, label="RMSE (fit)")
    ax.bar(x + 0.2, [r["loo_tre_rms_um"] or np.nan for r in rows], 0.4, label="LOO TRE")
    ax.set_xticks(x, [str(r["section"]) for r in rows])
    ax.set_xlabel("section")
    ax.set_ylabel("µm")
    ax.set_title("landmark error per section")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
