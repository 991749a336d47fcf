"""Red-cell velocity from line-scan kymographs (rows = time, columns = position along the vessel).

A cell moving at ``v`` draws a streak whose slope is ``v·Δt/Δx`` pixels per line (``Δt`` the line
time, ``Δx`` the pixel size). Automatic mode finds each window's streak angle with the Radon
transform (the angle whose projections vary most), on square windows under a circular mask (so
no angle sees more pixels than another); manual mode takes the angles of lines drawn along
streaks, as in the paper (signed mean of the lines, |mean| and SD).

Scan skew: pixel ``j`` of a line is sampled ``j·τ`` after the line starts (``τ`` the pixel
dwell), so a cell moving with the scan looks faster and one against it slower:
``v_apparent = v / (1 - v·τ/Δx)`` (``v`` signed, positive in the scan direction). The inverse,
``v = v_apparent / (1 + v_apparent·τ/Δx)``, is applied when ``τ`` is known.

Examples
--------
>>> round(deskew(10.0, pixel_size_um=1.0, pixel_dwell_us=2.0), 4)   # mm/s
9.8039
>>> round(apparent(deskew(10.0, pixel_size_um=1.0, pixel_dwell_us=2.0), 1.0, 2.0), 6)
10.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bridge_xr.errors import InvalidInputError

#: a window is kept when its Radon variance peak is this many times the median over angles
MIN_SEPARABILITY = 3.0
#: a streak must cross the window's width in at least this many lines (fastest measurable) ...
MIN_LINES_ACROSS = 10
#: ... and travel at least this many pixels over the window's lines (slowest measurable)
MIN_TRAVEL_PX = 4


def apparent(v_mm_s: float, pixel_size_um: float, pixel_dwell_us: float) -> float:
    """The velocity a scan with pixel dwell ``τ`` shows for a true (signed) ``v`` (mm/s)."""
    k = v_mm_s * 1e3 * pixel_dwell_us * 1e-6 / pixel_size_um  # v·τ/Δx (v in µm/s)
    return v_mm_s / (1.0 - k)


def deskew(v_apparent_mm_s: float, pixel_size_um: float, pixel_dwell_us: float) -> float:
    """The true velocity (mm/s) from an apparent one, given the pixel dwell (µs)."""
    k = v_apparent_mm_s * 1e3 * pixel_dwell_us * 1e-6 / pixel_size_um
    return v_apparent_mm_s / (1.0 + k)


@dataclass(frozen=True)
class Calibration:
    """What turns a streak slope (pixels per line) into mm/s; every value from the file or user."""

    pixel_size_um: float
    line_time_ms: float
    pixel_dwell_us: float | None = None

    def __post_init__(self) -> None:
        if not (self.pixel_size_um > 0 and self.line_time_ms > 0):
            raise InvalidInputError(
                f"pixel size ({self.pixel_size_um} µm) and line time ({self.line_time_ms} ms) "
                "must be positive"
            )
        if self.pixel_dwell_us is not None and self.pixel_dwell_us < 0:
            raise InvalidInputError(f"pixel dwell {self.pixel_dwell_us} µs is negative")

    def mm_s(self, slope_px_per_line: float) -> float:
        """Velocity (mm/s) of a streak slope, deskewed when the pixel dwell is known."""
        v = slope_px_per_line * self.pixel_size_um / self.line_time_ms  # µm/ms = mm/s
        if self.pixel_dwell_us:
            v = deskew(v, self.pixel_size_um, self.pixel_dwell_us)
        return v

    def limits(self, window: int) -> tuple[float, float]:
        """(smallest, largest) measurable |velocity| in mm/s for square windows of ``window``.

        Smallest: :data:`MIN_TRAVEL_PX` pixels of travel over the window's lines; largest: a
        streak crossing the window's width in :data:`MIN_LINES_ACROSS` lines. Within them the
        Radon angle gives the velocity within 1 % on synthetic kymographs (tests); outside they
        are rejected, not reported.
        """
        v_min = MIN_TRAVEL_PX * self.pixel_size_um / (window * self.line_time_ms)
        v_max = window * self.pixel_size_um / (MIN_LINES_ACROSS * self.line_time_ms)
        return v_min, v_max


def _disk(n: int) -> np.ndarray:
    """The disk skimage's ``radon(circle=True)`` integrates over (zero outside it)."""
    r = np.arange(n) - n // 2
    return (r[:, None] ** 2 + r[None, :] ** 2) <= (n // 2 - 1) ** 2


def _spread(window: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Variance of the Radon projections of a (masked, mean-free) window at each angle."""
    from skimage.transform import radon

    sino = radon(window, theta=angles, circle=True, preserve_range=True)
    return np.asarray(sino.var(axis=0))


def streak_angle(window: np.ndarray) -> tuple[float, float]:
    """(angle in degrees, separability) of the streaks in a square window.

    The angle is skimage's Radon angle of largest projection variance, found on a 1° grid and
    refined on a 0.05° grid with a parabola through the peak; separability is that peak over the
    median variance across angles (≈ 1 without streaks).
    """
    n = window.shape[0]
    mask = _disk(n)
    w = np.asarray(window, dtype=np.float64)
    w = np.where(mask, w - w[mask].mean(), 0.0)
    if not np.any(w):
        return float("nan"), 1.0
    coarse = np.arange(0.0, 180.0, 1.0)
    var = _spread(w, coarse)
    k = int(np.argmax(var))
    fine = coarse[k] + np.arange(-1.5, 1.5001, 0.05)
    fvar = _spread(w, fine)
    j = int(np.argmax(fvar))
    best = float(fine[j])
    if 0 < j < len(fine) - 1:
        a, b, c = fvar[j - 1], fvar[j], fvar[j + 1]
        den = a - 2 * b + c
        if den < 0:
            best += 0.5 * (a - c) / den * 0.05
    med = float(np.median(var))
    return best % 180.0, float(fvar[j] / med) if med > 0 else 1.0


def slope_of_angle(angle_deg: float) -> float:
    """Streak slope (pixels of x per line) of a Radon angle (skimage's convention).

    skimage's angle θ of largest projection variance satisfies ``tan θ = slope`` for a window
    indexed (line, pixel); checked against synthetic kymographs in the tests.
    """
    return float(np.tan(np.deg2rad(angle_deg)))


@dataclass
class VelocityResult:
    """Per-window velocities and their summary."""

    windows: pd.DataFrame
    calibration: Calibration
    window: int
    method: str
    v_min_mm_s: float
    v_max_mm_s: float
    summary: dict[str, Any] = field(default_factory=dict)


def _summary(v: np.ndarray, n_windows: int) -> dict[str, Any]:
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0, "n_windows": n_windows, "mean_mm_s": float("nan"),
                "abs_mean_mm_s": float("nan"), "sd_mm_s": float("nan"), "direction": "none"}  # fmt: skip
    mean = float(np.mean(v))
    return {
        "n": int(len(v)),
        "n_windows": n_windows,
        "mean_mm_s": mean,
        "abs_mean_mm_s": abs(mean),
        "sd_mm_s": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
        "direction": "with the scan" if mean > 0 else "against the scan",
    }


def radon_velocity(
    kymograph: np.ndarray,
    calibration: Calibration,
    *,
    window: int | None = None,
    step: int | None = None,
    min_separability: float = MIN_SEPARABILITY,
) -> VelocityResult:
    """Velocity by the Radon transform over sliding square windows.

    Parameters
    ----------
    kymograph : array (lines, pixels)
        Rows are successive line scans, columns the position along the vessel.
    calibration : Calibration
        Pixel size, line time and (for the skew correction) pixel dwell.
    window : int, optional
        Square window size (lines = pixels); default: the line's pixel count, at most 256.
    step : int, optional
        Lines between window starts (default a quarter window).
    min_separability : float
        Windows whose variance peak is below this many times the median are rejected.

    Returns
    -------
    VelocityResult
        ``windows``: start line, time (ms), angle, slope, velocity, separability, kept; and the
        mean, |mean| and SD of the kept windows, with the measurable range.
    """
    k = np.asarray(kymograph, dtype=np.float64)
    if k.ndim != 2:
        raise InvalidInputError(f"a kymograph is 2-D (lines, pixels); got shape {k.shape}")
    n_lines, n_px = k.shape
    win = int(window or min(n_px, 256))
    if win < 16 or win > n_px or win > n_lines:
        raise InvalidInputError(
            f"window {win} does not fit a {n_lines} x {n_px} kymograph (needs 16 <= window <= "
            "pixels and lines)"
        )
    stride = int(step or max(1, win // 4))
    x0 = (n_px - win) // 2
    v_min, v_max = calibration.limits(win)
    rows = []
    for start in range(0, n_lines - win + 1, stride):
        angle, sep = streak_angle(k[start : start + win, x0 : x0 + win])
        slope = slope_of_angle(angle) if np.isfinite(angle) else float("nan")
        v = calibration.mm_s(slope) if np.isfinite(slope) else float("nan")
        in_range = bool(np.isfinite(v) and v_min <= abs(v) <= v_max)
        rows.append({
            "start_line": start,
            "time_ms": (start + win / 2) * calibration.line_time_ms,
            "angle_deg": angle,
            "slope_px_per_line": slope,
            "velocity_mm_s": v,
            "separability": sep,
            "kept": bool(sep >= min_separability and in_range),
        })  # fmt: skip
    df = pd.DataFrame(rows)
    kept = df.loc[df["kept"], "velocity_mm_s"].to_numpy() if len(df) else np.array([])
    return VelocityResult(df, calibration, win, "radon", v_min, v_max, _summary(kept, len(df)))


def manual_velocity(lines: pd.DataFrame, calibration: Calibration) -> VelocityResult:
    """Velocity from lines drawn along streaks (the paper's mode).

    ``lines`` has columns ``x0, y0, x1, y1`` in pixels (x along the vessel, y = line index), as
    Fiji exports line selections. Each line's velocity is ``Δx·(x1-x0) / (Δt·(y1-y0))``; the
    summary is the signed mean, |mean| and SD.
    """
    missing = {"x0", "y0", "x1", "y1"} - set(lines.columns)
    if missing:
        raise InvalidInputError(f"the line list needs columns x0,y0,x1,y1; lacks {sorted(missing)}")
    dy = lines["y1"].to_numpy(float) - lines["y0"].to_numpy(float)
    dx = lines["x1"].to_numpy(float) - lines["x0"].to_numpy(float)
    if np.any(dy == 0):
        raise InvalidInputError("a drawn line lies along one scan line (y0 == y1): no velocity")
    slopes = dx / dy
    v = np.array([calibration.mm_s(s) for s in slopes])
    df = pd.DataFrame({
        "line": np.arange(len(lines)), "x0": lines["x0"], "y0": lines["y0"], "x1": lines["x1"],
        "y1": lines["y1"], "slope_px_per_line": slopes, "velocity_mm_s": v, "kept": True,
    })  # fmt: skip
    return VelocityResult(df, calibration, 0, "manual", float("nan"), float("nan"),
                          _summary(v, len(df)))  # fmt: skip


def synthetic_kymograph(
    v_mm_s: float,
    calibration: Calibration,
    *,
    lines: int = 2048,
    pixels: int = 128,
    cells_per_100um: float = 15.0,
    cell_um: float = 3.0,
    noise: float = 0.1,
    gaps: Sequence[tuple[int, int]] = (),
    seed: int = 0,
) -> np.ndarray:
    """A kymograph of cells (dark Gaussian shadows in bright plasma) moving at ``v_mm_s``.

    Pixel ``j`` of line ``i`` is sampled at ``i·Δt + j·τ`` (the pixel dwell ``τ`` of the
    calibration, 0 if unknown), so the scan skew is in the data. ``gaps``: line ranges without
    cells (plasma only).
    """
    rng = np.random.default_rng(seed)
    dx = calibration.pixel_size_um
    tau_ms = (calibration.pixel_dwell_us or 0.0) * 1e-3
    length = pixels * dx
    total_t = lines * calibration.line_time_ms
    travel = abs(v_mm_s) * (total_t + pixels * tau_ms)
    lo, hi = -travel - 4 * cell_um, length + travel + 4 * cell_um  # every cell that passes by
    n_cells = max(1, int((hi - lo) * cells_per_100um / 100))
    starts = rng.uniform(lo, hi, n_cells)
    t = np.arange(lines)[:, None] * calibration.line_time_ms + np.arange(pixels)[None, :] * tau_ms
    x = np.arange(pixels)[None, :] * dx
    img = np.ones((lines, pixels))
    sigma = cell_um / 2.355
    for s0 in starts:
        pos = s0 + v_mm_s * t  # mm/s = µm/ms
        img -= 0.8 * np.exp(-0.5 * ((x - pos) / sigma) ** 2)
    for a, b in gaps:
        img[a:b] = 1.0
    return img + noise * rng.standard_normal(img.shape)
