"""Drawn ROIs as polygons in a CSV (Fiji's XY coordinates), rasterised lazily block by block.

A polygon table has one row per vertex, in drawing order: ``roi`` (an integer > 0), the vertex in
pixels (``x_px, y_px``) or in the image's physical frame in µm (``x_um, y_um``: the coordinates
the image's own axes carry, origin included), and optionally the plane (``z_px`` or ``z_um``).
A polygon without a plane applies to every plane. Units are named in the columns, never guessed:
a table with both or neither unit is refused.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from bridge_xr.model.image import make_image
>>> img = make_image(np.zeros((1, 6, 8), np.float32), dims="zyx", spacing=(1, 1, 1), unit="um")
>>> table = pd.DataFrame({"roi": [1, 1, 1, 1], "x_px": [1, 4, 4, 1], "y_px": [1, 1, 3, 3]})
>>> labels = polygon_labels(table, img, chunks=(1, 4, 4)).compute()
>>> int((labels == 1).sum())
12
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from skimage.draw import polygon

from bridge_xr.errors import InvalidInputError
from bridge_xr.model.units import conversion_factor

__all__ = ["polygon_labels", "read_polygons"]

#: A polygon: its ROI, plane (None: every plane), and vertices as (row, column) pixel indices.
Polygon = tuple[int, int | None, np.ndarray, np.ndarray]


def read_polygons(source: str | Path | pd.DataFrame, like: xr.DataArray) -> list[Polygon]:
    """Polygons of a CSV (or DataFrame) in ``like``'s pixel indices (see the module doc)."""
    where = "the ROI table" if isinstance(source, pd.DataFrame) else repr(str(source))
    if isinstance(source, pd.DataFrame):
        table = source
    else:
        if not Path(source).is_file():
            raise InvalidInputError(f"no such ROI table: {where}; check the path")
        try:
            table = pd.read_csv(source)
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise InvalidInputError(f"cannot read ROI table {where}: {exc}") from None
    cols = set(table.columns)
    units = [u for u in ("px", "um") if {f"x_{u}", f"y_{u}"} <= cols]
    if "roi" not in cols or len(units) != 1:
        raise InvalidInputError(
            f"ROI table {where} needs columns roi and either x_px, y_px or x_um, y_um "
            f"(one unit, named); it has {sorted(cols)}"
        )
    unit = units[0]
    zcol = next((c for c in (f"z_{unit}", "z_px", "z_um") if c in cols), None)
    index = {}
    for axis in "zyx":
        coords = np.asarray(like.coords[axis].values, float) if axis in like.coords else None
        spacing = float(like.attrs["spacing"][axis])
        origin = float(coords[0]) if coords is not None and coords.size else 0.0
        index[axis] = (origin, spacing)
    f_um = conversion_factor(str(like.attrs["unit"]), "micrometer")

    def to_px(values: np.ndarray, axis: str, col: str) -> np.ndarray:
        if col.endswith("_px"):
            return values
        origin, spacing = index[axis]
        return (values / f_um - origin) / spacing

    try:
        roi_ids = table["roi"].to_numpy()
        if not np.all(np.equal(np.mod(roi_ids, 1), 0)) or (roi_ids <= 0).any():
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidInputError(f"ROI table {where}: roi must be whole numbers > 0") from None
    out: list[Polygon] = []
    keys = ["roi"] if zcol is None else ["roi", zcol]
    for key, rows in table.groupby(keys, sort=True):
        roi = int(key[0] if isinstance(key, tuple) else key)
        plane = None
        if zcol is not None:
            zf = float(to_px(np.array([float(key[1])]), "z", zcol)[0])
            plane = int(round(zf))
            if abs(zf - plane) > 1e-3 or not 0 <= plane < like.sizes["z"]:
                raise InvalidInputError(
                    f"ROI {roi} in {where}: plane {key[1]} is not one of the image's "
                    f"{like.sizes['z']} planes"
                )
        if len(rows) < 3:
            raise InvalidInputError(f"ROI {roi} in {where} has {len(rows)} vertices; needs >= 3")
        r = to_px(rows[f"y_{unit}"].to_numpy(float), "y", f"y_{unit}")
        c = to_px(rows[f"x_{unit}"].to_numpy(float), "x", f"x_{unit}")
        out.append((roi, plane, r, c))
    return out


def _raster_block(
    block_shape: tuple[int, int, int], offset: tuple[int, int, int], polys: list[Polygon]
) -> np.ndarray:
    out = np.zeros(block_shape, np.int32)
    z0, y0, x0 = offset
    for roi, plane, r, c in polys:
        if plane is not None and not z0 <= plane < z0 + block_shape[0]:
            continue
        rr, cc = polygon(r - y0, c - x0, shape=block_shape[1:])
        if plane is None:
            out[:, rr, cc] = roi
        else:
            out[plane - z0, rr, cc] = roi
    return out


def polygon_labels(
    source: str | Path | pd.DataFrame, like: xr.DataArray, *, chunks: Any = None
) -> da.Array:
    """A lazy int32 label image of the polygons on ``like``'s (z, y, x) grid.

    Each block rasterises only the polygons that reach it (``skimage.draw.polygon``: pixel
    centres inside the polygon); a later ROI overwrites an earlier one where they overlap.
    """
    polys = read_polygons(source, like)
    shape = tuple(int(like.sizes[d]) for d in "zyx")
    chunks = like.data.chunks if chunks is None and hasattr(like.data, "chunks") else chunks
    template = da.zeros(shape, dtype=np.int32, chunks=chunks or (1, 1024, 1024))

    def fill(block: np.ndarray, block_info: Any = None) -> np.ndarray:
        loc = block_info[0]["array-location"]
        offset = (loc[0][0], loc[1][0], loc[2][0])
        rows = [p for p in polys if _reaches(p, offset, block.shape)]
        return _raster_block(block.shape, offset, rows)

    return template.map_blocks(fill, dtype=np.int32)


def _reaches(p: Polygon, offset: tuple[int, int, int], shape: tuple[int, ...]) -> bool:
    _, plane, r, c = p
    if plane is not None and not offset[0] <= plane < offset[0] + shape[0]:
        return False
    return bool(
        r.max() >= offset[1] - 1
        and r.min() <= offset[1] + shape[1]
        and c.max() >= offset[2] - 1
        and c.min() <= offset[2] + shape[2]
    )
