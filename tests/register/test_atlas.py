"""QuickNII / VisuAlign alignments written by hand from their documented format.

Expected atlas coordinates are computed independently: the anchoring formula by hand, VisuAlign's
piecewise-linear marker map by matplotlib's triangulation interpolator.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.tri as mtri
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import tifffile
from typer.testing import CliRunner

from bridge_xr.io.read import read_image
from bridge_xr.register.atlas import atlas_points, import_atlas
from bridge_xr.register.slices import register_slices
from bridge_xr.testing.exvivo import slice_scene, slice_truth
from bridge_xr_cli.main import app

runner = CliRunner()
STACK = "exvivo/slab03"
SEC_PX = 176  # the phantom's sections: 176 x 176 pixels of 5 µm
REG_PX = 88  # QuickNII works on downscaled copies

ANCHORS = [  # coronal sections at three antero-posterior positions (atlas voxels)
    [40.0, 300.0, 300.0, 380.0, 0.0, 0.0, 0.0, 0.0, -280.0],
    [42.0, 296.0, 301.0, 378.0, 4.0, 0.0, 0.0, 0.0, -279.0],
    [44.0, 292.0, 302.0, 376.0, 8.0, 2.0, 0.0, 3.0, -278.0],
]
MARKERS = [[30.0, 30.0, 34.0, 27.0], [60.0, 50.0, 57.0, 55.0]]


def _alignment(path: Path, *, markers: bool = False) -> Path:
    slices = []
    for k, a in enumerate(ANCHORS):
        s = {"filename": f"slab03_s{k + 1:03d}.png", "nr": k + 1, "width": REG_PX,
             "height": REG_PX, "anchoring": a}  # fmt: skip
        if markers and k == 1:
            s["markers"] = MARKERS
        slices.append(s)
    path.write_text(json.dumps({"name": "phantom", "target": "ABA_Mouse_CCFv3_2017_25um.cutlas",
                                "target-resolution": [456, 528, 320], "slices": slices}))  # fmt: skip
    return path


def _expected(k: int, col: np.ndarray, row: np.ndarray, *, markers: bool = False) -> np.ndarray:
    """By hand: section pixel -> anchoring image pixel -> (VisuAlign) -> o + s u + t v."""
    x = (col + 0.5) * REG_PX / SEC_PX
    y = (row + 0.5) * REG_PX / SEC_PX
    if markers and k == 1:
        c = np.array([[-8.8, -8.8], [96.8, -8.8], [-8.8, 96.8], [96.8, 96.8]])
        m = np.asarray(MARKERS)
        tx = np.r_[c[:, 0], m[:, 2]]
        ty = np.r_[c[:, 1], m[:, 3]]
        tri = mtri.Triangulation(tx, ty)
        x, y = (
            np.asarray(mtri.LinearTriInterpolator(tri, np.r_[c[:, 0], m[:, 0]])(x, y)),
            np.asarray(mtri.LinearTriInterpolator(tri, np.r_[c[:, 1], m[:, 1]])(x, y)),
        )
    a = np.asarray(ANCHORS[k])
    return a[:3] + np.outer(x / REG_PX, a[3:6]) + np.outer(y / REG_PX, a[6:9])


def test_section_pixels_get_the_anchoring_coordinates(tmp_path: Path) -> None:
    store = tmp_path / "M.ome.zarr"
    slice_scene(3, where=store)
    res = runner.invoke(app, ["atlas", "import", str(_alignment(tmp_path / "q.json")), str(store),
                              "--slices", STACK])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "3 sections" in res.output
    assert "25 µm" in res.output
    rng = np.random.default_rng(0)
    col, row = rng.integers(0, SEC_PX, 60), rng.integers(0, SEC_PX, 60)
    k = np.repeat([0, 1, 2], 20)
    pts = pd.DataFrame({"x": 2.5 + 5 * col, "y": 2.5 + 5 * row, "z": 50.0 + 100 * k + 10,
                        "cell": range(60)})  # fmt: skip
    pts.to_csv(tmp_path / "cells.csv", index=False)
    res = runner.invoke(app, ["atlas", "map", str(store), str(tmp_path / "cells.csv"), "--from",
                              STACK, "--output", str(tmp_path / "out.csv")])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = pd.read_csv(tmp_path / "out.csv")
    assert list(got["cell"]) == list(range(60))
    assert (got["section"] == k + 1).all()
    for kk in range(3):
        sel = k == kk
        want = _expected(kk, col[sel], row[sel])
        assert np.allclose(got.loc[sel, ["atlas_x", "atlas_y", "atlas_z"]], want, atol=1e-9)
    assert np.allclose(got["atlas_y_um"], got["atlas_y"] * 25.0)


def test_visualign_markers_move_points_as_the_triangulation_says(tmp_path: Path) -> None:
    scene, _ = slice_scene(3)
    import_atlas(scene, _alignment(tmp_path / "v.json", markers=True), slices=STACK)
    col = np.r_[np.arange(0, SEC_PX, 7), [67.5, 113.5]]  # the last two: the markers' targets
    row = np.r_[np.arange(0, SEC_PX, 7)[::-1], [53.5, 109.5]]
    z = np.full(len(col), 150.0)
    res = atlas_points(scene, np.column_stack([z, 2.5 + 5 * row, 2.5 + 5 * col]), src=STACK)
    want = _expected(1, col, row, markers=True)
    assert np.allclose(res[["atlas_x", "atlas_y", "atlas_z"]], want, atol=1e-9)
    # a marker's target gets exactly the atlas point the marker was dragged from
    a = np.asarray(ANCHORS[1])
    for i, (x0, y0, _, _) in enumerate(MARKERS):
        at = a[:3] + x0 / REG_PX * a[3:6] + y0 / REG_PX * a[6:9]
        assert np.allclose(res.iloc[-2 + i][["atlas_x", "atlas_y", "atlas_z"]], at)
    # the other sections have no markers: plain anchoring
    plain = atlas_points(scene, np.array([[50.0, 102.5, 302.5]]), src=STACK)
    assert np.allclose(
        plain[["atlas_x", "atlas_y", "atlas_z"]], _expected(0, np.array([60]), np.array([20]))
    )


def test_mri_voxels_reach_the_atlas_through_the_slice_registration(tmp_path: Path) -> None:
    store = tmp_path / "M.ome.zarr"
    scene, lms = slice_scene(3, where=store)
    truth = slice_truth(3)
    register_slices(scene, fixed="exvivo_mri/T2w", moving=STACK, landmarks=lms, model="affine")
    import_atlas(scene, _alignment(tmp_path / "q.json"), slices=STACK)
    rng = np.random.default_rng(1)
    xy = rng.uniform(150, 650, size=(30, 2))
    k = np.repeat([0, 1, 2], 10)
    z = (k + 0.5) * 100.0
    res = atlas_points(scene, np.column_stack([z, xy[:, 1], xy[:, 0]]), src="exvivo_mri/T2w")
    for kk in range(3):
        sel = k == kk
        uv = truth.to_moving(kk, xy[sel])  # section µm
        want = _expected(kk, (uv[:, 0] - 2.5) / 5.0, (uv[:, 1] - 2.5) / 5.0)
        assert np.allclose(res.loc[sel, ["atlas_x", "atlas_y", "atlas_z"]], want, atol=1e-6)
    # region labels from a label volume on the atlas grid (x, y, z voxels)
    ann = np.zeros((456, 528, 320), np.int32)
    ann[:, :, 200:] = 315  # "isocortex" above z = 200
    ann[200:, :, :200] = 1089
    nib.save(nib.Nifti1Image(ann, np.eye(4)), tmp_path / "annotation.nii.gz")
    lab = atlas_points(scene, np.column_stack([z, xy[:, 1], xy[:, 0]]), src="exvivo_mri/T2w",
                       annotation=tmp_path / "annotation.nii.gz")  # fmt: skip
    v = lab[["atlas_x", "atlas_y", "atlas_z"]].to_numpy()
    want = np.where(v[:, 2] >= 200, 315, np.where(v[:, 0] >= 200, 1089, 0))
    assert np.array_equal(lab["region"].to_numpy(), want)
    assert set(want) >= {315, 1089}
    # the same for every voxel of the MRI, as images on its grid
    res = runner.invoke(app, ["atlas", "image", str(store), "--image", "exvivo_mri/T2w",
                              "--image-out", "atlas/T2w", "--annotation",
                              str(tmp_path / "annotation.nii.gz")])  # fmt: skip
    assert res.exit_code == 0, res.output
    img = read_image(store, "atlas/T2w")
    mri = read_image(store, "exvivo_mri/T2w")
    zz, yy, xx = np.meshgrid(mri.z.values, mri.y.values, mri.x.values, indexing="ij")
    ref = atlas_points(store, np.column_stack([zz.ravel(), yy.ravel(), xx.ravel()]),
                       src="exvivo_mri/T2w", annotation=tmp_path / "annotation.nii.gz")  # fmt: skip
    for c, col in enumerate(("atlas_x_um", "atlas_y_um", "atlas_z_um")):
        got = img.isel(c=c).values.ravel()
        want = ref[col].to_numpy()
        assert np.array_equal(np.isnan(got), np.isnan(want))
        assert np.allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-6)
    assert np.array_equal(read_image(store, "atlas/T2w_region").values.ravel(), ref["region"])
    assert {315, 1089} <= set(np.unique(ref["region"]))
    nib.save(nib.Nifti1Image(ann[:100], np.eye(4)), tmp_path / "small.nii.gz")
    with pytest.raises(Exception, match="same atlas"):
        atlas_points(scene, np.zeros((1, 3)), src=STACK, annotation=tmp_path / "small.nii.gz")


def test_sections_pair_by_file_name_and_bad_files_are_refused(tmp_path: Path) -> None:
    files = []
    for k in range(3):
        p = tmp_path / f"slab03_s{k + 1:03d}.tif"
        tifffile.imwrite(p, np.full((SEC_PX, SEC_PX), k + 1, np.uint16))
        files.append(p)
    store = tmp_path / "M.ome.zarr"
    res = runner.invoke(app, ["convert", "slices", *map(str, files[::-1]), str(store), "--image",
                              STACK, "--thickness", "100um", "--pixel-size", "5um"])  # fmt: skip
    assert res.exit_code == 0, res.output  # s003 is the first plane now
    rec = import_atlas(store, _alignment(tmp_path / "q.json"), slices=STACK)
    assert [s.stack_index for s in rec.sections] == [2, 1, 0]
    assert rec.provenance.parameters["paired_by"] == "filename"
    rec = import_atlas(store, tmp_path / "q.json", slices=STACK, by="nr")
    assert [s.stack_index for s in rec.sections] == [0, 1, 2]
    bad = tmp_path / "bad.json"
    for text, word in (
        ("{}", "no 'slices'"),
        (
            json.dumps(
                {
                    "slices": [
                        {"filename": "a", "nr": 9, "width": 8, "height": 8, "anchoring": [0] * 9}
                    ]
                }
            ),
            "no plane",
        ),
        (
            json.dumps(
                {
                    "target": "x",
                    "slices": [
                        {"filename": "a", "nr": 1, "width": 8, "height": 8, "anchoring": [0] * 9}
                    ],
                }
            ),
            "--atlas-voxel",
        ),
    ):
        bad.write_text(text)
        args = ["atlas", "import", str(bad), str(store), "--slices", STACK]
        if word != "--atlas-voxel":
            args += ["--atlas-voxel", "25um"]
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert word in res.output, res.output
