"""Landmark sets: the canonical CSV, 3D Slicer (.fcsv, .mrk.json) and BigWarp (CSV, JSON).

Canonical CSV: ``name,moving_x,moving_y,moving_z,fixed_x,fixed_y,fixed_z[,active]`` in
micrometres in each image's intrinsic physical space (x = last array axis).

3D Slicer stores one markups list per volume, in millimetres, LPS (files) or RAS; fixed and moving
lists are paired by label as Slicer's Landmark Registration does. Imported points are Slicer world
coordinates (RAS, µm); :func:`to_intrinsic` maps them into each image's intrinsic frame through its
``scanner_ras`` affine (MRI), or keeps them (images without one, e.g. microscopy).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bridge_xr.errors import InvalidInputError
from bridge_xr.register.landmark_formats import (
    is_slicer_json,
    pair_slicer,
    read_bigwarp_csv,
    read_bigwarp_json,
    read_slicer_points,
    strip_json_comments,
    validate,
    write_bigwarp_csv,
    write_bigwarp_json,
    write_slicer_fcsv,
    write_slicer_json,
)


def read_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read the canonical landmark CSV."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"no such landmark file: {str(p)!r}")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read landmark CSV {str(p)!r}: {exc}") from exc
    return validate(df, source=str(p))


def write_csv(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the canonical landmark CSV."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    validate(df, source=str(p)).to_csv(p, index=False, float_format="%.17g")
    return p


def arrays(
    df: pd.DataFrame, *, active_only: bool = True
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(names, fixed (N,3), moving (N,3))`` in x, y, z µm."""
    sel = df[df["active"]] if active_only else df
    return (
        sel["name"].tolist(),
        sel[["fixed_x", "fixed_y", "fixed_z"]].to_numpy(float),
        sel[["moving_x", "moving_y", "moving_z"]].to_numpy(float),
    )


# ------------------------------------------------------------------------------------- BigWarp


# -------------------------------------------------------------------------------------- Slicer


# ------------------------------------------------------------------------------------ dispatch


def import_landmarks(paths: list[str | os.PathLike[str]]) -> pd.DataFrame:
    """Import from BigWarp (one CSV/JSON file) or Slicer (moving file, fixed file) or canonical CSV.

    Parameters
    ----------
    paths : list of path
        One BigWarp CSV/JSON or canonical CSV; or the Slicer moving list, then the fixed list.

    Returns
    -------
    DataFrame
        Canonical landmarks (µm, x, y, z per side).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing import tiny_landmarks
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "l.csv"
    >>> tiny_landmarks().to_csv(path, index=False)
    >>> import_landmarks([path])["moving_x"].tolist()[:2]
    [15.0, 75.0]
    """
    ps = [Path(p) for p in paths]
    for p in ps:
        if not p.is_file():
            raise InvalidInputError(f"no such landmark file: {str(p)!r}")
    slicer = [p for p in ps if _is_slicer_file(p)]
    if slicer:
        if len(ps) != 2 or len(slicer) != 2:
            raise InvalidInputError(
                "Slicer import needs two files: the moving list, then the fixed list"
            )
        return pair_slicer(read_slicer_points(ps[0]), read_slicer_points(ps[1]))
    if len(ps) != 1:
        raise InvalidInputError(
            "give one BigWarp CSV/JSON file, or two Slicer files (moving, fixed)"
        )
    p = ps[0]
    head = p.read_text()[:4096].lstrip() if p.stat().st_size else ""
    if head.startswith(("{", "/*", "//")):
        return read_bigwarp_json(p)
    first = head.splitlines()[0] if head else ""
    if first.startswith("name,"):
        return read_csv(p)
    return read_bigwarp_csv(p)


def _is_slicer_file(p: Path) -> bool:
    """Slicer lists by suffix (.fcsv) or, for JSON of any suffix, by content."""
    if p.name.endswith(".fcsv"):
        return True
    head = p.read_text()[:4096].lstrip() if p.stat().st_size else ""
    if not head.startswith(("{", "/*", "//")):
        return head.startswith("# Markups fiducial file") or head.startswith("# Fiducial List")
    try:
        return is_slicer_json(json.loads(strip_json_comments(p.read_text())))
    except (json.JSONDecodeError, InvalidInputError):
        return False


def export_landmarks(df: pd.DataFrame, fmt: str, output: str | os.PathLike[str]) -> list[Path]:
    """Export to ``bigwarp-csv``, ``bigwarp-json``, ``slicer-fcsv`` or ``slicer-json``.

    Slicer formats write two files: ``<output>_moving`` and ``<output>_fixed``.

    Parameters
    ----------
    df : DataFrame
        Canonical landmarks (``name, fixed_x ... moving_z``, µm).
    fmt : {'bigwarp-csv', 'bigwarp-json', 'slicer-fcsv', 'slicer-json'}
        Target format.
    output : path
        File (or prefix, for the two Slicer files).

    Returns
    -------
    list of Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing import tiny_landmarks
    >>> out = export_landmarks(tiny_landmarks(), "bigwarp-csv", pathlib.Path(tempfile.mkdtemp()) / "l.csv")
    >>> len(import_landmarks(out))
    5
    """
    df = validate(df, source="landmarks")  # fills `active` (optional in the canonical CSV)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "bigwarp-csv":
        return [write_bigwarp_csv(df, out)]
    if fmt == "bigwarp-json":
        return [write_bigwarp_json(df, out)]
    if fmt in {"slicer-fcsv", "slicer-json"}:
        ext = ".fcsv" if fmt == "slicer-fcsv" else ".mrk.json"
        writer = write_slicer_fcsv if fmt == "slicer-fcsv" else write_slicer_json
        stem = out.name.removesuffix(ext)
        names = df["name"].tolist()
        return [
            writer(
                names,
                df[[f"{side}_x", f"{side}_y", f"{side}_z"]].to_numpy(float),
                out.with_name(f"{stem}_{side}{ext}"),
            )
            for side in ("moving", "fixed")
        ]
    raise InvalidInputError(
        f"unknown landmark format {fmt!r}; use bigwarp-csv, bigwarp-json, slicer-fcsv, slicer-json"
    )


def world_to_intrinsic(points_ras_um: np.ndarray, image: Any) -> np.ndarray:
    """Slicer world points (RAS, µm, x=R y=A z=S) -> the image's intrinsic x, y, z (µm).

    Uses the image's ``scanner_ras`` affine when it has one (MRI converted from NIfTI/DICOM, whose
    world in Slicer is the scanner RAS); otherwise world and intrinsic coincide.
    """
    from bridge_xr.model.units import conversion_factor

    p = np.asarray(points_ras_um, dtype=np.float64).reshape(-1, 3)
    t = image.attrs.get("transforms", {}).get("scanner_ras")
    if t is None:
        return p
    unit = image.attrs["unit"]
    to_unit = conversion_factor("micrometer", unit)
    sar = p[:, ::-1] * to_unit  # (S, A, R) in the image unit
    zyx = t.inverse().transform_points(sar)
    return zyx[:, ::-1] / to_unit


def to_intrinsic(df: pd.DataFrame, *, fixed_image: Any, moving_image: Any) -> pd.DataFrame:
    """Convert imported Slicer world coordinates of both sides to each image's intrinsic space."""
    out = df.copy()
    for side, img in (("fixed", fixed_image), ("moving", moving_image)):
        cols = [f"{side}_x", f"{side}_y", f"{side}_z"]
        out[cols] = world_to_intrinsic(out[cols].to_numpy(float), img)
    return out
