"""Stage layouts of tile scans: positions from files, axis fixes, overlaps, checks and figures.

Stage metadata is untrusted input. The most common real failures are a flipped or swapped stage
axis, zig-zag (serpentine) acquisition order read as row order, and positions in the wrong unit;
each of them still gives a plausible-looking list of numbers. So every layout is checked (every
tile must overlap another one) and drawn (tile outlines with ids, in acquisition order), and the
axis fixes are explicit options, never guessed.

Positions are the **first voxel centre** of each tile (array index 0, 0, 0), ``(z, y, x)`` in
micrometres of stage space, x the last array axis - the convention of CZI subblock starts.
"""

from __future__ import annotations

import csv
import io
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge_xr.errors import InvalidInputError
from bridge_xr.model.units import conversion_factor

#: Fewest overlapping voxels along y and x for two tiles to count as neighbours.
MIN_OVERLAP_PX = 8
#: Two tiles sharing more than this fraction of their width in both y and x: not a tile scan
#: (positions in a larger unit read as micrometres look like this).
MAX_OVERLAP = 0.9


@dataclass(frozen=True)
class Overlap:
    """Two tiles whose stage boxes overlap: ``i < j``, overlap size in voxels (z, y, x)."""

    i: int
    j: int
    size_px: tuple[int, int, int]


def boxes_um(
    positions_um: np.ndarray, shapes: Sequence[Sequence[int]], spacing_um: Any
) -> tuple[np.ndarray, np.ndarray]:
    """First and last voxel centres (n, 3) of each tile, µm (z, y, x)."""
    lo = np.asarray(positions_um, float)
    hi = lo + (np.asarray(shapes, float) - 1) * np.asarray(spacing_um, float)
    return lo, hi


def overlaps(
    positions_um: np.ndarray,
    shapes: Sequence[Sequence[int]],
    spacing_um: Any,
    *,
    min_px: int = MIN_OVERLAP_PX,
) -> list[Overlap]:
    """Every pair of tiles whose boxes share at least ``min_px`` voxels along y and x."""
    lo, hi = boxes_um(positions_um, shapes, spacing_um)
    sp = np.asarray(spacing_um, float)
    found = []
    for i in range(len(lo)):
        span = np.minimum(hi[i], hi[i + 1 :]) - np.maximum(lo[i], lo[i + 1 :])
        n = np.floor(span / sp + 1 + 1e-6).astype(int)
        ok = (n[:, 0] >= 1) & (n[:, 1] >= min_px) & (n[:, 2] >= min_px)
        for k in np.flatnonzero(ok):
            found.append(Overlap(i, i + 1 + int(k), (int(n[k, 0]), int(n[k, 1]), int(n[k, 2]))))
    return found


def check_layout(
    ids: Sequence[str],
    positions_um: np.ndarray,
    shapes: Sequence[Sequence[int]],
    spacing_um: Any,
    *,
    where: str,
) -> list[Overlap]:
    """The overlaps of a stage layout, or one clear error for a layout that cannot be right."""
    if len(ids) < 2:
        raise InvalidInputError(f"{where} has {len(ids)} tile; a tile scan needs at least two")
    pos = np.asarray(positions_um, float)
    _, first = np.unique(np.round(pos, 3), axis=0, return_index=True)
    if len(first) < len(pos):
        dup = sorted(set(range(len(pos))) - set(first.tolist()))
        raise InvalidInputError(
            f"{where}: tiles {', '.join(ids[k] for k in dup[:5])} sit at the same stage position "
            "as another tile; check the positions"
        )
    found = overlaps(pos, shapes, spacing_um)
    shp = np.asarray(shapes, int)
    stacked = [
        o
        for o in found
        if all(o.size_px[a] >= MAX_OVERLAP * min(shp[o.i][a], shp[o.j][a]) for a in (1, 2))
    ]
    if stacked:
        o = stacked[0]
        raise InvalidInputError(
            f"{where}: tiles {ids[o.i]} and {ids[o.j]} overlap by more than "
            f"{MAX_OVERLAP:.0%} at their stage positions ({len(stacked)} such pairs); are the "
            "positions in another unit (--positions-unit, e.g. mm)?"
        )
    linked = {o.i for o in found} | {o.j for o in found}
    alone = [ids[k] for k in range(len(ids)) if k not in linked]
    if alone:
        extent = np.ptp(pos, axis=0)
        size = (np.asarray(shapes, float)[0] - 1) * np.asarray(spacing_um, float)
        raise InvalidInputError(
            f"{where}: tiles {', '.join(alone[:6])}{' ...' if len(alone) > 6 else ''} overlap no "
            f"other tile at their stage positions (layout spans x {extent[2]:.1f} µm, "
            f"y {extent[1]:.1f} µm for tiles of {size[2]:.1f} x {size[1]:.1f} µm); are the "
            "positions in another unit (--positions-unit) or the axes flipped/swapped "
            "(--flip-x, --flip-y, --swap-xy)?"
        )
    return found


def fix_axes(
    positions_um: np.ndarray, *, flip_x: bool = False, flip_y: bool = False, swap_xy: bool = False
) -> np.ndarray:
    """Apply the user's stage-axis fixes to (z, y, x) positions: swap first, then flip."""
    p = np.array(positions_um, float, copy=True)
    if swap_xy:
        p[:, [1, 2]] = p[:, [2, 1]]
    if flip_y:
        p[:, 1] = -p[:, 1]
    if flip_x:
        p[:, 2] = -p[:, 2]
    return p


def read_positions_csv(
    path: str | os.PathLike[str], *, unit: str = "um"
) -> dict[str, tuple[float, float, float]]:
    """Stage positions by file name from a CSV with columns ``file,x,y[,z]`` (in ``unit``).

    Columns may carry their unit in the name (``x_um``, ``y_mm``); ``z`` defaults to 0.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"no such positions file: {str(p)!r}; check the path")
    with p.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise InvalidInputError(f"positions file {str(p)!r} has no rows")
    cols = {c.strip().lower(): c for c in rows[0]}

    def column(axis: str) -> tuple[str | None, float]:
        for name, orig in cols.items():
            base, _, suffix = name.partition("_")
            if base == axis:
                factor = conversion_factor(suffix or unit, "micrometer")
                return orig, factor
        return None, 1.0

    fcol = cols.get("file") or cols.get("filename") or cols.get("tile")
    (xc, fx), (yc, fy), (zc, fz) = column("x"), column("y"), column("z")
    if fcol is None or xc is None or yc is None:
        raise InvalidInputError(
            f"positions file {str(p)!r} needs columns file,x,y[,z] (got {', '.join(rows[0])})"
        )
    out: dict[str, tuple[float, float, float]] = {}
    for k, row in enumerate(rows, start=2):
        try:
            z = float(row[zc]) * fz if zc and row.get(zc) not in (None, "") else 0.0
            out[Path(row[fcol].strip()).name] = (z, float(row[yc]) * fy, float(row[xc]) * fx)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"positions file {str(p)!r} line {k}: x, y and z must be numbers"
            ) from None
    return out


def ome_position_um(path: str | os.PathLike[str]) -> tuple[float, float, float] | None:
    """The stage position of an OME-TIFF's first plane (``Plane/@PositionX|Y|Z``), µm, or None."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            xml = tif.ome_metadata
    except (OSError, ValueError, tifffile.TiffFileError):
        return None
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    plane = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Plane"), None)
    if plane is None or plane.get("PositionX") is None or plane.get("PositionY") is None:
        return None
    out = []
    for axis in "ZYX":
        v = plane.get(f"Position{axis}")
        unit = plane.get(f"Position{axis}Unit") or "um"
        out.append(0.0 if v is None else float(v) * conversion_factor(unit, "micrometer"))
    return out[0], out[1], out[2]


def layout_figure(
    ids: Sequence[str],
    positions_um: np.ndarray,
    shapes: Sequence[Sequence[int]],
    spacing_um: Any,
    *,
    title: str,
    compare_um: np.ndarray | None = None,
    links: Sequence[dict[str, Any]] = (),
) -> bytes:
    """PNG of the tile outlines (x right, y down, as the image shows) with ids and scan order.

    ``compare_um`` (e.g. the stage positions under the registered ones) is drawn dashed; links
    (``i``, ``j``, ``used``) are drawn between tile centres, dropped ones in red.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Rectangle

    pos = np.asarray(positions_um, float)
    size = (np.asarray(shapes, float) - 1) * np.asarray(spacing_um, float)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    if compare_um is not None:
        for (_, y, x), (_, h, w) in zip(np.asarray(compare_um, float), size, strict=True):
            ax.add_patch(Rectangle((x, y), w, h, fill=False, ls="--", ec="0.6", lw=0.8))
    centres = pos[:, 1:] + size[:, 1:] / 2
    for k, ((_, y, x), (_, h, w)) in enumerate(zip(pos, size, strict=True)):
        ax.add_patch(Rectangle((x, y), w, h, fill=True, alpha=0.12, ec="C0", lw=1.2))
        ax.text(centres[k, 1], centres[k, 0], ids[k], ha="center", va="center", fontsize=8)
    ax.plot(centres[:, 1], centres[:, 0], "-", color="C1", lw=0.8, alpha=0.7, label="scan order")
    ax.plot(centres[0, 1], centres[0, 0], "o", color="C1", ms=5)
    for link in links:
        a, b = centres[int(link["i"])], centres[int(link["j"])]
        ax.plot([a[1], b[1]], [a[0], b[0]], "-", lw=1.0, color="C2" if link["used"] else "red")
    lo = np.min(pos[:, 1:], axis=0)
    hi = np.max(pos[:, 1:] + size[:, 1:], axis=0)
    pad = 0.05 * float(np.max(hi - lo))
    ax.set_xlim(lo[1] - pad, hi[1] + pad)
    ax.set_ylim(hi[0] + pad, lo[0] - pad)  # y down, as the image shows
    ax.set_aspect("equal")
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
