"""Lesion components vs scipy.ndimage.label on whole arrays, across chunks, per drawn ROI."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from bridge_xr.lesions import component_table
from bridge_xr_cli.main import app


@pytest.mark.parametrize("chunks", [(40, 90, 70), (13, 17, 23), (4, 9, 5)])
def test_components_equal_ndimage_label_whatever_the_chunks(chunks: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    m = ndimage.gaussian_filter(rng.standard_normal((40, 90, 70)), 2) > 0.12
    lab, n = ndimage.label(m)
    t = component_table(da.from_array(m, chunks=chunks), spacing_um=(2.0, 1.0, 0.5))
    assert len(t) == n
    assert np.array_equal(np.sort(t["voxels"]), np.sort(np.bincount(lab.ravel())[1:]))
    assert np.allclose(np.sort(t["volume_um3"]), np.sort(np.bincount(lab.ravel())[1:]) * 1.0)
    com = np.array(ndimage.center_of_mass(m, lab, range(1, n + 1)))
    ref = pd.DataFrame({"v": np.bincount(lab.ravel())[1:], "z": (com[:, 0] + 0.5) * 2.0})
    got = t.sort_values(["voxels", "centroid_z_um"])["centroid_z_um"].to_numpy()
    assert np.allclose(got, ref.sort_values(["v", "z"])["z"].to_numpy())


def test_an_object_split_across_many_chunks_is_one_lesion() -> None:
    m = np.zeros((20, 20, 20), bool)
    m[2:18, 10, 10] = True  # a thin line through 8 blocks
    m[10, 2:18, 3] = True
    t = component_table(da.from_array(m, chunks=(2, 3, 4)), spacing_um=(1, 1, 1))
    assert sorted(t["voxels"]) == [16, 16]
    diagonal = np.zeros((4, 4, 4), bool)
    diagonal[1, 1, 1] = diagonal[2, 2, 2] = True  # corner contact is not face connectivity
    assert len(component_table(da.from_array(diagonal, chunks=2), spacing_um=(1, 1, 1))) == 2


def test_cli_counts_known_clusters_per_drawn_roi(tmp_path: Path) -> None:
    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance

    prob = np.zeros((10, 60, 60), np.float32)
    rois = np.zeros((10, 60, 60), np.uint8)
    rois[:, :, :30], rois[:, :, 30:] = 1, 2
    rng = np.random.default_rng(3)
    want = {1: 4, 2: 7}  # clusters per ROI, 2x3x3 voxels each, well apart
    for roi, k in want.items():
        placed = 0
        while placed < k:
            z, y, x = rng.integers(0, 8), rng.integers(0, 57), rng.integers(0, 27) + 30 * (roi - 1)
            box = (slice(z, z + 2), slice(y, y + 3), slice(x, x + 3))
            grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
            if prob[grown].any() or x + 3 > 30 * roi:
                continue
            prob[box] = 0.9
            placed += 1
    prob += rng.uniform(0, 0.4, prob.shape).astype(np.float32)  # below threshold
    store = tmp_path / "M001.ome.zarr"
    prov = Provenance.now("test")
    for path, data, kind in (("exvivo/tumour", prob, "image"), ("rois", rois, "labels")):
        img = make_image(data, dims="zyx", spacing=(5.0, 0.65, 0.65), unit="um")
        add_image(store, img, ImageMetadata(path=path, modality="widefield", kind=kind,
                                            provenance=prov), levels=1)  # fmt: skip
    out = tmp_path / "lesions.parquet"
    res = CliRunner().invoke(app, ["lesions", str(store), "--objects", "exvivo/tumour=0.5",
                                   "--roi-labels", "rois", "--output", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    assert df.groupby("roi")["lesion"].count().to_dict() == want
    assert np.allclose(df["volume_um3"], 18 * 5.0 * 0.65 * 0.65)
    res = CliRunner().invoke(app, ["lesions", str(store), "--objects", "exvivo/tumour",
                                   "--output", str(out)])  # fmt: skip
    assert res.exit_code == 2
