"""Write a phantom subject to disk the way a user would: raw files first, then ``convert``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile

from bridge_xr.io._geometry import scanner_to_nifti
from bridge_xr.io.convert import convert_microscopy, convert_mri
from bridge_xr.testing.phantom import Phantom, PhantomConfig, make_phantom


@dataclass(frozen=True)
class PhantomStudy:
    """Paths of a phantom study on disk."""

    root: Path
    raw: Path
    store: Path
    phantom: Phantom
    landmark_csvs: tuple[Path, ...]


def write_raw_files(ph: Phantom, raw: Path) -> dict[str, Path]:
    """NIfTI MRI and OME-TIFF 2P files as a scanner and a microscope would give them."""
    raw.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, img in ph.mri.items():
        data = np.asarray(img.values)
        zooms = (img.attrs["spacing"]["x"], img.attrs["spacing"]["y"], img.attrs["spacing"]["z"])
        affine = scanner_to_nifti(ph.mri_scanner_affine, zooms)
        nimg = nib.Nifti1Image(np.transpose(data, (2, 1, 0)), affine)
        nimg.header.set_xyzt_units("mm")
        nimg.set_qform(affine, code=1)
        nimg.set_sform(affine, code=1)
        files[name] = raw / f"{name}.nii.gz"
        nib.save(nimg, str(files[name]))
    sp = ph.twophoton.attrs["spacing"]
    for ci, channel in enumerate(("angiogram", "glioma")):
        files[channel] = raw / f"{channel}.ome.tif"
        tifffile.imwrite(
            files[channel],
            np.asarray(ph.twophoton.values[ci]),
            ome=True,
            metadata={
                "axes": "ZYX",
                "PhysicalSizeX": sp["x"],
                "PhysicalSizeY": sp["y"],
                "PhysicalSizeZ": sp["z"],
                "PhysicalSizeXUnit": "µm",
                "PhysicalSizeYUnit": "µm",
                "PhysicalSizeZUnit": "µm",
            },
        )
    return files


def write_phantom_study(
    root: Path, config: PhantomConfig | None = None, *, subject: str = "M001", session: str = "d060"
) -> PhantomStudy:
    """Make a phantom, write its raw files, convert them into ``root/study/<subject>.ome.zarr``."""
    ph = make_phantom(config)
    raw = root / "raw"
    files = write_raw_files(ph, raw)
    store = root / "study" / f"{subject}.ome.zarr"
    store.parent.mkdir(parents=True, exist_ok=True)
    convert_mri(files["T2w"], store, f"invivo_mri/{session}/T2w", overwrite=True)
    convert_mri(files["T2star"], store, f"invivo_mri/{session}/T2star", overwrite=True)
    convert_microscopy(files["angiogram"], store, f"twophoton/{session}/angiogram", overwrite=True)
    convert_microscopy(files["glioma"], store, f"twophoton/{session}/glioma", overwrite=True)
    csvs = []
    for i, df in enumerate(ph.landmarks):
        path = root / f"landmarks_rater{i + 1}.csv"
        df.to_csv(path, index=False)
        csvs.append(path)
    return PhantomStudy(root, raw, store, ph, tuple(csvs))
