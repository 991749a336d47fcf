"""nnU-Net v2 (2.6.0, the 2D configuration) from bridge_xr: plan, train, predict.

nnU-Net reads its three folders from environment variables at import time, so planning and
training run in subprocesses with their own environment; every step's output stays in the
``work`` folder next to the dataset. Training uses a subclass of ``nnUNetTrainer`` that only
changes the schedule (epochs, iterations per epoch) and keeps the class name, so checkpoints load
with nnU-Net's own predictor and tools (``nnUNetv2_predict_from_modelfolder``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge_xr.errors import InvalidInputError

CONFIG = "2d"


def _dataset_id(folder: Path) -> int:
    name = folder.name
    if not (name.startswith("Dataset") and name[7:10].isdigit()):
        raise InvalidInputError(
            f"{str(folder)!r} is not an nnU-Net dataset folder (DatasetXXX_Name)"
        )
    return int(name[7:10])


def environment(dataset: Path, work: Path, *, augment_workers: int = 1) -> dict[str, str]:
    """nnU-Net's folders (raw = the dataset's parent) and small-machine settings."""
    return {
        **os.environ,
        "nnUNet_raw": str(dataset.parent.resolve()),
        "nnUNet_preprocessed": str((work / "preprocessed").resolve()),
        "nnUNet_results": str((work / "results").resolve()),
        "nnUNet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA", str(augment_workers)),  # noqa: SIM112
        "nnUNet_def_n_proc": os.environ.get("nnUNet_def_n_proc", "2"),  # noqa: SIM112
        "nnUNet_compile": "false",
    }


def _run(args: list[str], env: dict[str, str], what: str) -> str:
    done = subprocess.run(
        args,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    if done.returncode:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise InvalidInputError(f"nnU-Net {what} failed: {lines[-1] if lines else 'no output'}")
    return done.stdout


def plan(dataset: Path, work: Path) -> Path:
    """``nnUNetv2_plan_and_preprocess -c 2d`` (with the integrity check) + our grouped splits."""
    did = _dataset_id(dataset)
    env = environment(dataset, work)
    code = (
        "import sys; from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints import "
        "plan_and_preprocess_entry as f; sys.argv = ['x', '-d', sys.argv[1], '-c', '2d', "
        "'--verify_dataset_integrity', '-np', '1', '-npfp', '1']; f()"
    )
    _run([sys.executable, "-c", code, str(did)], env, "planning")
    pre = work / "preprocessed" / dataset.name
    splits = dataset / "splits_final.json"
    if splits.exists():
        shutil.copy(splits, pre / "splits_final.json")
    return pre


def train(
    dataset: Path,
    work: Path,
    fold: int,
    *,
    device: str = "cpu",
    epochs: int = 1000,
    iterations: int = 250,
) -> Path:
    """Train one fold; returns the fold folder (checkpoints, log, validation)."""
    did = _dataset_id(dataset)
    if device not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(f"`device` is cpu, cuda or mps; got {device!r}")
    env = environment(dataset, work, augment_workers=0 if device == "cpu" else 4)
    _run(
        [sys.executable, "-m", "bridge_xr.learn._train_worker", str(did), str(fold), device,
         str(epochs), str(iterations)],
        env,
        f"training (fold {fold})",
    )  # fmt: skip
    return model_folder(dataset, work) / f"fold_{fold}"


def model_folder(dataset: Path, work: Path) -> Path:
    """Where nnU-Net puts the trained model of the 2D configuration."""
    return work / "results" / dataset.name / f"nnUNetTrainer__nnUNetPlans__{CONFIG}"


def check_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint without executing code (``weights_only=True``) and check it is nnU-Net's.

    A truncated file, a non-checkpoint or one from another tool gives one clear error.
    """
    import torch

    if not path.is_file():
        raise InvalidInputError(f"no checkpoint at {str(path)!r}; train the fold first")
    # nnU-Net stores a few numpy scalars (losses, EMA) next to the tensors: allow exactly those
    safe = [np._core.multiarray.scalar, np.dtype] + [
        type(np.dtype(t))
        for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)
    ]
    try:
        with torch.serialization.safe_globals(safe):  # type: ignore[arg-type]
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidInputError(
            f"{str(path)!r} is not a loadable checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120]}); re-train or re-download it"
        ) from None
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt or "trainer_name" not in ckpt:
        raise InvalidInputError(f"{str(path)!r} is not an nnU-Net checkpoint (no network_weights)")
    return ckpt


def checkpoint_hash(path: Path) -> str:
    """SHA-256 of a checkpoint file (recorded with every prediction)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def predict(
    model: Path,
    image: np.ndarray,
    spacing_um: Sequence[float],
    *,
    folds: Sequence[int] = (0,),
    checkpoint: str = "checkpoint_final.pth",
    device: str = "cpu",
) -> np.ndarray:
    """Segment a (z, y, x) image with the trained model (in process, nnU-Net's predictor)."""
    for f in folds:
        check_checkpoint(model / f"fold_{f}" / checkpoint)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(var, str(model))  # nnU-Net only reads them; silence its warnings
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=False,
        perform_everything_on_device=device != "cpu",
        device=torch.device(device),
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(model), tuple(folds), checkpoint)
    spacing_mm = [float(s) / 1000 for s in spacing_um]
    seg = predictor.predict_single_npy_array(
        np.asarray(image, dtype=np.float32)[None], {"spacing": spacing_mm}, None, None, False
    )
    return np.asarray(seg, dtype=np.uint8)


def _validation_cases(model: Path, dataset: Path) -> Iterator[tuple[int, str, Any, Any, Any, Any]]:
    """(fold, case, truth, prediction, mri, spacing) of every trained fold's validation output."""
    import nibabel as nib

    from bridge_xr.learn.masks import read_mask

    for fold_dir in sorted(model.glob("fold_*")):
        for pred in sorted((fold_dir / "validation").glob("*.nii.gz")):
            case = pred.name.removesuffix(".nii.gz")
            truth = dataset / "labelsTr" / pred.name
            if not truth.exists():
                continue
            a, sp = read_mask(str(truth))
            b = np.asarray(nib.load(str(pred)).get_fdata()).transpose(2, 1, 0)  # type: ignore[attr-defined]
            image = dataset / "imagesTr" / f"{case}_0000.nii.gz"
            mri = np.asarray(nib.load(str(image)).get_fdata(), dtype=np.float32).transpose(2, 1, 0)  # type: ignore[attr-defined]
            yield int(fold_dir.name.split("_")[1]), case, a, b, mri, sp


def fold_metrics(model: Path, dataset: Path, dilation_um: float = 50.0) -> list[dict[str, Any]]:
    """Per validation case of every trained fold: our metrics on nnU-Net's validation output."""
    from bridge_xr.learn.metrics import evaluate

    rows = []
    for fold, case, a, b, mri, sp in _validation_cases(model, dataset):
        r = evaluate(a, b, sp, dilation_um=dilation_um)
        base = evaluate(a, threshold_baseline(mri, a), sp, dilation_um=dilation_um)
        rows.append(
            {
                "fold": fold,
                "case": case,
                **{k: r[k] for k in ("dice", "dilated_dice", "masd_um", "hd95_um")},
                "n_truth_voxels": r["n_truth_voxels"],
                "n_prediction_voxels": r["n_prediction_voxels"],
                "threshold_dilated_dice": base["dilated_dice"],
                "threshold_masd_um": base["masd_um"],
            }
        )
    return rows


def fold_visibility(
    model: Path, dataset: Path, dilation_um: float = 0.0
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Vessel-wise visibility pooled over every fold's validation cases.

    Vessel-wise comparison (Figure 2J-K) pooled over every fold's validation cases: each truth
    calibre segment's diameter and the share of its voxels the model and the thresholded T2w
    mark (within ``dilation_um``; default 0: the voxel itself); per diameter category the pooled
    counts. Diameters are the microscopy's (``bridge_xr/diameters`` of the export) where the
    dataset has them, else the local thickness of the truth on the export grid.
    """
    from bridge_xr.learn.vessels import diameter_categories, visibility_by_diameter

    vessels: list[dict[str, object]] = []
    from bridge_xr.learn.masks import read_mask

    for fold, case, a, b, mri, sp in _validation_cases(model, dataset):
        cands = {"model": b > 0, "threshold": threshold_baseline(mri, a)}
        dfile = dataset / "bridge_xr" / "diameters" / f"{case}.nii.gz"
        diam = read_mask(str(dfile))[0] if dfile.exists() else None
        rows, _ = visibility_by_diameter(
            a, cands, sp, dilation_um=dilation_um, segments=True, diameters=diam
        )
        vessels += [{"fold": fold, "case": case, **r} for r in rows]
    return vessels, diameter_categories(vessels, ["model", "threshold"])


def threshold_baseline(mri: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Vessels as dark T2w voxels: below the percentile that matches the truth's vessel share."""
    share = float(np.mean(truth > 0))
    if share == 0:
        return np.zeros(mri.shape, dtype=bool)
    return np.asarray(mri <= np.percentile(mri, 100 * share))


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and IQR of every metric over cases (Figure 2L-M)."""
    out: dict[str, Any] = {"cases": len(rows)}
    for key in ("dice", "dilated_dice", "masd_um", "hd95_um", "threshold_dilated_dice",
                "threshold_masd_um"):  # fmt: skip
        v = np.array([r[key] for r in rows], dtype=float)
        v = v[np.isfinite(v)]
        if len(v):
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            out[key] = {"median": float(med), "q1": float(q1), "q3": float(q3), "n": len(v)}
    return out


def write_fold_table(
    model: Path, dataset: Path, path: Path, *, visibility: bool = True
) -> dict[str, Any]:
    """Write the per-case and per-fold metrics (and vessel visibility) table; returns a summary."""
    rows = fold_metrics(model, dataset)
    folds = sorted({int(r["fold"]) for r in rows})
    result: dict[str, Any] = {
        "per_case": rows,
        "per_fold": {str(f): summary([r for r in rows if r["fold"] == f]) for f in folds},
        "summary": summary(rows),
    }
    if visibility:
        vessels, categories = fold_visibility(model, dataset)
        result["visibility"] = {"by_diameter": categories, "per_vessel": vessels}
    from bridge_xr.io.jsonio import write_json

    write_json(result, path)
    return result
