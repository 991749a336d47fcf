"""Human tissue: a navigated sample in the clinical MRI, and volume fractions per region.

Truth: :mod:`bridge_xr.testing.human` decides every Nestin voxel's probability from the clinical
voxel its tissue lies in, through the known pose and scanner affine (not the registrations).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from bridge_xr.io.read import read_image
from bridge_xr.scene.mapping import map_points
from bridge_xr.testing.human import human_scene
from bridge_xr_cli.main import app

runner = CliRunner()
CLIN, SAMPLE, NESTIN = "clinical/T2w", "exvivo_mri/sample", "exvivo/sample/nestin"


def _voxel_um(store: Path, ijk: np.ndarray) -> np.ndarray:
    """Clinical NIfTI voxel i, j, k -> the store's intrinsic z, y, x µm (x = i)."""
    img = read_image(store, CLIN)
    f = 1000.0 if img.attrs["unit"] == "millimeter" else 1.0
    return np.array([img.attrs["origin"][d] * f + v * img.attrs["spacing"][d] * f
                     for d, v in zip("zyx", ijk[::-1], strict=True)])  # fmt: skip


def test_a_navigated_pose_puts_the_sample_where_it_was_and_regions_get_their_fractions(
    tmp_path: Path,
) -> None:
    store = tmp_path / "P001.ome.zarr"
    h = human_scene(store)
    pose_file = tmp_path / "pose.txt"
    pose_file.write_text("\n".join(" ".join(f"{v:.12g}" for v in row) for row in h.pose))
    res = runner.invoke(app, ["place-sample", str(store), "--clinical", CLIN, "--sample", SAMPLE,
                              "--pose", str(pose_file), "--navigation-error", "2mm"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "(pose)" in res.output
    # the sample's centre lands on the clinical voxel the pose put it at
    centre = map_points(store, h.sample_centre_um[None, ::-1], SAMPLE, CLIN)
    assert np.allclose(centre[0], _voxel_um(store, np.array([16.0, 16.0, 16.0])), atol=1e-3)
    res = runner.invoke(app, ["region-densities", str(store), "--mri", CLIN, "--microscopy", NESTIN,
                              "--regions", "masks/regions", "--threshold", "100", "--names",
                              "1=core,2=infiltration", "--output", str(tmp_path / "r.csv")])  # fmt: skip
    assert res.exit_code == 0, res.output
    t = pd.read_csv(tmp_path / "r.csv").set_index("name")
    assert abs(t.loc["core", "volume_fraction"] - h.p_core) < 0.02
    assert abs(t.loc["infiltration", "volume_fraction"] - h.p_infiltration) < 0.02
    # both regions hold microscopy: 20 x 120 x 120 voxels of 20 µm in all
    assert np.isclose(t["covered_volume_um3"].sum(), 20 * 120 * 120 * 20.0**3, rtol=0.01)
    # the chain nestin -> sample MRI (exact landmarks, 0) -> clinical (navigation, 2 mm)
    assert "accumulated registration error 2e+03 µm" in res.output


def test_a_navigated_point_is_a_translation_and_says_so(tmp_path: Path) -> None:
    store = tmp_path / "P001.ome.zarr"
    h = human_scene(store)
    pos = ",".join(f"{v:.9f}mm" for v in h.navigated_point_ras_mm)
    res = runner.invoke(app, ["place-sample", str(store), "--clinical", CLIN, "--sample", SAMPLE,
                              "--position", pos])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "unknown" in res.output  # orientation and error
    centre = map_points(store, h.sample_centre_um[None, ::-1], SAMPLE, CLIN)
    assert np.allclose(centre[0], _voxel_um(store, np.array([16.0, 16.0, 16.0])), atol=1e-3)
    # away from the navigated point the unknown rotation shows: a corner lands elsewhere
    corner = np.zeros((1, 3))
    truth_ras = h.pose[:3, 3]  # the sample's (0, 0, 0) under the true pose, mm
    ijk = np.linalg.solve(h.clinical_affine[:3, :3], truth_ras - h.clinical_affine[:3, 3])
    got = map_points(store, corner, SAMPLE, CLIN)[0]
    assert np.linalg.norm(got - _voxel_um(store, ijk)) > 300.0


def test_navigation_input_is_checked(tmp_path: Path) -> None:
    store = tmp_path / "P001.ome.zarr"
    human_scene(store)
    skew = tmp_path / "skew.txt"
    skew.write_text("1 0.3 0 0  0 1 0 0  0 0 1 0  0 0 0 1")
    for extra, word in (
        (["--position", "1mm,2mm,3mm", "--pose", str(skew)], "exactly one"),
        (["--pose", str(skew)], "not a rotation"),
        (["--position", "1,2,3"], "unit"),
        ([], "exactly one"),
    ):
        res = runner.invoke(app, ["place-sample", str(store), "--clinical", CLIN, "--sample",
                                  SAMPLE, *extra])  # fmt: skip
        assert res.exit_code == 2, res.output
        assert word in res.output, res.output
    res = runner.invoke(app, ["place-sample", str(store), "--clinical", NESTIN, "--sample", SAMPLE,
                              "--position", "1mm,2mm,3mm"])  # fmt: skip
    assert res.exit_code == 2
    assert "scanner affine" in res.output
    res = runner.invoke(app, ["region-densities", str(store), "--mri", SAMPLE, "--microscopy",
                              NESTIN, "--regions", "masks/regions", "--output",
                              str(tmp_path / "x.csv")])  # fmt: skip
    assert res.exit_code == 2
    assert "not on the grid" in res.output
