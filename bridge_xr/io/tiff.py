"""TIFF / OME-TIFF / ImageJ stacks in, lazily (one region read per dask task).

Calibration comes from OME-XML (``PhysicalSize*``) or ImageJ metadata (resolution tags,
``spacing``, ``unit``), or from explicit ``pixel_size``/``z_step``; a stack with none of these is
refused rather than given a made-up pixel size.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import xarray as xr
import zarr

from bridge_xr.errors import InvalidInputError
from bridge_xr.model.image import make_image
from bridge_xr.model.units import canonical_unit, conversion_factor

_AXIS_MAP = {"Z": "z", "Y": "y", "X": "x", "C": "c", "S": "c", "T": "t", "I": "z", "Q": "z"}


@dataclass(frozen=True)
class TiffCalibration:
    """Pixel size found in a TIFF (micrometres) and channel names, where present."""

    pixel_size_um: float | None
    z_step_um: float | None
    channel_names: tuple[str, ...] | None
    source: str


class _LogCatcher(logging.Handler):
    """Collects tifffile's warnings about corrupted files (it logs rather than raises)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if any(w in text for w in ("corrupted", "invalid page offset", "truncated", "invalid")):
            self.problems.append(text.strip().splitlines()[-1])


class _RegionReader:
    """Picklable array-like: each ``__getitem__`` opens the file and reads just that region."""

    def __init__(self, path: str, series: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.path, self.series = path, series
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)

    def __getitem__(self, key: Any) -> np.ndarray[Any, Any]:
        with tifffile.TiffFile(self.path) as tf:
            store = tf.series[self.series].aszarr(level=0)
            arr = zarr.open_array(store, mode="r")
            return np.asarray(arr[key]).reshape(np.empty(self.shape, dtype=bool)[key].shape)


def _ome_calibration(xml: str) -> TiffCalibration:
    root = ET.fromstring(xml)
    ns = {"o": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
    pixels = root.find(".//o:Pixels", ns) if ns else root.find(".//Pixels")
    if pixels is None:
        return TiffCalibration(None, None, None, "ome")

    def size(axis: str) -> float | None:
        v = pixels.get(f"PhysicalSize{axis}")
        if v is None:
            return None
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        return float(v) * conversion_factor(canonical_unit(unit), "micrometer")

    chans = pixels.findall("o:Channel", ns) if ns else pixels.findall("Channel")
    names = tuple(c.get("Name") or f"ch{i}" for i, c in enumerate(chans)) if chans else None
    return TiffCalibration(
        size("X"), size("Z"), names if names and any(c.get("Name") for c in chans) else None, "ome"
    )


def _imagej_calibration(tf: tifffile.TiffFile) -> TiffCalibration:
    meta = tf.imagej_metadata or {}
    unit = meta.get("unit")
    page = tf.pages[0]
    xres = page.tags.get("XResolution")  # type: ignore[union-attr]
    px = None
    if unit and unit not in {"pixel", "pixels"} and xres is not None:
        num, den = xres.value
        if num:
            try:
                px = den / num * conversion_factor(canonical_unit(unit), "micrometer")
            except InvalidInputError:
                px = None
    z = meta.get("spacing")
    zs = None
    if z is not None and unit and px is not None:
        zs = float(z) * conversion_factor(canonical_unit(unit), "micrometer")
    labels = meta.get("Labels")
    names = tuple(labels) if isinstance(labels, list | tuple) else None
    return TiffCalibration(px, zs, names, "imagej")


def _check_complete(tf: tifffile.TiffFile, path: Path) -> None:
    size = path.stat().st_size
    series = tf.series[0]
    offset = getattr(series, "dataoffset", None)
    if offset is not None and offset + series.nbytes > size:
        msg = f"TIFF {str(path)!r} is truncated (pixel data runs past the end of the file)"
        raise InvalidInputError(msg)
    for page in tf.pages:
        offsets = getattr(page, "dataoffsets", ())
        counts = getattr(page, "databytecounts", ())
        if offsets and counts and max(o + c for o, c in zip(offsets, counts, strict=False)) > size:
            msg = f"TIFF {str(path)!r} is truncated (pixel data runs past the end of the file)"
            raise InvalidInputError(msg)


def read_tiff(
    path: str | os.PathLike[str],
    *,
    pixel_size_um: float | None = None,
    z_step_um: float | None = None,
    channel_names: tuple[str, ...] | None = None,
    chunks: dict[str, int] | None = None,
) -> tuple[xr.DataArray, TiffCalibration]:
    """Open a TIFF stack lazily as a calibrated image (dims a subset of ``t, c, z, y, x``)."""
    # long by design: calibration comes from OME-XML, ImageJ tags or resolution tags, tried in that order in one place
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"no such file: {str(p)!r}; check the path")
    catcher = _LogCatcher()
    tif_logger = logging.getLogger("tifffile")
    tif_logger.addHandler(catcher)
    try:
        with tifffile.TiffFile(str(p)) as tf:
            series = tf.series[0]
            axes, shape, dtype = series.axes, tuple(series.shape), series.dtype
            if tf.is_ome and tf.ome_metadata:
                cal = _ome_calibration(tf.ome_metadata)
            elif tf.is_imagej:
                cal = _imagej_calibration(tf)
            else:
                cal = TiffCalibration(None, None, None, "none")
            _check_complete(tf, p)
            _ = [page.shape for page in tf.pages]  # walks every IFD: broken chains log errors
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
        raise InvalidInputError(f"cannot read TIFF {str(p)!r}: {exc}") from exc
    finally:
        tif_logger.removeHandler(catcher)
    if catcher.problems:
        msg = f"TIFF {str(p)!r} is truncated or corrupted ({catcher.problems[0]})"
        raise InvalidInputError(msg)
    dims_list = [_AXIS_MAP.get(a) for a in axes]
    if None in dims_list or len(set(dims_list)) != len(dims_list):
        raise InvalidInputError(f"TIFF {str(p)!r} has axes {axes!r} that bridge_xr cannot map")
    dims = tuple(str(d) for d in dims_list)
    order = sorted(range(len(dims)), key=lambda i: "tczyx".index(dims[i]))
    px = pixel_size_um if pixel_size_um is not None else cal.pixel_size_um
    zs = z_step_um if z_step_um is not None else cal.z_step_um
    has_z = "z" in dims and shape[dims.index("z")] > 1
    if px is None:
        msg = f"{str(p)!r} has no pixel size in its metadata; pass `pixel_size` (e.g. 1.1838um)" + (
            " and --z-step (e.g. 5um)" if has_z else ""
        )
        raise InvalidInputError(msg)
    if has_z and zs is None:
        raise InvalidInputError(
            f"{str(p)!r} has no z step in its metadata; pass `z_step` (e.g. 5um)"
        )
    reader = _RegionReader(str(p), 0, shape, dtype)
    want = dict(chunks or {})
    chunk_shape = tuple(
        min(n, want.get(d, n if d in {"y", "x"} else 1)) for d, n in zip(dims, shape, strict=True)
    )
    arr = da.from_array(
        reader,
        chunks=chunk_shape,
        lock=False,
        asarray=False,
        name=f"tiff-{p.name}-{p.stat().st_mtime_ns}",
    )
    arr = arr.transpose(order)
    dims = tuple(dims[i] for i in order)
    spacing = {"z": zs or 1.0, "y": px, "x": px}
    names = channel_names or cal.channel_names
    if "c" in dims and names is not None and len(names) != arr.shape[dims.index("c")]:
        msg = f"{len(names)} channel names given for {arr.shape[dims.index('c')]} channels in {str(p)!r}"
        raise InvalidInputError(msg)
    if "c" not in dims:
        names = None
    sdims = [d for d in dims if d in spacing]
    img = make_image(
        arr, dims=dims, spacing={d: spacing[d] for d in sdims}, unit="um", channel_names=names
    )
    return img, cal
