"""Landmark file formats: the canonical frame, BigWarp CSV/JSON, 3D Slicer fcsv/mrk.json."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bridge_xr.errors import InvalidInputError


def read_bigwarp_csv(path: Path) -> pd.DataFrame:
    """BigWarp landmark CSV: no header; ``name,active,mx,my,mz,fx,fy,fz``; ``Infinity`` = unpaired."""
    rows = list(csv.reader(io.StringIO(path.read_text())))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows or len(rows[0]) != 8:
        raise InvalidInputError(
            f"{str(path)!r}: BigWarp 3D CSV rows have 8 columns (name, active, mx, my, mz, fx, fy, fz)"
        )
    keep = [r for r in rows if not any("inf" in c.lower() for c in r[2:])]
    vals = np.array([[float(c) for c in r[2:]] for r in keep]).reshape(-1, 6)
    return _frame([r[0] for r in keep], vals[:, :3], vals[:, 3:], [r[1] for r in keep])


def write_bigwarp_csv(df: pd.DataFrame, path: Path) -> Path:
    """BigWarp landmark CSV (all values quoted, as BigWarp writes them)."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL)
        for _, r in df.iterrows():
            w.writerow(
                [r["name"], "true" if r["active"] else "false", *(repr(float(r[c])) for c in _NUM)]
            )
    return path


def strip_json_comments(text: str) -> str:
    """Strip comments from lenient JSON (BigWarp's).

    JSON with ``/* ... */``, ``//`` and ``#`` comments outside strings (as BigWarp's lenient
    Gson reader accepts them) -> plain JSON.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise InvalidInputError("unterminated /* comment in a JSON file")
            i = end + 2
        elif text.startswith("//", i) or c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        else:
            out.append(c)
            i += 1
    return "".join(out)


def load_json(path: Path) -> Any:
    """A JSON document, comments allowed (BigWarp settings files may start with one)."""
    try:
        return json.loads(strip_json_comments(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{str(path)!r} is not valid JSON ({exc})") from exc


def read_bigwarp_json(path: Path) -> pd.DataFrame:
    """BigWarp landmarks JSON (``type: BigWarpLandmarks``), alone or inside a settings file."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise InvalidInputError(f"{str(path)!r} is not a 3D BigWarpLandmarks JSON")
    if "Transform" in data:
        data = data["Transform"].get("landmarks", {})
    if data.get("type") != "BigWarpLandmarks" or data.get("numDimensions") != 3:
        raise InvalidInputError(f"{str(path)!r} is not a 3D BigWarpLandmarks JSON")
    mv, fx = data["movingPoints"], data["fixedPoints"]
    names = data.get("names") or [f"Pt-{i}" for i in range(len(mv))]
    active = data.get("active") or [True] * len(mv)
    ok = [i for i in range(len(mv)) if np.isfinite(mv[i]).all() and np.isfinite(fx[i]).all()]
    return _frame(
        [names[i] for i in ok], [mv[i] for i in ok], [fx[i] for i in ok], [active[i] for i in ok]
    )


def write_bigwarp_json(df: pd.DataFrame, path: Path) -> Path:
    """BigWarp landmarks JSON."""
    doc = {
        "type": "BigWarpLandmarks",
        "numDimensions": 3,
        "movingPoints": df[["moving_x", "moving_y", "moving_z"]].to_numpy(float).tolist(),
        "fixedPoints": df[["fixed_x", "fixed_y", "fixed_z"]].to_numpy(float).tolist(),
        "active": [bool(a) for a in df["active"]],
        "names": df["name"].tolist(),
    }
    path.write_text(json.dumps(doc, indent=2))
    return path


def _to_ras_um(points: np.ndarray, system: str, unit: str) -> np.ndarray:
    p = np.asarray(points, dtype=float).copy()
    if system.upper() in {"LPS", "1"}:
        p[:, :2] *= -1
    factor = {"mm": 1000.0, "um": 1.0, "µm": 1.0}.get(unit)
    if factor is None:
        raise InvalidInputError(f"unknown Slicer coordinate unit {unit!r}")
    return p * factor


def is_slicer_json(doc: Any) -> bool:
    """A Slicer markups document, recognised by content (``@schema`` or ``markups``)."""
    if not isinstance(doc, dict):
        return False
    return "markups-schema" in str(doc.get("@schema", "")) or isinstance(doc.get("markups"), list)


def read_slicer_points(path: Path) -> dict[str, np.ndarray]:
    """Label -> point (RAS µm) from a Slicer ``.fcsv`` (3.x, 4.x, 5.x) or markups JSON file.

    Coordinate system as Slicer reads it: ``# CoordinateSystem = LPS|RAS|0|1`` when given;
    otherwise RAS (files before Slicer 4.11 and Slicer 3 lists were RAS). Markups JSON defaults to
    LPS (its schema's default).
    """
    text = path.read_text()
    if text.lstrip().startswith("{"):
        doc = json.loads(strip_json_comments(text))
        if not is_slicer_json(doc):
            raise InvalidInputError(f"{str(path)!r} is JSON but not a Slicer markups file")
        try:
            mk = doc["markups"][0]
        except (KeyError, IndexError) as exc:
            raise InvalidInputError(f"{str(path)!r} holds no markups list") from exc
        pts = [
            cp
            for cp in mk.get("controlPoints", [])
            if cp.get("positionStatus", "defined") == "defined"
        ]
        arr = np.array([cp["position"] for cp in pts], dtype=float).reshape(-1, 3)
        ras = _to_ras_um(arr, mk.get("coordinateSystem", "LPS"), mk.get("coordinateUnits", "mm"))
        return {str(cp["label"]): ras[i] for i, cp in enumerate(pts)}
    system = "RAS"
    labels: list[str] = []
    coords: list[list[float]] = []
    header_cols: list[str] | None = None
    slicer3 = False
    for row in csv.reader(io.StringIO(text)):
        if not row or not "".join(row).strip():
            continue
        if row[0].lstrip().startswith("#"):
            line = ",".join(row)
            key, _, value = line.lstrip("# ").partition("=")
            key = key.strip().lower()
            if key == "coordinatesystem":
                system = {"0": "RAS", "1": "LPS"}.get(value.strip(), value.strip())
            elif key == "columns":
                header_cols = [c.strip() for c in value.split(",")]
            elif (
                key in {"numpoints", "symbolscale", "textscale"}
                or "fiducial list file" in line.lower()
            ):
                slicer3 = True
            continue
        cols = header_cols or (_SLICER3_COLUMNS if slicer3 else _SLICER4_COLUMNS)
        rec = dict(zip(cols, row, strict=False))  # Slicer 5 appends undeclared trailing columns
        labels.append(rec.get("label") or rec.get("id") or str(len(labels)))
        try:
            coords.append([float(rec["x"]), float(rec["y"]), float(rec["z"])])
        except (KeyError, ValueError):
            raise InvalidInputError(
                f"{str(path)!r}: row {row!r} has no numeric x, y, z; is it a Slicer .fcsv?"
            ) from None
    if system.upper() not in {"RAS", "LPS"}:
        raise InvalidInputError(f"{str(path)!r}: unknown CoordinateSystem {system!r} (RAS or LPS)")
    ras = _to_ras_um(np.array(coords).reshape(-1, 3), system, "mm")
    return dict(zip(labels, ras, strict=True))


def pair_slicer(moving: dict[str, np.ndarray], fixed: dict[str, np.ndarray]) -> pd.DataFrame:
    """Pair two Slicer lists by label (labels present in only one list are dropped)."""
    names = [n for n in moving if n in fixed]
    if not names:
        raise InvalidInputError("no landmark label appears in both Slicer files")
    return _frame(names, [moving[n] for n in names], [fixed[n] for n in names])


def write_slicer_fcsv(labels: list[str], ras_um: np.ndarray, path: Path) -> Path:
    """Slicer 4.11 ``.fcsv`` (LPS, mm)."""
    lps = np.asarray(ras_um, dtype=float) / 1000.0 * np.array([-1.0, -1.0, 1.0])
    lines = [
        "# Markups fiducial file version = 4.11",
        "# CoordinateSystem = LPS",
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID",
    ]
    for i, (lab, p) in enumerate(zip(labels, lps, strict=True)):
        x, y, z = (float(v) for v in p)
        lines.append(f"{i},{x!r},{y!r},{z!r},0,0,0,1,1,1,0,{lab},,")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_slicer_json(labels: list[str], ras_um: np.ndarray, path: Path) -> Path:
    """Slicer ``.mrk.json`` (LPS, mm)."""
    lps = np.asarray(ras_um, dtype=float) / 1000.0 * np.array([-1.0, -1.0, 1.0])
    doc = {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": "LPS",
                "coordinateUnits": "mm",
                "controlPoints": [
                    {
                        "id": str(i + 1),
                        "label": lab,
                        "position": p.tolist(),
                        "positionStatus": "defined",
                    }
                    for i, (lab, p) in enumerate(zip(labels, lps, strict=True))
                ],
            }
        ],
    }
    path.write_text(json.dumps(doc, indent=2))
    return path


#: Slicer 3 fiducial lists (``# Fiducial List file``, ``# numPoints = ``): label first, RAS.
_SLICER3_COLUMNS = ["label", "x", "y", "z", "sel", "vis"]


_SLICER4_COLUMNS = ["id", "x", "y", "z", "ow", "ox", "oy", "oz", "vis", "sel", "lock", "label"]


COLUMNS = ["name", "moving_x", "moving_y", "moving_z", "fixed_x", "fixed_y", "fixed_z", "active"]


_NUM = COLUMNS[1:7]


def _frame(names: list[str], moving: Any, fixed: Any, active: Any = None) -> pd.DataFrame:
    m, f = (
        np.asarray(moving, dtype=float).reshape(-1, 3),
        np.asarray(fixed, dtype=float).reshape(-1, 3),
    )
    df = pd.DataFrame(
        {
            "name": [str(n) for n in names],
            "moving_x": m[:, 0],
            "moving_y": m[:, 1],
            "moving_z": m[:, 2],
            "fixed_x": f[:, 0],
            "fixed_y": f[:, 1],
            "fixed_z": f[:, 2],
            "active": [True] * len(names) if active is None else list(active),
        }
    )
    return validate(df, source="landmarks")


def validate(df: pd.DataFrame, *, source: str) -> pd.DataFrame:
    """Check columns, numbers and names; add ``active`` when missing."""
    missing = [c for c in COLUMNS[:7] if c not in df.columns]
    if missing:
        msg = f"{source}: missing landmark columns {missing}; expected {','.join(COLUMNS)}"
        raise InvalidInputError(msg)
    out = df.copy()
    if "active" not in out.columns:
        out["active"] = True
    out["active"] = out["active"].map(
        lambda v: (
            str(v).strip().lower() in {"true", "1", "yes"}
            if not isinstance(v, bool | np.bool_)
            else bool(v)
        )
    )
    try:
        out[_NUM] = out[_NUM].astype(float)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{source}: landmark coordinates must be numbers ({exc})") from exc
    bad = out.loc[~np.isfinite(out[_NUM].to_numpy()).all(axis=1), "name"].tolist()
    if bad:
        raise InvalidInputError(f"{source}: landmarks {bad} have NaN or infinite coordinates")
    out["name"] = out["name"].astype(str)
    dup = out["name"][out["name"].duplicated()].tolist()
    if dup:
        raise InvalidInputError(f"{source}: duplicate landmark names {dup}")
    return out[COLUMNS].reset_index(drop=True)
