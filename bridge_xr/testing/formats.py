"""Small files in vendor and foreign formats, written by each format's own writer or byte layout.

Test fixtures for the readers (DICOM by SimpleITK, CZI/LIF/ParaVision by their documented byte
layouts), small enough to make in a test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk


def rotation(deg_x: float, deg_z: float) -> np.ndarray:
    """Rotation about x then z (degrees), as a 3x3 matrix."""
    a, c = np.deg2rad(deg_x), np.deg2rad(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ rx


def write_dicom_series(folder: Path, *, oblique: bool = True, n_slices: int = 6) -> sitk.Image:
    """A DICOM MR series made with SimpleITK (one file per slice, oblique geometry)."""
    rng = np.random.default_rng(2)
    arr = rng.integers(0, 4000, size=(n_slices, 16, 20)).astype(np.int16)
    vol = sitk.GetImageFromArray(arr)
    vol.SetSpacing((0.08, 0.1, 0.4))
    vol.SetOrigin((-5.5, 3.25, 12.0))
    d = rotation(12.0, 30.0) if oblique else np.eye(3)
    vol.SetDirection(tuple(d.ravel()))
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.1234567"
    for k in range(n_slices):
        sl = vol[:, :, k]
        sl.SetMetaData("0008|0060", "MR")
        sl.SetMetaData("0020|000e", series_uid)
        sl.SetMetaData("0020|000d", series_uid + ".9")
        sl.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0018|0087", "9.4")
        sl.SetMetaData("0018|0081", "33")
        sl.SetMetaData("0020|0037", "\\".join(f"{v:.10f}" for v in (*d[:, 0], *d[:, 1])))
        pos = vol.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in pos))
        sl.SetMetaData("0018|0050", "0.4")
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    return vol


def write_paravision(
    scan: Path,
    data: np.ndarray,
    *,
    spacing_zyx_mm: tuple[float, float, float],
    orientation: np.ndarray,
    first_voxel_lps: np.ndarray,
    slope: float | np.ndarray = 1.0,
    offset: float | np.ndarray = 0.0,
    echo_times_ms: tuple[float, ...] = (3.2,),
    repetition_time_ms: float = 2500.0,
    three_d: bool = False,
    echo_first: bool = True,
    word: str = "_16BIT_SGN_INT",
) -> Path:
    """A ParaVision 6+ reconstruction ``<scan>/pdata/1/{2dseq,visu_pars}`` by its byte layout.

    ``data`` is raw (echo, z, y, x) in the 2dseq word type; 2D data become one frame per slice
    (and echo), frame positions stepping along the slice direction (row 2 of ``orientation``).
    """
    rec = scan / "pdata" / "1"
    rec.mkdir(parents=True, exist_ok=True)
    n_echo, nz, ny, nx = data.shape
    dz, dy, dx = spacing_zyx_mm
    orient = np.asarray(orientation, float)
    if three_d:
        frames = [data[e] for e in range(n_echo)]
        pos = [np.asarray(first_voxel_lps, float)] * n_echo
        size, extent = [nx, ny, nz], [nx * dx, ny * dy, nz * dz]
    else:
        order = (
            [(k, e) for k in range(nz) for e in range(n_echo)]
            if echo_first
            else [(k, e) for e in range(n_echo) for k in range(nz)]
        )
        frames = [data[e, k] for k, e in order]
        pos = [np.asarray(first_voxel_lps, float) + k * dz * orient[2] for k, _ in order]
        size, extent = [nx, ny], [nx * dx, ny * dy]
    n = len(frames)
    dtype = {"_16BIT_SGN_INT": "<i2", "_32BIT_SGN_INT": "<i4", "_32BIT_FLOAT": "<f4"}[word]
    np.concatenate([f.ravel() for f in frames]).astype(dtype).tofile(rec / "2dseq")
    sl = np.resize(np.asarray(slope, float), n)
    of = np.resize(np.asarray(offset, float), n)
    fg = (
        "(2) (<FG_ECHO>, <>, 0, 0) (<FG_SLICE>, <>, 0, 0)"
        if echo_first
        else ("(2) (<FG_SLICE>, <>, 0, 0) (<FG_ECHO>, <>, 0, 0)")
    )

    def arr(values: Any) -> str:
        toks = [f"{v:.12g}" for v in np.ravel(values)]
        return "\n".join(" ".join(toks[i : i + 6]) for i in range(0, len(toks), 6))

    lines = [
        "##TITLE=Parameter List, ParaVision 360 V3.5",
        "##JCAMPDX=4.24",
        "##$VisuVersion=3",
        f"##$VisuCoreFrameCount={n}",
        f"##$VisuCoreDim={3 if three_d else 2}",
        f"##$VisuCoreSize=( {len(size)} )\n{arr(size)}",
        f"##$VisuCoreExtent=( {len(extent)} )\n{arr(extent)}",
        f"##$VisuCoreFrameThickness=( 1 )\n{dz:.12g}",
        f"##$VisuCoreWordType={word}",
        "##$VisuCoreByteOrder=littleEndian",
        f"##$VisuCoreDataSlope=( {n} )\n{arr(sl)}",
        f"##$VisuCoreDataOffs=( {n} )\n{arr(of)}",
        f"##$VisuCoreOrientation=( {n}, 9 )\n{arr(np.tile(orient.ravel(), n))}",
        f"##$VisuCorePosition=( {n}, 3 )\n{arr(np.ravel(pos))}",
        f"##$VisuCoreUnits=( {len(size)}, 65 )\n" + " ".join(["<mm>"] * len(size)),
        f"##$VisuAcqEchoTime=( {len(echo_times_ms)} )\n{arr(echo_times_ms)}",
        f"##$VisuAcqRepetitionTime=( 1 )\n{repetition_time_ms:.12g}",
        "##$VisuAcqImagingFrequency=400.3",
        "##$VisuAcqSequenceName=( 65 )\n<Bruker:MGE>",
        f"##$VisuFGOrderDesc=( 2 )\n{fg}",
        "##END=",
    ]
    (rec / "visu_pars").write_text("\n".join(lines) + "\n", encoding="latin-1")
    return rec
