"""The registrations table of a study (Fig. 1E): counts and RMSE as recorded, stats as scipy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from bridge_xr_cli.main import app

SEQUENCES = ("T2w", "T2star", "TOF")


def _subject(root: Path, name: str, seed: int) -> dict[str, int]:
    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance
    from bridge_xr.register.registration import register

    store = root / f"{name}.ome.zarr"
    rng = np.random.default_rng(seed)
    images = {f"invivo_mri/d060/{s}": 10.0 for s in SEQUENCES} | {"invivo_2p/d060/vessels": 5.0}
    for path, sp in images.items():
        img = make_image(np.zeros((4, 8, 8), np.uint16), dims="zyx", spacing=(sp,) * 3, unit="um")
        mod = "mri" if "mri" in path else "twophoton"
        add_image(store, img, ImageMetadata(path=path, modality=mod, session="d060",
                                            provenance=Provenance.now("t")), levels=1)  # fmt: skip
    counts = {}
    for j, seq in enumerate(SEQUENCES):
        n = int(rng.integers(4, 8)) + 3 * (2 - j)  # T2w finds the most landmarks, TOF the fewest
        fixed = rng.uniform(0, 40, (n, 3))
        moving = fixed + [5.0, 0, 0] + rng.normal(0, 0.5, (n, 3))
        frame = {"name": [f"L{i}" for i in range(n)]}
        for side, pts in (("fixed", fixed), ("moving", moving)):
            for k, axis in enumerate("xyz"):
                frame[f"{side}_{axis}"] = pts[:, k]
        register(store, fixed=f"invivo_mri/d060/{seq}", moving="invivo_2p/d060/vessels",
                 landmarks=pd.DataFrame(frame), model="rigid", name=f"2p_to_{seq}")  # fmt: skip
        counts[seq] = n
    return counts


def test_registration_table_of_a_study_and_kruskal_over_sequences(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    want = {f"M00{i}": _subject(study, f"M00{i}", i) for i in range(1, 5)}
    out = tmp_path / "regs.csv"
    res = CliRunner().invoke(app, ["registrations", str(study), "--output", str(out)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert len(table) == 12
    for r in table.itertuples():
        assert r.n_landmarks == want[r.subject][r.sequence]
        assert 0.1 < r.rmse_um < 2.0  # 0.5 µm noise per axis, rigid fit
        assert r.session == "d060"
    res = CliRunner().invoke(app, ["stats", str(out), "--response", "n_landmarks", "--by",
                                   "sequence", "--test", "kruskal-dunn",
                                   "--output", str(tmp_path / "fig1e")])  # fmt: skip
    assert res.exit_code == 0, res.output
    omni = pd.read_csv(tmp_path / "fig1e_omnibus.csv")
    ref = stats.kruskal(*[g["n_landmarks"] for _, g in table.groupby("sequence")])
    assert omni["p"].item() == pytest.approx(ref.pvalue)
    res = CliRunner().invoke(app, ["registrations", str(tmp_path / "nope")])
    assert res.exit_code == 2
