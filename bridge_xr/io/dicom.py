"""DICOM series in (SimpleITK's GDCM series reader), geometry kept exactly as an RAS affine."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import xarray as xr

from bridge_xr._constants import SCANNER_RAS
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._geometry import itk_to_scanner
from bridge_xr.model.coords import RAS_ORIENTATION, CoordinateSystem, spatial_system
from bridge_xr.model.image import make_image
from bridge_xr.model.transforms import Affine, Transform

#: DICOM tags kept in the image metadata (tag -> key).
KEPT_TAGS = {
    "0008|0060": "modality",
    "0008|103e": "series_description",
    "0018|0080": "repetition_time_ms",
    "0018|0081": "echo_time_ms",
    "0018|0087": "field_strength_T",
    "0018|0024": "sequence_name",
    "0010|2210": "anatomical_orientation_type",
    "0020|000e": "series_instance_uid",
}


def read_dicom_series(
    folder: str | os.PathLike[str], *, series_uid: str | None = None
) -> tuple[xr.DataArray, dict[str, str], list[tuple[CoordinateSystem, Transform]]]:
    """Read one DICOM series from a folder as an image in millimetres with its RAS affine."""
    p = Path(folder)
    if not p.is_dir():
        raise InvalidInputError(f"no such DICOM folder: {str(p)!r}; check the path")
    reader = sitk.ImageSeriesReader()
    try:
        uids = list(reader.GetGDCMSeriesIDs(str(p)))
    except RuntimeError as exc:
        raise InvalidInputError(f"cannot list DICOM series in {str(p)!r}: {exc}") from exc
    if not uids:
        raise InvalidInputError(
            f"no DICOM series found in {str(p)!r}; point to a folder of .dcm files"
        )
    if series_uid is None:
        if len(uids) > 1:
            msg = (
                f"{str(p)!r} holds {len(uids)} series ({', '.join(uids)}); choose one with --series"
            )
            raise InvalidInputError(msg)
        series_uid = uids[0]
    elif series_uid not in uids:
        raise InvalidInputError(f"series {series_uid!r} is not in {str(p)!r}; it has {uids}")
    files = reader.GetGDCMSeriesFileNames(str(p), series_uid)
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        msg = f"cannot read DICOM series in {str(p)!r} ({exc.__class__.__name__}); is it complete?"
        raise InvalidInputError(msg) from exc
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
        raise InvalidInputError(f"{str(p)!r}: only scalar 3D DICOM series are supported")
    arr = sitk.GetArrayFromImage(image)
    spacing = image.GetSpacing()
    img = make_image(arr, dims=("z", "y", "x"), spacing=spacing[::-1], unit="mm")
    tags = {}
    for tag, key in KEPT_TAGS.items():
        if reader.HasMetaDataKey(0, tag):
            tags[key] = reader.GetMetaData(0, tag).strip()
    m = itk_to_scanner(np.asarray(image.GetDirection()), image.GetOrigin())
    ras = spatial_system(SCANNER_RAS, "mm", RAS_ORIENTATION)
    return img, tags, [(ras, Affine.from_matrix(m, name="dicom_affine"))]
