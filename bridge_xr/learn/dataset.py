"""nnU-Net v2 raw dataset export: registered MRI crops with microscopy vessel truth.

For every subject store and session with an MRI sequence and a registered microscopy truth:

1. the MRI is resampled (linear) onto the export grid (default 25 x 25 x 100 µm, the paper's) and
   stored as ``learn/<session>/<sequence>_grid``, linked to the MRI by an identity edge;
2. the truth microscopy is integrated into that grid (density per voxel, through the
   registrations) and binarised: vessel where at least ``min_fraction`` of the voxel is vessel;
3. crops are taken from a crop list, or automatically: tiles of ``crop_yx`` voxels (all z) that
   the microscopy covers completely and that hold at least ``min_vessel`` vessel voxels; where
   the registrations carry bootstrap TRE maps (``bridge register --tre-map``), the tiles with the
   lowest mean registration error go first and tiles above ``max_tre_um`` are left out;
4. each crop becomes ``imagesTr/<case>_0000.nii.gz`` + ``labelsTr/<case>.nii.gz`` (voxel size in
   mm), and ``bridge_xr/diameters/<case>.nii.gz``: per voxel the vessel-weighted mean diameter
   (µm) of the microscopy vessels inside it, measured at the microscopy's own resolution (local
   thickness), for the vessel-wise evaluation; with ``dataset.json``, ``splits_final.json`` (folds grouped by subject: crops of one mouse
   are never in both train and validation) and ``cases.csv`` (case -> subject, session, crop).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bridge_xr.errors import InvalidInputError
from bridge_xr.extract.densities import density
from bridge_xr.extract.footprint import Method
from bridge_xr.io._store import resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.io.study import subject_name, subject_stores
from bridge_xr.io.subject import add_image, read_subject
from bridge_xr.learn.crops import (
    CROP_COLUMNS,
    Case,
    _auto_crops,
    _derangement,
    _link_identity,
    group_splits,
    microscopy_diameter,
    tre_on_grid,
)
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.model.units import conversion_factor
from bridge_xr.scene.chains import Via, used_registrations, with_via


def _export_grid(
    st: Any, mri: str, session: str, sequence: str, spacing_um: Sequence[float]
) -> str:
    """Resample the MRI onto the export grid once; link it to the MRI by an identity edge."""
    from bridge_xr.resampling.blockwise import resample

    path = f"learn/{session}/{sequence}_grid"
    known = read_subject(st).images.get(path)
    if known is not None:
        have = read_image(st, path)
        fac = conversion_factor(have.attrs["unit"], "micrometer")
        sp = [float(have.attrs["spacing"][d]) * fac for d in "zyx"]
        if np.allclose(sp, spacing_um, rtol=1e-6):
            return path  # made before at this spacing
    img = resample(st, moving=mri, onto=mri, spacing_um=tuple(spacing_um), order=1)  # type: ignore[arg-type]
    add_image(
        st,
        img,
        ImageMetadata(
            path=path,
            modality="mri",
            session=session,
            source=f"{mri} resampled to {tuple(spacing_um)} µm (z, y, x)",
            provenance=Provenance.now("learn export grid", **img.attrs["resample"]),
        ),
        shards=False,
        overwrite=known is not None,
    )
    _link_identity(st, path, mri, f"learn_{session}_{sequence}_grid")
    return path


def _work_store(store_path: str | Path, output: str | Path) -> Any:
    """A subject store of an object-store study, with the export's own images kept locally.

    The export grid and diameter maps go to ``output/bridge_xr-work/<store>``: an archive is
    read, never written.
    """
    from bridge_xr.io.locations import is_remote, name_of
    from bridge_xr.io.overlay import OverlayStore

    if not is_remote(store_path):
        return None
    from zarr.storage import LocalStore

    work = Path(output) / "bridge_xr-work" / name_of(store_path)
    work.mkdir(parents=True, exist_ok=True)
    return OverlayStore(resolve_store(str(store_path), read_only=True), LocalStore(work))


def _write_nifti(path: Path, data: np.ndarray, spacing_um: Sequence[float]) -> None:
    zooms_mm = [float(s) / 1000 for s in spacing_um][::-1]  # x, y, z
    img = nib.Nifti1Image(
        np.ascontiguousarray(np.transpose(data, (2, 1, 0))), np.diag([*zooms_mm, 1])
    )
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))


@with_via
def export_dataset(
    study: str | Path,
    output: str | Path,
    *,
    mri_sequence: str = "T2w",
    truth: str = "angiogram",
    spacing_um: Sequence[float] = (100.0, 25.0, 25.0),
    crops: pd.DataFrame | None = None,
    dataset_id: int = 501,
    name: str = "BridgeVessel",
    truth_threshold: float | None = None,
    min_fraction: float = 0.5,
    crop_yx: int = 32,
    min_vessel: int = 10,
    n_folds: int = 5,
    method: Method = "resliced",
    negative_control: bool = False,
    seed: int = 0,
    max_tre_um: float | None = None,
    diameters: bool = True,
    via: Via = None,
    live: bool = False,
) -> Path:
    """Write ``output/Dataset<ID>_<name>`` in nnU-Net v2 raw format; returns its folder.

    ``via``: registration names preferred where several chains join an MRI and its microscopy
    (each name applies to the chains it lies on); ``bridge_xr/provenance.json`` records the
    registrations used.

    Parameters
    ----------
    study : str or path
        Folder of registered subject stores.
    output : str or path
        ``nnUNet_raw``-style folder.
    mri_sequence, truth : str
        MRI sequence name and microscopy channel giving the labels.
    spacing_um : (z, y, x)
        Export grid.
    crops : DataFrame, optional
        Explicit crops (default: automatic, fully covered tiles with enough vessel).
    dataset_id, name : int, str
        nnU-Net dataset id (1-999) and name.
    truth_threshold, min_fraction : float
        Binarise the microscopy; label a voxel vessel above this fraction.
    crop_yx, min_vessel, n_folds : int
        Crop size, least vessel voxels per crop, cross-validation folds (grouped by subject).
    method : {'exact', 'resliced', 'bilinear'}
        Density method.
    negative_control : bool
        Shuffle labels between crops (the paper's control).
    seed : int
        Random seed.
    max_tre_um : float, optional
        Drop crops whose mean TRE is larger.
    diameters : bool
        Also write 2P diameter maps.
    via : str or list of str, optional
        Preferred registration names.
    live : bool
        Read an ``s3://`` study that has no archive manifest (``study`` may be an archive).

    Returns
    -------
    Path
        The dataset folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing.phantom import PhantomConfig
    >>> from bridge_xr.testing.study import write_analysis_study
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_analysis_study(root, ("M001", "M002"), PhantomConfig.tiny())
    >>> out = export_dataset(root / "study", root / "raw", n_folds=2, spacing_um=(30, 30, 30),
    ...                      crop_yx=4, min_vessel=1)
    >>> out.name, (out / "dataset.json").is_file()
    ('Dataset501_BridgeVessel', True)
    """
    if not 1 <= dataset_id <= 999:
        raise InvalidInputError(f"`dataset_id` must be 1..999; got {dataset_id}")
    folder = Path(output) / f"Dataset{dataset_id:03d}_{name}"
    if folder.exists():
        raise InvalidInputError(f"{folder} exists; remove it or choose another `dataset_id`")
    if crops is not None:
        missing = set(CROP_COLUMNS) - set(crops.columns)
        if missing:
            raise InvalidInputError(f"the crop list lacks columns {sorted(missing)}")
    opts = _Export(
        mri_sequence=mri_sequence, truth=truth, spacing_um=tuple(spacing_um), crops=crops,
        truth_threshold=truth_threshold, min_fraction=min_fraction, crop_yx=crop_yx,
        min_vessel=min_vessel, method=method, max_tre_um=max_tre_um, diameters=diameters,
    )  # fmt: skip
    found = _Found()
    for store_path in subject_stores(study, live=live):
        opts.collect(store_path, found, _work_store(store_path, output))
    if not found.cases:
        raise InvalidInputError(
            f"no crops: no subject in {str(study)!r} has an MRI {mri_sequence!r} with registered "
            f"{truth!r} microscopy covering a {crop_yx}x{crop_yx} tile"
            + (f" with mean TRE <= {max_tre_um:g} µm" if max_tre_um is not None else "")
            + " (try a smaller --crop-size"
            + (" or a larger `max_tre_um`)" if max_tre_um is not None else ")")
        )
    label_from = list(range(len(found.images)))
    if negative_control:
        label_from = _derangement(found.images, seed)
    tmp = folder.with_name(folder.name + ".tmp")
    try:
        _write_cases(tmp, found, label_from, opts.spacing_um)
        _write_metadata(tmp, found.cases, label_from, group_splits(found.cases, n_folds),
                        opts, name=name, negative_control=negative_control, study=study)  # fmt: skip
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
        raise
    tmp.rename(folder)
    return folder


@dataclass
class _Found:
    """Crops collected over the study, in order."""

    cases: list[Case] = field(default_factory=list)
    images: list[tuple[Case, np.ndarray, np.ndarray]] = field(default_factory=list)
    diameters: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class _Export:
    """The options of one export, and how one subject's sessions become crops."""

    mri_sequence: str
    truth: str
    spacing_um: tuple[float, ...]
    crops: pd.DataFrame | None
    truth_threshold: float | None
    min_fraction: float
    crop_yx: int
    min_vessel: int
    method: Method
    max_tre_um: float | None
    diameters: bool

    def _sessions(self, meta: Any) -> list[tuple[str, str, str]]:
        """``(mri path, session, truth path)`` of every MRI with its truth microscopy."""
        out = []
        for path, img_meta in sorted(meta.images.items()):
            if img_meta.modality != "mri" or not path.endswith(f"/{self.mri_sequence}"):
                continue
            if path.startswith("learn/"):
                continue
            session = img_meta.session or path.split("/")[-2]
            truth_path = next(
                (p for p in meta.images if p.endswith(f"/{self.truth}") and f"/{session}/" in f"/{p}"
                 and meta.images[p].modality != "mri" and not p.startswith("registered/")),
                None,
            )  # fmt: skip
            if truth_path is not None:
                out.append((path, session, truth_path))
        return out

    def collect(self, store_path: str | Path, found: _Found, st: Any = None) -> None:
        """Add the crops of every session of one subject store (opened as ``st``, if given)."""
        st = st if st is not None else resolve_store(str(store_path))
        meta = read_subject(st)
        subject = subject_name(st, str(store_path))
        for path, session, truth_path in self._sessions(meta):
            grid = _export_grid(st, path, session, self.mri_sequence, self.spacing_um)
            mri_arr = np.asarray(read_image(st, grid).values, dtype=np.float32)
            ds = density(st, microscopy=truth_path, mri=grid, threshold=self.truth_threshold,
                         method=self.method)  # fmt: skip
            frac = np.nan_to_num(np.asarray(ds["fraction"].values), nan=0.0)
            covered = np.asarray(ds["coverage"].values) >= 0.999
            label = ((frac >= self.min_fraction) & covered).astype(np.uint8)
            diam = self._diameter(st, truth_path, session, grid, frac) if self.diameters else None
            tre = tre_on_grid(st, grid, truth_path)
            for k, box in enumerate(self._boxes(subject, session, covered, label, tre)):
                z0, z1, y0, y1, x0, x1 = box
                err = float(np.mean(tre[z0:z1, y0:y1, x0:x1])) if tre is not None else None
                case = Case(f"{subject}_{session}_{k:03d}", subject, session, str(store_path),
                            box, err)  # fmt: skip
                sl = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
                found.cases.append(case)
                found.images.append((case, mri_arr[sl], label[sl]))
                if diam is not None:
                    found.diameters[case.case] = diam[sl]

    def _diameter(self, st: Any, truth_path: str, session: str, grid: str,
                  frac: np.ndarray) -> np.ndarray:  # fmt: skip
        """The vessel-weighted mean microscopy diameter per export voxel."""
        dpath = microscopy_diameter(st, truth_path, session, self.truth_threshold)
        dd = density(st, microscopy=dpath, mri=grid, threshold=None, method=self.method)
        dsum = np.nan_to_num(np.asarray(dd["fraction"].values), nan=0.0)
        return np.where(frac > 0, dsum / np.maximum(frac, 1e-12), 0.0).astype(np.float32)

    def _boxes(self, subject: str, session: str, covered: np.ndarray, label: np.ndarray,
               tre: np.ndarray | None) -> list[tuple[int, ...]]:  # fmt: skip
        """The crops of one session: the given list, or automatic tiles; checked in bounds."""
        if self.crops is None:
            return _auto_crops(covered, label, self.crop_yx, self.min_vessel, tre, self.max_tre_um)
        rows = self.crops[(self.crops["subject"].astype(str) == subject)
                          & (self.crops["session"].astype(str) == session)]  # fmt: skip
        boxes: list[tuple[int, ...]] = [
            tuple(int(r[c]) for c in CROP_COLUMNS[2:]) for _, r in rows.iterrows()
        ]
        for box in boxes:
            z0, z1, y0, y1, x0, x1 = box
            if not (0 <= z0 < z1 <= label.shape[0] and 0 <= y0 < y1 <= label.shape[1]
                    and 0 <= x0 < x1 <= label.shape[2]):  # fmt: skip
                raise InvalidInputError(
                    f"crop {box} of {subject}/{session} is outside the export grid {label.shape}"
                )
        return boxes


def _write_cases(tmp: Path, found: _Found, label_from: list[int],
                 spacing_um: Sequence[float]) -> None:  # fmt: skip
    """imagesTr/, labelsTr/ and the microscopy diameters that travel with each label."""
    (tmp / "imagesTr").mkdir(parents=True, exist_ok=True)
    (tmp / "labelsTr").mkdir(parents=True, exist_ok=True)
    for (case, img, _), src in zip(found.images, label_from, strict=True):
        _write_nifti(tmp / "imagesTr" / f"{case.case}_0000.nii.gz", img, spacing_um)
        _write_nifti(tmp / "labelsTr" / f"{case.case}.nii.gz", found.images[src][2], spacing_um)
        label_case = found.images[src][0].case
        if label_case in found.diameters:
            (tmp / "bridge_xr" / "diameters").mkdir(parents=True, exist_ok=True)
            _write_nifti(tmp / "bridge_xr" / "diameters" / f"{case.case}.nii.gz",
                         found.diameters[label_case], spacing_um)  # fmt: skip


def _write_metadata(
    tmp: Path,
    cases: list[Case],
    label_from: list[int],
    splits: Any,
    opts: _Export,
    *,
    name: str,
    negative_control: bool,
    study: str | Path,
) -> None:
    """dataset.json, splits_final.json, cases.csv and bridge_xr/provenance.json."""
    description = (
        f"bridge_xr: {opts.mri_sequence} MRI with {opts.truth} microscopy truth "
        f"(fraction >= {opts.min_fraction}), {tuple(opts.spacing_um)} µm (z, y, x)"
    )
    if negative_control:
        description += (
            "; NEGATIVE CONTROL: every image is paired with another crop's label (same shape)"
        )
    dataset_json = {
        "channel_names": {"0": opts.mri_sequence},
        "labels": {"background": 0, "vessel": 1},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "name": name,
        "description": description,
        "reference": "BRIDGE (bridge_xr export)",
    }
    (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    (tmp / "splits_final.json").write_text(json.dumps(splits, indent=2))
    rows = [
        {"case": c.case, "subject": c.subject, "session": c.session, "store": c.store,
         **dict(zip(CROP_COLUMNS[2:], c.crop, strict=True)),
         "label_from": cases[src].case, "tre_um": c.tre_um}
        for c, src in zip(cases, label_from, strict=True)
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp / "cases.csv", index=False)
    (tmp / "bridge_xr").mkdir(exist_ok=True)
    prov = Provenance.now(
        "learn export", inputs=(str(study),), mri_sequence=opts.mri_sequence, truth=opts.truth,
        spacing_um=list(opts.spacing_um), registrations=used_registrations(),
    )  # fmt: skip
    (tmp / "bridge_xr" / "provenance.json").write_text(prov.model_dump_json(indent=2))


def verify(folder: Path) -> None:
    """nnU-Net's own ``verify_dataset_integrity`` in a subprocess (its paths are import-time)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "nnUNet_raw": str(folder.parent), "nnUNet_preprocessed": str(folder.parent),
           "nnUNet_results": str(folder.parent)}  # fmt: skip
    code = (
        "import sys; from nnunetv2.experiment_planning.verify_dataset_integrity import "
        "verify_dataset_integrity; verify_dataset_integrity(sys.argv[1], 1)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, capture_output=True,
                          text=True, encoding="utf-8", errors="replace", check=False)  # fmt: skip
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise InvalidInputError(f"nnU-Net's integrity check failed for {folder}: {' '.join(tail)}")
