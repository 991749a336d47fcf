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


#: Slice positions may differ from a regular grid by this fraction of the spacing (dcm2niix and
#: nibabel use similar tolerances) before the series counts as uneven.
SPACING_TOLERANCE = 0.01


def _describe_series(folder: Path, uid: str, reader: sitk.ImageSeriesReader) -> str:
    files = reader.GetGDCMSeriesFileNames(str(folder), uid)
    tags = _tags(files[0]) if files else {}
    desc = tags.get("0008|103e", "").strip() or "no description"
    return f"{desc}, {len(files)} files"


def _tags(path: str) -> dict[str, str]:
    r = sitk.ImageFileReader()
    r.SetFileName(path)
    r.LoadPrivateTagsOn()
    try:
        r.ReadImageInformation()
    except RuntimeError as exc:
        raise InvalidInputError(f"cannot read DICOM file {path!r}: {exc}".splitlines()[0]) from exc
    return {k: r.GetMetaData(k) for k in r.GetMetaDataKeys()}


def _floats(text: str | None) -> np.ndarray | None:
    if not text:
        return None
    try:
        return np.array([float(v) for v in text.strip().split("\\")])
    except ValueError:
        return None


def check_series_geometry(files: list[str] | tuple[str, ...], *, where: str) -> None:
    """Refuse a series that is not one regular volume: one line naming the problem.

    Siemens mosaics (ImageType MOSAIC), several orientations (localizers mixed in), several images
    at one slice position (echoes, repetitions) and uneven slice spacing (gaps) would each give a
    volume with a wrong geometry (an averaged spacing, interleaved echoes).
    """
    tags = [_tags(f) for f in files]
    if any("MOSAIC" in t.get("0008|0008", "").upper() for t in tags):
        raise InvalidInputError(
            f"{where} is a Siemens mosaic (ImageType MOSAIC: many slices tiled in one image); "
            "unpack it first (dcm2niix, or nibabel's nicom) and convert the NIfTI"
        )
    iops = [_floats(t.get("0020|0037")) for t in tags]
    ipps = [_floats(t.get("0020|0032")) for t in tags]
    if any(v is None or len(v) != 6 for v in iops) or any(v is None or len(v) != 3 for v in ipps):
        if len(files) > 1:
            raise InvalidInputError(
                f"{where}: some files lack ImagePositionPatient/ImageOrientationPatient; "
                "the slice geometry cannot be established"
            )
        return
    ori = np.array(iops, dtype=float)
    distinct = [ori[0]]
    for o in ori[1:]:
        if not any(np.allclose(o, d, atol=1e-4) for d in distinct):
            distinct.append(o)
    if len(distinct) > 1:
        raise InvalidInputError(
            f"{where} mixes {len(distinct)} slice orientations (e.g. localizer images); "
            "move the other-orientation files out of the folder, or pick another series with --series UID"
        )
    if len(files) < 2:
        return
    normal = np.cross(ori[0][:3], ori[0][3:])
    pos = np.sort(np.array(ipps, dtype=float) @ normal)
    gaps = np.diff(pos)
    if (gaps < 1e-4).any():
        n = int((gaps < 1e-4).sum()) + 1
        raise InvalidInputError(
            f"{where} has several images at the same slice position ({n} at most; echoes, "
            "repetitions or duplicates); split them into one series per echo/repetition first"
        )
    mean = float(gaps.mean())
    if float(np.abs(gaps - mean).max()) > SPACING_TOLERANCE * mean:
        raise InvalidInputError(
            f"{where} has uneven slice spacing ({gaps.min():.4g} to {gaps.max():.4g} mm: "
            "missing slices or gaps); an averaged spacing would misplace slices - complete the "
            "series or convert the regular parts separately"
        )


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
            listed = ", ".join(f"{u} ({_describe_series(p, u, reader)})" for u in uids)
            msg = f"{str(p)!r} holds {len(uids)} series: {listed}; choose one with `series` UID"
            raise InvalidInputError(msg)
        series_uid = uids[0]
    elif series_uid not in uids:
        raise InvalidInputError(f"series {series_uid!r} is not in {str(p)!r}; it has {uids}")
    files = reader.GetGDCMSeriesFileNames(str(p), series_uid)
    check_series_geometry(files, where=f"series {series_uid} in {str(p)!r}")
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
