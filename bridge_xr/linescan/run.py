"""``bridge linescan velocity``: one call from a line-scan file to a velocity table and figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from bridge_xr.errors import InvalidInputError
from bridge_xr.linescan.reading import FileCalibration, read_kymograph
from bridge_xr.linescan.streaks import (
    Calibration,
    VelocityResult,
    manual_velocity,
    radon_velocity,
)

#: a user's value and the file's may differ by this much (rounding in the metadata)
_AGREE = 0.005


def _pick(name: str, option: str, user: float | None, file: float | None, unit: str,
          where: str, required: bool) -> float | None:  # fmt: skip
    if user is not None and file is not None and abs(user - file) > _AGREE * abs(file):
        raise InvalidInputError(
            f"{where} says {name} {file:.6g} {unit} but `{option}` says {user:.6g} {unit}; "
            f"drop `{option}` or correct it (a wrong {name} scales every velocity)"
        )
    value = user if user is not None else file
    if value is None and required:
        raise InvalidInputError(
            f"{where} does not state the {name}; pass `{option}` (with its unit)"
        )
    return value


def calibrate(
    file: FileCalibration,
    where: str,
    *,
    pixel_size_um: float | None = None,
    line_time_ms: float | None = None,
    pixel_dwell_us: float | None = None,
) -> Calibration:
    """The calibration from the file, completed (never contradicted) by the user's values."""
    px = _pick("pixel size", "pixel_size", pixel_size_um, file.pixel_size_um, "µm", where, True)
    lt = _pick("line time", "line_time", line_time_ms, file.line_time_ms, "ms", where, True)
    dw = _pick("pixel dwell", "pixel_dwell", pixel_dwell_us, file.pixel_dwell_us, "µs", where,
               False)  # fmt: skip
    assert px is not None
    assert lt is not None
    return Calibration(px, lt, dw)


def _figure(res: VelocityResult, kymo: np.ndarray | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = res.windows
    fig, axes = plt.subplots(1, 2 if kymo is not None else 1, figsize=(10, 3.6), squeeze=False)
    ax = axes[0, 0]
    if res.method == "radon":
        kept = df[df["kept"]]
        ax.plot(kept["time_ms"] / 1e3, kept["velocity_mm_s"], "o-", ms=3, label="kept")
        rej = df[~df["kept"]]
        if len(rej):
            ax.plot(rej["time_ms"] / 1e3, np.nan_to_num(rej["velocity_mm_s"]), "x", color="grey",
                    label="rejected (no streaks or out of range)")  # fmt: skip
        ax.set_xlabel("time (s)")
    else:
        ax.plot(df["line"], df["velocity_mm_s"], "o")
        ax.set_xlabel("drawn line")
    s = res.summary
    ax.axhline(s["mean_mm_s"], color="k", lw=0.8)
    ax.set_ylabel("velocity (mm/s)")
    ax.set_title(f"{res.method}: mean {s['mean_mm_s']:.3g} ± {s['sd_mm_s']:.2g} mm/s (n={s['n']})")
    ax.legend(fontsize=7, loc="best") if res.method == "radon" else None
    if kymo is not None:
        k = axes[0, 1]
        n = min(len(kymo), 4 * max(res.window, 64))
        k.imshow(kymo[:n], aspect="auto", cmap="gray",
                 extent=(0, kymo.shape[1] * res.calibration.pixel_size_um,
                         n * res.calibration.line_time_ms, 0))  # fmt: skip
        k.set_xlabel("position (µm)")
        k.set_ylabel("time (ms)")
        k.set_title("kymograph (start)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def velocity(
    path: str | Path,
    *,
    pixel_size_um: float | None = None,
    line_time_ms: float | None = None,
    pixel_dwell_us: float | None = None,
    method: Literal["radon", "manual"] = "radon",
    lines: str | Path | pd.DataFrame | None = None,
    window: int | None = None,
    channel: int | None = None,
    output: str | Path | None = None,
    figure: str | Path | None = None,
) -> VelocityResult:
    """Red-cell velocity of a line scan (``bridge linescan velocity``).

    Parameters
    ----------
    path : str or path
        CZI or TIFF line scan (rows = lines in time, columns = position along the vessel).
    pixel_size_um, line_time_ms, pixel_dwell_us : float, optional
        Only where the file does not state them (a value contradicting the file is refused).
        Without a pixel dwell the scan-skew correction is not applied (said in the summary).
    method : {'radon', 'manual'}
        Automatic Radon windows, or the drawn ``lines`` (CSV ``x0,y0,x1,y1`` in pixels).
    window : int, optional
        Radon window (lines = pixels).
    channel : int, optional
        Channel of a multichannel file.
    output : str or path, optional
        CSV of windows (or lines); the summary goes to the same name with ``.json``.
    figure : str or path, optional
        PNG: velocity over time and the kymograph.

    Returns
    -------
    VelocityResult
    """
    kymo, file_cal = read_kymograph(path, channel=channel)
    cal = calibrate(file_cal, repr(str(path)), pixel_size_um=pixel_size_um,
                    line_time_ms=line_time_ms, pixel_dwell_us=pixel_dwell_us)  # fmt: skip
    if method == "manual":
        if lines is None:
            raise InvalidInputError("manual velocity needs the drawn lines: pass `lines` (CSV)")
        table = lines if isinstance(lines, pd.DataFrame) else _read_lines(lines)
        res = manual_velocity(table, cal)
    elif method == "radon":
        res = radon_velocity(kymo, cal, window=window)
    else:
        raise InvalidInputError(f"method {method!r}: use radon or manual")
    res.summary.update({
        "file": str(path), "method": res.method, "pixel_size_um": cal.pixel_size_um,
        "line_time_ms": cal.line_time_ms, "pixel_dwell_us": cal.pixel_dwell_us,
        "skew_corrected": bool(cal.pixel_dwell_us), "window": res.window,
        "measurable_min_mm_s": res.v_min_mm_s, "measurable_max_mm_s": res.v_max_mm_s,
        "calibration_from": {"file": file_cal.source,
                             "user": [k for k, v in (("pixel_size", pixel_size_um),
                                                     ("line_time", line_time_ms),
                                                     ("pixel_dwell", pixel_dwell_us))
                                      if v is not None]},
    })  # fmt: skip
    if output is not None:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        res.windows.to_csv(out, index=False)
        out.with_suffix(".json").write_text(json.dumps(_jsonable(res.summary), indent=2))
    if figure is not None:
        Path(figure).parent.mkdir(parents=True, exist_ok=True)
        _figure(res, kymo, Path(figure))
    return res


def _read_lines(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"no line list {str(p)!r}")
    try:
        df = pd.read_csv(p)
    except (ValueError, pd.errors.ParserError) as exc:
        raise InvalidInputError(f"cannot read line list {str(p)!r}: {exc}") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    return df


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}
