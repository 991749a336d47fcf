"""NIfTI-1/2 in and out (nibabel), keeping the header geometry exactly.

The raw header bytes are kept (base64) so that export writes back the same header; sform and
qform with their codes are kept as given; the best affine (nibabel's choice: sform, else qform)
becomes the inline ``intrinsic -> scanner_ras`` affine.
"""

from __future__ import annotations

import base64
import io
import os
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import xarray as xr

from bridge_xr._constants import SCANNER_RAS
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._geometry import nifti_to_scanner, scanner_to_nifti
from bridge_xr.model.coords import RAS_ORIENTATION, CoordinateSystem, spatial_system
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import NiftiInfo
from bridge_xr.model.transforms import Affine, Transform

_NIFTI_UNITS = {
    "mm": "millimeter",
    "micron": "micrometer",
    "meter": "meter",
    "unknown": "millimeter",
}


def _rows(m: Any) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(m))


def read_nifti(
    path: str | os.PathLike[str],
) -> tuple[xr.DataArray, NiftiInfo, list[tuple[CoordinateSystem, Transform]]]:
    """Read a NIfTI file as an image (dims ``(t,) z, y, x``), its header info and RAS affine."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"no such file: {str(p)!r}; check the path")
    try:
        img: Any = nib.load(str(p))
        data = np.asarray(img.dataobj.get_unscaled())
    except (nib.filebasedimages.ImageFileError, EOFError, zlib.error, OSError, ValueError) as exc:
        msg = f"cannot read NIfTI {str(p)!r} ({type(exc).__name__}: {exc}); is the file complete?"
        raise InvalidInputError(msg) from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InvalidInputError(f"{str(p)!r} is not a NIfTI-1/2 image")
    hdr = img.header
    header_shape = tuple(int(n) for n in data.shape)
    while data.ndim > 3 and data.shape[-1] == 1:  # trailing singleton axes come back on export
        data = data.reshape(data.shape[:-1])
    if data.ndim not in (3, 4):
        msg = (
            f"{str(p)!r} has shape {header_shape}; bridge_xr reads 3D and 4D (x, y, z, t) NIfTI "
            "(trailing axes of length 1 are fine)"
        )
        raise InvalidInputError(msg)
    raw_dtype = data.dtype
    # nibabel moves scl_slope/scl_inter from the header into the array proxy on load
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    if slope == 1.0 and inter == 0.0:
        slope_opt: float | None = None
        inter_opt: float | None = None
    else:
        slope_opt, inter_opt = slope, inter
    if slope_opt is not None:
        # the values the file means (nibabel get_fdata, FSL, ITK): raw * scl_slope + scl_inter
        wide = raw_dtype.kind == "f" and raw_dtype.itemsize >= 8
        wide |= raw_dtype.kind in "iu" and raw_dtype.itemsize >= 4
        out_dtype = np.float64 if wide else np.float32
        data = (data.astype(np.float64) * slope + inter).astype(out_dtype)
    zooms = tuple(float(z) for z in hdr.get_zooms()[:3])
    unit = _NIFTI_UNITS.get(hdr.get_xyzt_units()[0], "millimeter")
    dims: tuple[str, ...]
    if data.ndim == 3:
        arr, dims = np.transpose(data, (2, 1, 0)), ("z", "y", "x")
    else:
        arr, dims = np.transpose(data, (3, 2, 1, 0)), ("t", "z", "y", "x")
    image = make_image(arr, dims=dims, spacing=zooms[::-1], unit=unit)
    m = nifti_to_scanner(img.affine, zooms)
    raw = hdr.binaryblock
    info = NiftiInfo(
        header_b64=base64.b64encode(raw).decode("ascii"),
        sform=_rows(hdr.get_sform()),
        sform_code=int(hdr["sform_code"]),
        qform=_rows(hdr.get_qform()),
        qform_code=int(hdr["qform_code"]),
        scl_slope=slope_opt,
        scl_inter=inter_opt,
        shape=header_shape,
        raw_dtype=str(raw_dtype),
    )
    ras = spatial_system(SCANNER_RAS, unit, RAS_ORIENTATION)
    return image, info, [(ras, Affine.from_matrix(m, name="nifti_affine"))]


def _unscale(values: np.ndarray[Any, Any], nifti: NiftiInfo) -> np.ndarray[Any, Any]:
    """The raw on-disk values of scaled ones: (v - scl_inter) / scl_slope in the raw dtype."""
    slope, inter = nifti.scl_slope, nifti.scl_inter or 0.0
    if slope is None or (slope == 1.0 and inter == 0.0) or nifti.raw_dtype is None:
        return values
    raw_dtype = np.dtype(nifti.raw_dtype)
    raw = (np.asarray(values, dtype=np.float64) - inter) / slope
    if raw_dtype.kind in "iu":
        info = np.iinfo(raw_dtype)
        raw = np.clip(np.rint(raw), info.min, info.max)
    return raw.astype(raw_dtype)


def write_nifti(
    data: np.ndarray[Any, Any],
    dims: tuple[str, ...],
    path: str | os.PathLike[str],
    *,
    spacing: dict[str, float],
    unit: str,
    nifti: NiftiInfo | None = None,
    scanner_affine: Any = None,
) -> Path:
    """Write an array (dims ``(t,) z, y, x``) as NIfTI; with ``nifti`` the original header is reused."""
    out = Path(path)
    if dims == ("z", "y", "x"):
        xyz = np.transpose(data, (2, 1, 0))
    elif dims == ("t", "z", "y", "x"):
        xyz = np.transpose(data, (3, 2, 1, 0))
    else:
        raise InvalidInputError(f"NIfTI export needs dims (t,) z, y, x; the image has {dims}")
    if nifti is not None:
        raw = base64.b64decode(nifti.header_b64)
        klass = nib.Nifti2Header if len(raw) >= 540 else nib.Nifti1Header
        hdr = klass.from_fileobj(io.BytesIO(raw))
        img_cls = nib.Nifti2Image if klass is nib.Nifti2Header else nib.Nifti1Image
        xyz = _unscale(xyz, nifti)
        if nifti.shape is not None and int(np.prod(nifti.shape)) == xyz.size:
            xyz = xyz.reshape(nifti.shape)  # the header's trailing singleton axes
        img = img_cls(xyz, None, header=hdr)
        img.set_sform(np.asarray(nifti.sform), code=nifti.sform_code)
        img.set_qform(np.asarray(nifti.qform), code=nifti.qform_code)
        if nifti.scl_slope is not None:
            img.header.set_slope_inter(nifti.scl_slope, nifti.scl_inter)
    else:
        zooms = (spacing["x"], spacing["y"], spacing["z"])
        factor = {"micrometer": 1e-3, "millimeter": 1.0, "meter": 1e3}.get(unit)
        if factor is None:
            from bridge_xr.model.units import conversion_factor

            factor = conversion_factor(unit, "millimeter")
        if scanner_affine is not None:
            affine = scanner_to_nifti(scanner_affine, zooms)
            affine[:3] *= factor
        else:
            affine = np.diag([*(z * factor for z in zooms), 1.0])
        img = nib.Nifti1Image(xyz, affine)
        img.header.set_xyzt_units("mm")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part" + ("".join(out.suffixes)))
    nib.save(img, str(tmp))
    os.replace(tmp, out)
    return out
