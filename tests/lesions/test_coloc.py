"""Colocalisation: nuclei and their marker means vs scipy.ndimage on whole arrays, counts by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu
from typer.testing import CliRunner

from bridge_xr_cli.main import app


def _slide(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], list[tuple[bool, bool]]]:
    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance

    rng = np.random.default_rng(7)
    shape = (6, 64, 64)
    dapi = rng.normal(100, 10, shape)
    nestin = rng.normal(50, 8, shape)
    gfp = rng.normal(50, 8, shape)
    truth = []
    zz, yy, xx = np.indices(shape)
    for cy in range(6, 64, 13):  # 5 x 5 nuclei, 4 µm radius discs over 4 planes
        for cx in range(6, 64, 13):
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 16) & (zz >= 1) & (zz <= 4)
            dapi[disc] += 900
            nes, g = bool(rng.random() < 0.6), bool(rng.random() < 0.5)
            nestin[disc] += 400 if nes else 0
            gfp[disc] += 400 if g else 0
            truth.append((nes, g))
    dapi[0, 30:32, 30:32] += 900  # debris, 4 voxels
    store = tmp_path / "M001.ome.zarr"
    arrays = {"exvivo/DAPI": dapi, "exvivo/nestin": nestin, "exvivo/gfp": gfp}
    for path, data in arrays.items():
        img = make_image(data.astype(np.float32), dims="zyx", spacing=(2.0, 1.0, 1.0), unit="um")
        meta = ImageMetadata(path=path, modality="widefield", provenance=Provenance.now("t"))
        add_image(store, img, meta, levels=1, chunks={"z": 3, "y": 20, "x": 24}, shards=False)
    return store, {k: v.astype(np.float32) for k, v in arrays.items()}, truth


def test_colocalize_equals_ndimage_per_nucleus_and_counts_by_hand(tmp_path: Path) -> None:
    store, arrays, truth = _slide(tmp_path)
    out = tmp_path / "coloc.csv"
    res = CliRunner().invoke(app, ["colocalize", str(store), "--nuclei", "exvivo/DAPI=otsu",
                                   "--marker", "exvivo/nestin=250", "--marker", "exvivo/gfp=otsu",
                                   "--min-volume", "10", "--output", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    nuclei = pd.read_csv(out)
    dapi = arrays["exvivo/DAPI"]
    otsu = threshold_otsu(dapi)
    lab, n = ndimage.label(dapi >= otsu)
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, np.arange(1, n + 1))
    keep = np.arange(1, n + 1)[sizes * 2.0 >= 10]
    assert len(nuclei) == len(keep) == 25  # the debris is dropped
    for name in ("nestin", "gfp"):
        want = np.sort(ndimage.mean(arrays[f"exvivo/{name}"], lab, keep))
        np.testing.assert_allclose(np.sort(nuclei[f"mean_{name}"]), want, rtol=1e-5)
    assert sorted(nuclei["voxels"]) == sorted(sizes[keep - 1].astype(int))
    # positivity: the planted truth, nucleus by nucleus (ordered by first voxel = by row, col)
    order = nuclei.sort_values(["bbox_lo_y", "bbox_lo_x"])
    got = list(zip(order["positive_nestin"], order["positive_gfp"], strict=True))
    assert got == truth
    summary = pd.read_csv(tmp_path / "coloc_summary.csv").set_index(["reference", "test"])
    nes = np.array([t[0] for t in truth])
    gfp = np.array([t[1] for t in truth])
    row = summary.loc[("nestin", "gfp")]
    assert row["double_positive"] == (nes & gfp).sum()
    assert row["sensitivity"] == pytest.approx((nes & gfp).sum() / nes.sum())
    assert row["specificity"] == pytest.approx((~nes & ~gfp).sum() / (~nes).sum())
    assert summary.loc[("gfp", "nestin"), "sensitivity"] == pytest.approx(
        (nes & gfp).sum() / gfp.sum()
    )


def test_colocalize_refuses_bad_specs_and_other_grids(tmp_path: Path) -> None:
    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance

    store, _, _ = _slide(tmp_path)
    small = make_image(np.zeros((6, 32, 32), np.float32), dims="zyx", spacing=(2, 2, 2), unit="um")
    add_image(store, small, ImageMetadata(path="exvivo/other", modality="widefield",
                                          provenance=Provenance.now("t")), levels=1)  # fmt: skip
    out = tmp_path / "c.csv"
    for marker, msg in (("exvivo/nestin", "IMAGE=THRESHOLD"), ("exvivo/nestin=high", "otsu"),
                        ("exvivo/other=3", "one grid")):  # fmt: skip
        res = CliRunner().invoke(app, ["colocalize", str(store), "--nuclei", "exvivo/DAPI=500",
                                       "--marker", marker, "--output", str(out)])  # fmt: skip
        assert res.exit_code == 2, res.output
        assert msg in res.output
        assert not out.exists()
