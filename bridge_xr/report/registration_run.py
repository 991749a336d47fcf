"""One registration as ``bridge register`` runs it: optional refinement, fit, store, QC, report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from bridge_xr.io._store import StoreLike
from bridge_xr.io.jsonio import write_json
from bridge_xr.model.metadata import Registration
from bridge_xr.model.pointmaps import Kernel, ModelName
from bridge_xr.register.landmarks import write_csv
from bridge_xr.register.refine import refine_landmarks
from bridge_xr.register.registration import register
from bridge_xr.report.qc import registration_qc

__all__ = ["Refinement", "register_with_report"]


@dataclass(frozen=True)
class Refinement:
    """Refine each landmark by a local mutual-information registration before fitting."""

    model: Literal["rigid", "affine", "bspline"] = "affine"
    radius_um: float = 150.0
    write_to: Path | None = None  # the refined landmarks as a CSV


def register_with_report(
    where: StoreLike,
    *,
    fixed: str,
    moving: str,
    landmarks: pd.DataFrame,
    model: ModelName = "tps",
    name: str = "registration",
    kernel: Kernel = "r",
    smoothing: float = 0.0,
    field_spacing_um: float | None = None,
    overwrite: bool = False,
    tre_map: bool = False,
    fle_um: float | None = None,
    current: bool = False,
    refine: Refinement | None = None,
    report: Path | None = None,
    qc: bool = True,
) -> tuple[Registration, dict[str, Any]]:
    """:func:`bridge_xr.register.register`, optionally after refinement, with a JSON report.

    Parameters
    ----------
    where, fixed, moving, landmarks, model, name, kernel, smoothing, field_spacing_um
        As for :func:`bridge_xr.register.register`.
    overwrite, tre_map, fle_um, current
        As for :func:`bridge_xr.register.register`.
    refine : Refinement, optional
        Refine the landmarks first; the moves are reported under ``refinement``.
    report : Path, optional
        Write the report as strict JSON here (and, with ``qc``, QC figures next to it:
        ``<report>_qc.png``, ``_qc_fine.png``, ``_tre.png``).
    qc : bool
        Draw the QC figures when writing a report.

    Returns
    -------
    (Registration, dict)
        The stored record and its report (RMSE, LOO TRE, refinement, QC figure paths).

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene, tiny_landmarks
    >>> rec, rep = register_with_report(tiny_scene(), fixed="mri", moving="micro",
    ...                                 landmarks=tiny_landmarks(), model="rigid", name="r")
    >>> rep["n_landmarks"]
    5
    """
    moves = None
    if refine is not None:
        landmarks, moves = refine_landmarks(
            where, fixed=fixed, moving=moving, landmarks=landmarks,
            radius_um=refine.radius_um, model=refine.model,
        )  # fmt: skip
        if refine.write_to is not None:
            write_csv(landmarks, refine.write_to)
    rec, rep = register(
        where, fixed=fixed, moving=moving, landmarks=landmarks, model=model, name=name,
        kernel=kernel, smoothing=smoothing, field_spacing_um=field_spacing_um,
        overwrite=overwrite, tre_map=tre_map, fle_um=fle_um, current=current,
    )  # fmt: skip
    if moves is not None and refine is not None:
        rep["refinement"] = {
            "model": refine.model,
            "radius": f"{refine.radius_um:g}um",
            "radius_um": refine.radius_um,
            "accepted": int(moves["accepted"].sum()),
            "moves_um": moves.to_dict(orient="records"),
        }
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        if qc:
            rep["qc_figures"] = registration_qc(where, name, report.with_suffix(""))
        write_json({"name": name, "fixed": fixed, "moving": moving, **rep}, report)
    return rec, rep
