"""The nnU-Net path end to end on a phantom study (tiny CPU schedule): export passes nnU-Net's
integrity check, splits group subjects, one fold trains, predicts into the store, evaluates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject
from bridge_xr.learn.crops import Case, group_splits
from bridge_xr.testing.phantom import PhantomConfig
from bridge_xr.testing.study import write_analysis_study
from bridge_xr_cli.main import app

pytest.importorskip("nnunetv2")
runner = CliRunner()


def bridge(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_splits_never_put_a_subject_in_train_and_validation() -> None:
    cases = [Case(f"M{s}_d060_{k:03d}", f"M{s}", "d060", "", (0,) * 6) for s in range(7)
             for k in range(3)]  # fmt: skip
    splits = group_splits(cases, 5)
    assert len(splits) == 5
    subject = {c.case: c.subject for c in cases}
    seen = set()
    for sp in splits:
        assert not {subject[c] for c in sp["train"]} & {subject[c] for c in sp["val"]}
        seen |= set(sp["val"])
    assert seen == set(subject)  # every case validated exactly once


def test_export_train_predict_evaluate(tmp_path) -> None:
    write_analysis_study(tmp_path, ("M001", "M002", "M003"), PhantomConfig.learning())
    raw = tmp_path / "nnunet_raw"
    # --no-verify: `learn train` plans with nnU-Net's --verify_dataset_integrity, which fails the
    # training below on any integrity problem (the export's own check would repeat it, 15 s);
    # --no-diameters: the 2P diameters are tested in test_crops.py (30 s here)
    r = bridge("learn", "export", tmp_path / "study", "--output", raw, "--spacing", "25um",
               "--crop-size", 24, "--min-vessel", 10, "--truth-threshold", 1000, "--folds", 3,
               "--no-verify", "--no-diameters")  # fmt: skip
    assert r.exit_code == 0, r.output
    ds = raw / "Dataset501_BridgeVessel"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "vessel": 1}
    cases = pd.read_csv(ds / "cases.csv")
    assert set(cases.subject) == {"M001", "M002", "M003"}
    assert meta["numTraining"] == len(cases)
    # a real nnU-Net training, short: 20 epochs x 20 iterations of the 2d configuration on CPU
    r = bridge("learn", "train", ds, "--folds", "0", "--device", "cpu", "--epochs", 20,
               "--iterations", 20, "--work", tmp_path / "work")  # fmt: skip
    assert r.exit_code == 0, r.output
    model = tmp_path / "work" / "results" / ds.name / "nnUNetTrainer__nnUNetPlans__2d"
    assert (model / "fold_0" / "checkpoint_final.pth").exists()
    store = tmp_path / "study" / "M002.ome.zarr"
    r = bridge("learn", "predict", model, store, "--image", "learn/d060/T2w_grid",
               "--label-out", "predictions/d060/vessels")  # fmt: skip
    assert r.exit_code == 0, r.output
    pred = read_image(str(store), "predictions/d060/vessels")
    grid = read_image(str(store), "learn/d060/T2w_grid")
    assert pred.shape == grid.shape
    assert set(np.unique(pred.values)) <= {0, 1}
    prov = read_subject(str(store)).images["predictions/d060/vessels"].provenance
    assert "checkpoint_sha256" in prov.parameters
    r = bridge("learn", "evaluate-folds", model, "--dataset", ds, "--json", tmp_path / "cv.json")
    assert r.exit_code == 0, r.output
    cv = json.loads((tmp_path / "cv.json").read_text())
    assert cv["summary"]["cases"] >= 1
    assert list(cv["per_fold"]) == ["0"]  # only fold 0 was trained
    assert cv["per_fold"]["0"]["cases"] == cv["summary"]["cases"]
    assert {"dice", "dilated_dice", "masd_um"} <= set(cv["per_case"][0])
    # the model beats thresholded T2w (whose threshold even knows the true vessel share), which
    # the phantom's coil bias field misleads
    for case in cv["per_case"]:
        assert case["dice"] > 0.7
        assert case["dilated_dice"] >= case["threshold_dilated_dice"]
        assert case["masd_um"] < case["threshold_masd_um"]
    # vessel-wise comparison pooled over the validation cases: every truth voxel in one segment
    from scipy import ndimage

    from bridge_xr.learn.masks import read_mask

    n_components = 0
    for case in {c["case"] for c in cv["per_case"]}:
        truth, _ = read_mask(str(ds / "labelsTr" / f"{case}.nii.gz"))
        n_components += ndimage.label(truth > 0, structure=np.ones((3, 3, 3)))[1]
    vis = cv["visibility"]
    assert len(vis["per_vessel"]) >= n_components > 0  # calibre segments: a tree splits
    assert sum(c["vessels"] for c in vis["by_diameter"]) == len(vis["per_vessel"])
    for row in vis["per_vessel"]:
        assert 0.0 <= row["model_detected"] <= 1.0
        assert 0.0 <= row["threshold_detected"] <= 1.0
    # a corrupted checkpoint is one clear error, not a traceback
    bad = tmp_path / "badmodel"
    (bad / "fold_0").mkdir(parents=True)
    (bad / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    r = bridge("learn", "predict", bad, store, "--image", "learn/d060/T2w_grid",
               "--label-out", "predictions/d060/x")  # fmt: skip
    assert r.exit_code == 2
    assert "not a loadable checkpoint" in r.output


def test_negative_control_pairs_every_image_with_another_crops_label() -> None:
    from bridge_xr.learn.crops import _derangement

    imgs = [(Case(f"c{i}", f"M{i % 3}", "d060", "", (0,) * 6), np.zeros((2, 4, 4)),
             np.full((2, 4, 4), i)) for i in range(7)]  # fmt: skip
    imgs.append((Case("odd", "M9", "d060", "", (0,) * 6), np.zeros((1, 4, 4)), np.zeros((1, 4, 4))))
    imgs.append((Case("odd2", "M8", "d060", "", (0,) * 6), np.zeros((1, 4, 4)), np.ones((1, 4, 4))))
    src = _derangement(imgs, seed=1)
    assert sorted(src) == list(range(len(imgs)))  # a permutation: every label used once
    assert all(s != i for i, s in enumerate(src))  # nobody keeps its own label
    assert all(imgs[s][2].shape == imgs[i][2].shape for i, s in enumerate(src))
