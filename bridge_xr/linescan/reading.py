"""Kymographs from line-scan files, with the calibration the file itself states.

* CZI (Zeiss LSM): pixel size from ``Scaling/Items/Distance[@Id='X']`` (metres); line time and
  pixel dwell from ``Channel/LaserScanInfo/LineTime`` and ``PixelTime`` (seconds).
* TIFF / OME-TIFF: pixel size from OME-XML ``PhysicalSizeX`` or ImageJ's resolution; TIFF has
  no standard line time or pixel dwell, so those come from the user.

Nothing is defaulted: what neither the file nor the user gives is None, and a velocity needs a
pixel size and a line time.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge_xr.errors import InvalidInputError


@dataclass(frozen=True)
class FileCalibration:
    """What a line-scan file says (None: it does not say)."""

    pixel_size_um: float | None
    line_time_ms: float | None
    pixel_dwell_us: float | None
    source: str


def _czi_times(xml: str) -> tuple[float | None, float | None]:
    root = ET.fromstring(xml)
    line = dwell = None
    for info in root.iter("LaserScanInfo"):
        lt, pt = info.findtext("LineTime"), info.findtext("PixelTime")
        try:
            line = line if line is not None or not lt else float(lt) * 1e3
            dwell = dwell if dwell is not None or not pt else float(pt) * 1e6
        except ValueError:
            continue
    return line, dwell


def _squeeze(data: np.ndarray, axes: str, channel: int | None, where: str) -> np.ndarray:
    """The (lines, pixels) plane of an array with named axes (``C`` picked by ``channel``)."""
    arr = np.asarray(data)
    if "C" in axes:
        c = axes.index("C")
        n = arr.shape[c]
        if n > 1 and channel is None:
            raise InvalidInputError(f"{where} has {n} channels; choose one with `channel`")
        arr = np.take(arr, channel or 0, axis=c)
        if channel is not None and not 0 <= channel < n:
            raise InvalidInputError(f"{where} has channels 0..{n - 1}; got {channel}")
        axes = axes.replace("C", "")
    out = np.squeeze(arr)
    if out.ndim != 2:
        raise InvalidInputError(
            f"{where} is not one line scan: {arr.shape} ({axes}) has more than lines x pixels"
        )
    return out


def read_kymograph(
    path: str | Path, *, channel: int | None = None
) -> tuple[np.ndarray, FileCalibration]:
    """The kymograph (lines, pixels) of a CZI or TIFF line scan and its file calibration.

    Parameters
    ----------
    path : str or path
        A ``.czi``, ``.tif`` or ``.ome.tif`` line scan (x along the vessel, y = time).
    channel : int, optional
        Channel index, required when the file has several.

    Returns
    -------
    (ndarray, FileCalibration)
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"no line-scan file {str(p)!r}")
    where = repr(str(p))
    if p.suffix.lower() == ".czi":
        import czifile

        from bridge_xr.io.czi import _metres_um

        try:
            with czifile.CziFile(str(p)) as cz:
                data, axes, xml = cz.asarray(), cz.axes, cz.metadata()
        except (ValueError, OSError, KeyError) as exc:
            raise InvalidInputError(f"cannot read CZI {where}: {exc}") from None
        line, dwell = _czi_times(xml)
        px = _metres_um(ET.fromstring(xml), "X")
        return _squeeze(data, axes, channel, where), FileCalibration(px, line, dwell, "czi")
    if p.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        from bridge_xr.io.tiff import _imagej_calibration, _ome_calibration

        try:
            with tifffile.TiffFile(str(p)) as tf:
                series = tf.series[0]
                data, axes = series.asarray(), series.axes.replace("S", "C")
                cal = (
                    _ome_calibration(tf.ome_metadata)
                    if tf.ome_metadata
                    else _imagej_calibration(tf)
                )
        except (ValueError, OSError, tifffile.TiffFileError) as exc:
            raise InvalidInputError(f"cannot read TIFF {where}: {exc}") from None
        return _squeeze(data, axes, channel, where), FileCalibration(
            cal.pixel_size_um, None, None, "tiff"
        )
    raise InvalidInputError(f"{where}: line scans are read from .czi or .tif files")
