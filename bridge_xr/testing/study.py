"""Write a phantom subject to disk the way a user would: raw files first, then ``convert``."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
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


def exact_landmarks(ph: Phantom, n: int = 30, seed: int = 3) -> pd.DataFrame:
    """``n`` landmarks inside the 2P field of view with their exact MRI positions (canonical CSV)."""
    fov = np.asarray(ph.config.twop_fov_um)
    q = np.random.default_rng(seed).uniform(0.05 * fov, 0.95 * fov, size=(n, 3))  # 2P zyx µm
    p = ph.truth.inverse(q)
    return pd.DataFrame(
        {
            "name": [f"L{i}" for i in range(n)],
            "moving_x": q[:, 2],
            "moving_y": q[:, 1],
            "moving_z": q[:, 0],
            "fixed_x": p[:, 2],
            "fixed_y": p[:, 1],
            "fixed_z": p[:, 0],
        }
    )


def write_analysis_study(
    root: Path,
    subjects: tuple[str, ...] = ("M001",),
    config: PhantomConfig | None = None,
    *,
    session: str = "d060",
) -> list[PhantomStudy]:
    """Subjects (seeds 0, 1, ...) converted and TPS-registered (angiogram and glioma channels)."""
    from bridge_xr.register.registration import register

    cfg = config or PhantomConfig.small()
    out = []
    for i, subject in enumerate(subjects):
        sub_cfg = PhantomConfig(**{**cfg.__dict__, "seed": cfg.seed + i})
        st = write_phantom_study(root / subject, sub_cfg, subject=subject, session=session)
        target = root / "study" / f"{subject}.ome.zarr"
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        st.store.rename(target)
        st = PhantomStudy(st.root, st.raw, target, st.phantom, st.landmark_csvs)
        lm = exact_landmarks(st.phantom)
        for ch in ("angiogram", "glioma"):
            register(
                target,
                fixed=f"invivo_mri/{session}/T2w",
                moving=f"twophoton/{session}/{ch}",
                landmarks=lm,
                model="tps",
                name=f"{ch}_to_mri",
            )
        out.append(st)
    return out


@dataclass(frozen=True)
class LongitudinalStudy:
    """A subject imaged in several sessions; later MRIs moved by known rigid motions."""

    store: Path
    sessions: tuple[str, ...]
    phantoms: tuple[Phantom, ...]
    #: per session: (R, t) with first-session MRI intrinsic µm zyx p = R @ p_later + t
    motions: tuple[tuple[np.ndarray, np.ndarray], ...]


def _rotation_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    r = np.eye(3)
    r[1:, 1:] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]  # about z (in the y-x plane)
    return r


def write_longitudinal_study(
    root: Path,
    *,
    subject: str = "M001",
    sessions: tuple[tuple[str, float], ...] = (("d060", 80.0), ("d074", 105.0)),
    motion: tuple[float, tuple[float, float, float]] = (3.0, (10.0, -15.0, 20.0)),
    config: PhantomConfig | None = None,
) -> LongitudinalStudy:
    """One subject, a session per ``(name, glioma sigma µm)``: the glioma grows, the vessels stay.

    Later sessions' MRI data are resampled by a rigid motion (rotation about z by ``motion[0]``
    degrees, ``motion[1]`` µm zyx translation, times the session index), as if the animal lay
    differently in the scanner; their 2P images are registered with exact landmarks.
    """
    import dataclasses

    from scipy.ndimage import affine_transform

    from bridge_xr.register.registration import register

    cfg = config or PhantomConfig.small()
    store = root / "study" / f"{subject}.ome.zarr"
    store.parent.mkdir(parents=True, exist_ok=True)
    phantoms, motions = [], []
    for k, (session, sigma) in enumerate(sessions):
        ph = make_phantom(PhantomConfig(**{**cfg.__dict__, "glioma_sigma_um": sigma}))
        rot = _rotation_z(motion[0] * k)
        t = np.asarray(motion[1], dtype=np.float64) * k
        if k:
            sp = ph.config.mri_spacing_um
            moved = {
                name: img.copy(
                    data=affine_transform(
                        np.asarray(img.values), rot, offset=t / sp, order=1, mode="nearest"
                    )
                )
                for name, img in ph.mri.items()
            }
            ph = dataclasses.replace(ph, mri=moved)
        files = write_raw_files(ph, root / subject / "raw" / session)
        convert_mri(files["T2w"], store, f"invivo_mri/{session}/T2w", overwrite=True)
        for ch in ("angiogram", "glioma"):
            convert_microscopy(files[ch], store, f"twophoton/{session}/{ch}", overwrite=True)
        lm = exact_landmarks(ph)
        p = lm[["fixed_z", "fixed_y", "fixed_x"]].to_numpy()
        p_later = (p - t) @ rot  # R^T (p - t), row vectors
        lm[["fixed_z", "fixed_y", "fixed_x"]] = p_later
        for ch in ("angiogram", "glioma"):
            register(
                store,
                fixed=f"invivo_mri/{session}/T2w",
                moving=f"twophoton/{session}/{ch}",
                landmarks=lm,
                model="tps",
                name=f"{ch}_{session}_to_mri",
            )
        phantoms.append(ph)
        motions.append((rot, t))
    return LongitudinalStudy(store, tuple(s for s, _ in sessions), tuple(phantoms), tuple(motions))
