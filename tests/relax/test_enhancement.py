"""PSE maps and ROI means against numpy on whole arrays; mismatched grids refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bridge_xr_cli.main import app


def _store(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance

    rng = np.random.default_rng(11)
    pre = rng.uniform(50, 150, (5, 30, 26)).astype(np.float32)
    pre[0, 0, :3] = 0.0  # no pre signal: PSE undefined there
    post = (pre * rng.uniform(1.5, 4.0, pre.shape)).astype(np.float32)
    lab = np.zeros(pre.shape, np.uint8)
    lab[1:4, 5:12, 4:10], lab[2:5, 18:27, 14:24] = 1, 3  # sinus, a second ROI
    arrays = {"mri/T1w": pre, "mri/T1w_post": post, "labels/sinus": lab}
    store = tmp_path / "M001.ome.zarr"
    for path, data in arrays.items():
        img = make_image(data, dims="zyx", spacing=(0.1, 0.05, 0.05), unit="mm")
        kind = "labels" if path.startswith("labels") else "image"
        meta = ImageMetadata(path=path, modality="mri", kind=kind, provenance=Provenance.now("t"))
        add_image(store, img, meta, levels=1, chunks={"z": 2, "y": 8, "x": 10}, shards=False)
    return store, arrays


def test_pse_map_and_roi_table_equal_numpy(tmp_path: Path) -> None:
    from bridge_xr.io.read import read_image

    store, a = _store(tmp_path)
    out = tmp_path / "pse.csv"
    res = CliRunner().invoke(app, ["pse", str(store), "--pre", "mri/T1w", "--post",
                                   "mri/T1w_post", "--image-out", "mri/PSE", "--roi-labels",
                                   "labels/sinus", "--output", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    pre, post, lab = (a[k].astype(np.float64) for k in ("mri/T1w", "mri/T1w_post", "labels/sinus"))
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.where(pre > 0, (post - pre) / pre * 100, np.nan)
    got = read_image(str(store), "mri/PSE").values
    np.testing.assert_allclose(got, want, rtol=1e-5, equal_nan=True)
    assert np.isnan(got[0, 0, :3]).all()
    table = pd.read_csv(out).set_index("roi")
    for r in (1, 3):
        m_pre, m_post = pre[lab == r].mean(), post[lab == r].mean()
        assert table.loc[r, "pse_percent"] == pytest.approx((m_post - m_pre) / m_pre * 100)
        assert table.loc[r, "n"] == (lab == r).sum()
    means_csv = tmp_path / "means.csv"
    res = CliRunner().invoke(app, ["roi-means", str(store), "--image", "mri/T1w", "--image",
                                   "mri/T1w_post", "--roi-labels", "labels/sinus", "--output",
                                   str(means_csv)])  # fmt: skip
    assert res.exit_code == 0, res.output
    means = pd.read_csv(means_csv).set_index(["image", "roi"])
    for image in ("mri/T1w", "mri/T1w_post"):
        v = a[image].astype(np.float64)[lab == 3]
        assert means.loc[(image, 3), "mean"] == pytest.approx(v.mean())
        assert means.loc[(image, 3), "sd"] == pytest.approx(v.std(ddof=1))


def test_pse_refuses_other_grids_and_nothing_to_write(tmp_path: Path) -> None:
    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance

    store, _ = _store(tmp_path)
    other = make_image(np.ones((5, 15, 13), np.float32), dims="zyx", spacing=(0.1, 0.1, 0.1),
                       unit="mm")  # fmt: skip
    add_image(store, other, ImageMetadata(path="mri/T1w_post_lowres", modality="mri",
                                          provenance=Provenance.now("t")), levels=1)  # fmt: skip
    for extra, msg in ((["--post", "mri/T1w_post_lowres", "--image-out", "mri/X"], "different grids"),
                       (["--post", "mri/T1w_post"], "nothing to write")):  # fmt: skip
        res = CliRunner().invoke(app, ["pse", str(store), "--pre", "mri/T1w", *extra])
        assert res.exit_code == 2, res.output
        assert msg in res.output
    assert not (store / "mri" / "X").exists()
