"""Vessel diameter categories per session (Fig. S3A-B) and their weighted equivalence test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bridge_xr_cli.main import app


def _tubes(shape: tuple[int, int, int], tubes: list[tuple[int, int, float]]) -> np.ndarray:
    z, y, _ = np.indices(shape)
    m = np.zeros(shape, np.uint8)
    for cz, cy, d in tubes:  # tubes along x
        m[(z - cz) ** 2 + (y - cy) ** 2 <= (d / 2) ** 2] = 1
    return m


def test_diameter_shares_per_session_and_weighted_equivalence(tmp_path: Path) -> None:
    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance
    from bridge_xr.stats.stability import equivalence

    shape = (40, 60, 30)
    sessions = {"d000": [(10, 12, 6.0), (10, 40, 6.0), (28, 30, 16.0)],
                "d007": [(10, 12, 6.0), (28, 30, 16.0)]}  # fmt: skip  # one thin vessel gone
    store = tmp_path / "M001.ome.zarr"
    truth = {}
    for s, tubes in sessions.items():
        m = _tubes(shape, tubes)
        thin = _tubes(shape, [t for t in tubes if t[2] < 10]).sum()
        truth[s] = thin / m.sum()
        img = make_image(m, dims="zyx", spacing=(1.0, 1.0, 1.0), unit="um")
        add_image(store, img, ImageMetadata(path=f"invivo_2p/{s}/vessels", modality="twophoton",
                                            kind="labels", session=s,
                                            provenance=Provenance.now("t")), levels=1,
                  chunks={"z": 16, "y": 32, "x": 16}, shards=False)  # fmt: skip
    out = tmp_path / "diam.csv"
    res = CliRunner().invoke(app, ["vessel-diameters", str(store), "--mask", "invivo_2p/d000/vessels",
                                   "--mask", "invivo_2p/d007/vessels", "--bins", "0,10,40",
                                   "--output", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    got = df[df["diameter_um"] == "0-10"].set_index("session")["proportion"]
    for s, want in truth.items():
        assert got[s] == pytest.approx(want, abs=0.03)  # local thickness: a lower bound at edges
    res = CliRunner().invoke(app, ["stats", str(out), "--response", "diameter_um", "--by",
                                   "session", "--test", "equivalence", "--weight", "voxels",
                                   "--output", str(tmp_path / "s3b")])  # fmt: skip
    assert res.exit_code == 0, res.output
    pairs = pd.read_csv(tmp_path / "s3b_pairs.csv").set_index("category")
    # the same test on one row per voxel (the unweighted path) gives the same numbers
    rows = df.loc[df.index.repeat(df["voxels"]), ["diameter_um", "session"]]
    ref = equivalence(rows, category="diameter_um", timepoint="session").set_index("category")
    for col in ("deviation", "p_tost"):
        np.testing.assert_allclose(pairs.loc[ref.index, col], ref[col], rtol=1e-9, atol=1e-12)
    assert not pairs["stable_max_dev"].any()  # a thin vessel lost: more than 5 % shift
