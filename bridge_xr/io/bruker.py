"""Bruker ParaVision (PV 6-360) reconstructed images: ``2dseq`` + ``visu_pars``, scanner geometry kept.

A ParaVision study holds scans (``<study>/<E>/``), each with reconstructions
(``<E>/pdata/<P>/2dseq`` and its ``visu_pars``). ``visu_pars`` is JCAMP-DX text: ``##$Name=value``
lines, arrays as ``( dims ) values`` over the following lines, strings in ``< >``, and the PV 6+
run-length form ``@n*(value)``.

Geometry, as ParaVision's own DICOM export writes it (ImagePositionPatient = ``VisuCorePosition``
of the frame, ImageOrientationPatient = the first two rows of ``VisuCoreOrientation``; patient
coordinates, LPS, millimetres): the rows of ``VisuCoreOrientation`` are the directions of the
read (x), phase (y) and slice axes, ``VisuCorePosition`` is the centre of each frame's first
voxel, voxel size = ``VisuCoreExtent / VisuCoreSize`` (slices: the distance between frame
positions, which must be regular, else refused). Values are ``raw * VisuCoreDataSlope +
VisuCoreDataOffs`` per frame. Multi-echo data (frame group ``FG_ECHO``) become channels named by
echo time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from bridge_xr._constants import SCANNER_RAS
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._geometry import itk_to_scanner
from bridge_xr.model.coords import RAS_ORIENTATION, CoordinateSystem, spatial_system
from bridge_xr.model.image import make_image
from bridge_xr.model.transforms import Affine, Transform

_WORD = {
    "_8BIT_UNSGN_INT": "u1",
    "_8BIT_SGN_INT": "i1",
    "_16BIT_SGN_INT": "i2",
    "_16BIT_UNSGN_INT": "u2",
    "_32BIT_SGN_INT": "i4",
    "_32BIT_UNSGN_INT": "u4",
    "_32BIT_FLOAT": "f4",
    "_64BIT_FLOAT": "f8",
}
_RLE = re.compile(r"@(\d+)\*\(([^)]*)\)")


def _values(text: str) -> list[str]:
    text = _RLE.sub(lambda m: " ".join([m.group(2).strip()] * int(m.group(1))), text)
    strings = re.findall(r"<([^>]*)>", text)
    if strings:
        return strings
    return text.replace(",", " ").split()


def read_jcamp(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parameters of a JCAMP-DX file (``visu_pars``, ``method``, ``acqp``): name -> str | list."""
    p = Path(path)
    try:
        text = p.read_text(encoding="latin-1")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {str(p)!r}: {exc.strerror}") from exc
    params: dict[str, Any] = {}
    for block in re.split(r"\n(?=##)", text):
        if not block.startswith("##$"):
            continue
        name, _, value = block[3:].partition("=")
        value = "\n".join(ln for ln in value.splitlines() if not ln.startswith("$$"))
        if value.lstrip().startswith("("):
            _head, _, rest = value.strip()[1:].partition(")")
            if rest.strip() or "<" in value:
                params[name.strip()] = _values(rest)
                continue
        params[name.strip()] = value.strip()
    return params


def _num(params: dict[str, Any], key: str, where: str, *, required: bool = True) -> np.ndarray:
    if key not in params:
        if required:
            raise InvalidInputError(f"{where} lacks {key}; is it a ParaVision 6+ visu_pars?")
        return np.array([])
    v = params[key]
    try:
        return np.array([float(x) for x in (v if isinstance(v, list) else v.split())])
    except ValueError:
        raise InvalidInputError(f"{where}: {key} is not numeric ({v!r})") from None


def find_reconstruction(folder: Path, scan: str | None = None) -> Path:
    """The ``pdata/<P>`` folder of a reconstruction, from a study, scan or pdata folder."""
    if (folder / "2dseq").is_file():
        return folder
    if scan is not None:
        e, _, proc = scan.partition("/")
        cand = folder / e / "pdata" / (proc or "1")
        if not (cand / "2dseq").is_file():
            cand = folder / "pdata" / e  # a scan folder with --series P
        if (cand / "2dseq").is_file():
            return cand
        raise InvalidInputError(f"no reconstruction {scan!r} (2dseq) under {str(folder)!r}")
    found = sorted(folder.glob("pdata/*/2dseq")) or sorted(folder.glob("*/pdata/*/2dseq"))
    if len(found) == 1:
        return found[0].parent
    if not found:
        raise InvalidInputError(f"no ParaVision 2dseq under {str(folder)!r}")
    names = [
        "/".join(f.parent.relative_to(folder).parts[::2][:2])
        if f.parent.relative_to(folder).parts[0] != "pdata"
        else f.parent.name
        for f in found
    ]
    raise InvalidInputError(
        f"{str(folder)!r} holds {len(found)} reconstructions ({', '.join(names)}); "
        "choose one with `series` (E/P: scan/reconstruction), e.g. " + names[0]
    )


def is_paravision(folder: Path) -> bool:
    """Whether a folder is (or contains) ParaVision reconstructions."""
    return (
        (folder / "2dseq").is_file()
        or any(folder.glob("pdata/*/2dseq"))
        or any(folder.glob("*/pdata/*/2dseq"))
    )


def read_paravision(
    folder: str | os.PathLike[str], *, scan: str | None = None
) -> tuple[xr.DataArray, dict[str, Any], list[tuple[CoordinateSystem, Transform]]]:
    """Read one reconstruction as an image (mm, z y x; echoes as channels) with its RAS affine.

    Returns ``(image, acquisition parameters, [(scanner_ras, affine)])``.
    """
    # long by design: ParaVision's visu_pars/reco fields are read and cross-checked in the order the format defines them
    rec = find_reconstruction(Path(folder), scan)
    where = str(rec / "visu_pars")
    if not (rec / "visu_pars").is_file():
        raise InvalidInputError(f"{str(rec)!r} has a 2dseq but no visu_pars; copy the whole scan")
    v = read_jcamp(rec / "visu_pars")
    dim = int(_num(v, "VisuCoreDim", where)[0])
    size = _num(v, "VisuCoreSize", where).astype(int)
    extent = _num(v, "VisuCoreExtent", where)
    if dim not in (2, 3) or len(size) != dim or len(extent) != dim:
        raise InvalidInputError(f"{where}: VisuCoreDim {dim} with size {size.tolist()}; 2D/3D only")
    n_frames = int(_num(v, "VisuCoreFrameCount", where, required=False)[:1].sum() or 1)
    word = str(v.get("VisuCoreWordType", "_16BIT_SGN_INT")).strip()
    if word not in _WORD:
        raise InvalidInputError(f"{where}: unsupported VisuCoreWordType {word!r}")
    order = str(v.get("VisuCoreByteOrder", "littleEndian")).strip()
    dtype = np.dtype(("<" if order == "littleEndian" else ">") + _WORD[word])
    n_frame_vox = int(np.prod(size))
    raw = np.fromfile(rec / "2dseq", dtype=dtype)
    if raw.size != n_frame_vox * n_frames:
        raise InvalidInputError(
            f"{str(rec / '2dseq')!r} holds {raw.size} values; visu_pars says "
            f"{n_frames} frames of {size.tolist()} ({n_frame_vox * n_frames}); is the file complete?"
        )
    frames = raw.reshape(n_frames, *size[::-1]).astype(np.float64)  # (frame, [z,] y, x)
    slope = _num(v, "VisuCoreDataSlope", where, required=False)
    offs = _num(v, "VisuCoreDataOffs", where, required=False)
    slope = np.resize(slope, n_frames) if slope.size else np.ones(n_frames)
    offs = np.resize(offs, n_frames) if offs.size else np.zeros(n_frames)
    scaled = bool((slope != 1).any() or (offs != 0).any())
    values = frames * slope.reshape(-1, *[1] * dim) + offs.reshape(-1, *[1] * dim)
    orient_v, pos_v = _num(v, "VisuCoreOrientation", where), _num(v, "VisuCorePosition", where)
    if orient_v.size != 9 * n_frames or pos_v.size != 3 * n_frames:
        raise InvalidInputError(
            f"{where}: VisuCoreOrientation/VisuCorePosition hold {orient_v.size}/{pos_v.size} "
            f"values; {n_frames} frames need {9 * n_frames}/{3 * n_frames}"
        )
    orient, pos = orient_v.reshape(-1, 3, 3), pos_v.reshape(-1, 3)
    if not np.allclose(orient, orient[0], atol=1e-6):
        raise InvalidInputError(f"{where}: frames have different orientations; not one volume")
    te = _num(v, "VisuAcqEchoTime", where, required=False)
    n_echo = len(te) if len(te) > 1 and n_frames % len(te) == 0 else 1
    echo_first = "FG_ECHO" in str(v.get("VisuFGOrderDesc", "")).split("FG_SLICE")[0]
    if n_echo > 1:  # frames = echoes x slices; which varies fastest is in VisuFGOrderDesc
        shape = (n_frames // n_echo, n_echo) if echo_first else (n_echo, n_frames // n_echo)
        values = values.reshape(*shape, *values.shape[1:])
        if echo_first:
            values = np.swapaxes(values, 0, 1)  # (echo, slice, ...)
        grid = pos.reshape(*shape, 3)
        pos = grid[:, 0] if echo_first else grid[0]  # one position per slice
    else:
        values = values[None]
    spacing_xy = extent[:2] / size[:2]
    d = orient[0].T  # columns: read, phase, slice directions (LPS)
    if dim == 3:
        if values.shape[1] != 1:
            raise InvalidInputError(
                f"{where}: {values.shape[1]} 3D frames per echo (repetitions?); bridge_xr reads one"
            )
        vol = values[:, 0]
        dz = float(extent[2] / size[2])
        origin = pos[0]
    else:
        vol = values  # (echo, slice, y, x)
        normal = d[:, 2]
        along = pos[: vol.shape[1]] @ normal
        step = np.diff(along)
        if vol.shape[1] > 1:
            if (step <= 0).any() and (step >= 0).any():
                raise InvalidInputError(f"{where}: slice positions are not monotonic")
            if float(np.abs(step - step.mean()).max()) > 0.01 * abs(float(step.mean())):
                raise InvalidInputError(
                    f"{where}: uneven slice spacing ({step.min():.4g} to {step.max():.4g} mm); "
                    "an averaged spacing would misplace slices"
                )
            dz = float(abs(step.mean()))
            if step.mean() < 0:  # slices run against the slice direction: flip it
                d = d.copy()
                d[:, 2] *= -1
        else:
            thick = _num(v, "VisuCoreFrameThickness", where, required=False)
            dz = float(thick[0]) if thick.size else 1.0
        origin = pos[0]
    vol = vol.astype(np.float32 if scaled or dtype.kind == "f" else dtype.newbyteorder("="))
    spacing = (dz, float(spacing_xy[1]), float(spacing_xy[0]))
    if vol.shape[0] == 1:
        img = make_image(vol[0], dims="zyx", spacing=spacing, unit="mm")
    else:
        names = [f"TE {t:g} ms" for t in te]
        img = make_image(vol, dims="czyx", spacing=spacing, unit="mm", channel_names=names)
    m = itk_to_scanner(d, origin)
    acq: dict[str, Any] = {
        "echo_time_ms": float(te[0]) if te.size else None,
        "echo_times_ms": [float(t) for t in te] if te.size > 1 else None,
        "repetition_time_ms": _first(v, "VisuAcqRepetitionTime"),
        "field_strength_T": _field_T(v),
        "sequence": str(v.get("VisuAcqSequenceName", "")).strip("<> ") or None,
        "protocol": str(v.get("VisuAcquisitionProtocol", "")).strip("<> ") or None,
        "reconstruction": str(rec),
    }
    ras = spatial_system(SCANNER_RAS, "mm", RAS_ORIENTATION)
    return img, acq, [(ras, Affine.from_matrix(m, name="paravision_affine"))]


def _first(v: dict[str, Any], key: str) -> float | None:
    try:
        return float(_num(v, key, "", required=False)[0])
    except (IndexError, InvalidInputError):
        return None


def _field_T(v: dict[str, Any]) -> float | None:
    mhz = _first(v, "VisuAcqImagingFrequency")
    return None if mhz is None else round(mhz / 42.577478518, 2)  # 1H gyromagnetic ratio, MHz/T
