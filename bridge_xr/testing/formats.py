"""Small files in vendor and foreign formats, written by each format's own writer or byte layout.

Test fixtures for the readers (DICOM by SimpleITK, CZI/LIF/ParaVision by their documented byte
layouts), small enough to make in a test.
"""

from __future__ import annotations

from pathlib import Path

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
