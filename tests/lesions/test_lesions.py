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


def _store_with(tmp_path: Path, images: dict[str, tuple[np.ndarray, float, str]]) -> Path:
    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance

    store = tmp_path / "M001.ome.zarr"
    for path, (data, sp, kind) in images.items():
        img = make_image(data, dims="zyx", spacing=(sp, sp, sp), origin=(sp / 2,) * 3, unit="um")
        modality = "mri" if path.startswith("mri") else "widefield"
        meta = ImageMetadata(path=path, modality=modality, kind=kind,
                             provenance=Provenance.now("test"))  # fmt: skip
        add_image(store, img, meta, levels=1)
    return store


@pytest.mark.parametrize("chunks", [(3, 7, 5), (8, 40, 40)])
@pytest.mark.parametrize("unit", ["px", "um"])
def test_polygon_rois_equal_whole_image_rasterisation(chunks: tuple[int, ...], unit: str) -> None:
    from skimage.draw import polygon

    from bridge_xr.lesions import polygon_labels
    from bridge_xr.model.image import make_image

    img = make_image(np.zeros((8, 40, 40), np.float32), dims="zyx", spacing=(3.0, 0.5, 0.5),
                     origin=(1.0, -4.0, 7.0), unit="um")  # fmt: skip
    tri = (np.array([2.2, 30.7, 20.0]), np.array([3.1, 8.4, 35.9]))  # (rows, cols) in px
    quad = (np.array([10.0, 10.0, 25.5, 25.5]), np.array([12.0, 33.0, 33.0, 12.0]))
    rows = []
    for roi, (r, c), plane in ((1, tri, None), (2, quad, 5)):
        for y, x in zip(r, c, strict=True):
            row = {"roi": roi, f"x_{unit}": x, f"y_{unit}": y}
            if unit == "um":
                row = {"roi": roi, "x_um": 7.0 + 0.5 * x, "y_um": -4.0 + 0.5 * y}
            row[f"z_{unit}"] = -1 if plane is None else (plane if unit == "px" else 1.0 + 3 * plane)
            rows.append(row)
    table = pd.DataFrame(rows)
    with pytest.raises(Exception, match="plane"):  # a plane must be one of the image's
        polygon_labels(table, img, chunks=chunks)
    table = table[table[f"z_{unit}"] != -1]
    tri_rows = pd.DataFrame({"roi": 1, "x_px": tri[1], "y_px": tri[0]})
    if unit == "um":
        tri_rows = pd.DataFrame({"roi": 1, "x_um": 7.0 + 0.5 * tri[1], "y_um": -4.0 + 0.5 * tri[0]})
    got2 = polygon_labels(table, img, chunks=chunks).compute()
    want = np.zeros((8, 40, 40), np.int32)
    rr, cc = polygon(*quad, shape=(40, 40))
    want[5, rr, cc] = 2
    np.testing.assert_array_equal(got2, want)
    got1 = polygon_labels(tri_rows, img, chunks=chunks).compute()  # no plane: every plane
    want1 = np.zeros((8, 40, 40), np.int32)
    rr, cc = polygon(*tri, shape=(40, 40))
    want1[:, rr, cc] = 1
    assert want1.sum() > 100
    np.testing.assert_array_equal(got1, want1)


def test_polygon_table_without_named_units_is_refused() -> None:
    from bridge_xr.errors import InvalidInputError
    from bridge_xr.lesions import polygon_labels
    from bridge_xr.model.image import make_image

    img = make_image(np.zeros((1, 8, 8), np.float32), dims="zyx", spacing=(1, 1, 1), unit="um")
    both = pd.DataFrame({"roi": [1] * 3, "x_px": [0, 4, 4], "y_px": [0, 0, 4], "x_um": [0, 4, 4],
                         "y_um": [0, 0, 4]})  # fmt: skip
    for table in (both, pd.DataFrame({"roi": [1] * 3, "x": [0, 4, 4], "y": [0, 0, 4]})):
        with pytest.raises(InvalidInputError, match="x_px, y_px or x_um, y_um"):
            polygon_labels(table, img)


def test_mri_status_per_roi_equals_scipy_sampling_through_the_registration(tmp_path: Path) -> None:
    from bridge_xr.lesions import lesion_tables
    from bridge_xr.register.registration import register
    from bridge_xr.testing.tiny import tiny_landmarks

    rng = np.random.default_rng(5)
    mri = np.where(np.arange(8) < 4, 30.0, 5.0)[None, None, :] * np.ones((4, 8, 1))
    mri = (mri + rng.normal(0, 2.0, mri.shape)).astype(np.float32)
    prob = np.zeros((8, 16, 16), np.float32)
    prob[2:4, 3:5, 3:5] = prob[4:6, 8:11, 11:14] = prob[2, 12, 12] = 0.9
    rois = np.zeros((8, 16, 16), np.uint8)
    rois[1:7, 1:15, 2:9], rois[1:7, 1:15, 9:16] = 1, 2  # inside the MRI once mapped
    store = _store_with(tmp_path, {"mri": (mri, 10.0, "image"), "prob": (prob, 5.0, "image"),
                                   "rois": (rois, 5.0, "labels")})  # fmt: skip
    register(store, fixed="mri", moving="prob", landmarks=tiny_landmarks(), model="rigid",
             name="prob_to_mri")  # fmt: skip
    res = lesion_tables(store, objects={"prob": 0.5}, roi_labels="rois", mri="mri",
                        positive_below=10.0, positive_fraction=0.5)  # fmt: skip
    # independent: the MRI at each ROI voxel centre by scipy (prob x = mri x + 5 µm)
    k, j, i = np.nonzero(rois)
    coords = np.stack([(2.5 + 5 * k - 5) / 10, (2.5 + 5 * j - 5) / 10, (2.5 + 5 * i - 10) / 10])
    vals = ndimage.map_coordinates(mri.astype(np.float64), coords, order=1)
    for r, want_status in ((1, "negative"), (2, "positive")):
        row = res.rois.set_index("roi").loc[r]
        v = vals[rois[k, j, i] == r]
        assert row["mri_voxels"] == v.size
        assert row["mri_mean"] == pytest.approx(v.mean(), abs=1e-4)
        assert row["mri_fraction_below"] == pytest.approx((v < 10).mean())
        assert row["mri_status"] == want_status
    assert res.rois.set_index("roi")["lesions"].to_dict() == {1: 1, 2: 2}
    assert len(res.comparison) == 2  # lesions and total_um3, one ROI each side


def test_cli_polygon_rois_with_rated_status_give_mann_whitney_as_scipy(tmp_path: Path) -> None:
    from scipy.stats import mannwhitneyu

    prob = np.zeros((4, 30, 120), np.float32)
    counts = [1, 2, 2, 5, 4, 6, 3, 1]  # clusters in 8 stripes of 15 px
    for s, n in enumerate(counts):
        for q in range(n):
            prob[1:3, 2 + 3 * q : 4 + 3 * q, 15 * s + 3 : 15 * s + 6] = 0.8
    store = _store_with(tmp_path, {"prob": (prob, 1.0, "image")})
    poly = []
    for s in range(8):
        for x, y in ((15 * s, -0.5), (15 * s + 14.4, -0.5), (15 * s + 14.4, 29.5), (15 * s, 29.5)):
            poly.append({"roi": s + 1, "x_um": x + 0.5, "y_um": y + 0.5})  # origin at 0.5 µm
    pd.DataFrame(poly).to_csv(tmp_path / "rois.csv", index=False)
    status = ["negative", "negative", "negative", "positive", "positive", "positive", "negative",
              "negative"]  # fmt: skip
    pd.DataFrame({"roi": range(1, 9), "mri_status": status}).to_csv(
        tmp_path / "st.csv", index=False
    )
    out = tmp_path / "les.parquet"
    args = ["lesions", str(store), "--objects", "prob=0.5", "--rois", str(tmp_path / "rois.csv"),
            "--status", str(tmp_path / "st.csv"), "--output", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, [*args, "--figure", str(tmp_path / "fig3.png")])
    assert res.exit_code == 0, res.output
    from PIL import Image

    with Image.open(tmp_path / "fig3.png") as im:
        assert im.size[0] > 300
    assert (tmp_path / "fig3.svg").stat().st_size > 1000
    rois = pd.read_parquet(tmp_path / "les_rois.parquet").sort_values("roi")
    assert rois["lesions"].tolist() == counts
    assert np.allclose(rois["total_um3"], np.array(counts) * 2 * 2 * 3)
    cmp = pd.read_csv(tmp_path / "les_rois_mann_whitney.csv").set_index("metric")
    neg = [c for c, s in zip(counts, status, strict=True) if s == "negative"]
    pos = [c for c, s in zip(counts, status, strict=True) if s == "positive"]
    ref = mannwhitneyu(neg, pos, method="asymptotic", use_continuity=True)
    assert cmp.loc["lesions", "statistic"] == pytest.approx(ref.statistic)
    assert cmp.loc["lesions", "p"] == pytest.approx(ref.pvalue, rel=1e-9)
    # a rating table that misses an ROI is refused, and nothing is written
    pd.DataFrame({"roi": range(1, 8), "mri_status": status[:7]}).to_csv(tmp_path / "st.csv",
                                                                          index=False)  # fmt: skip
    out2 = tmp_path / "again.parquet"
    res = CliRunner().invoke(app, [*args[:-1], str(out2)])
    assert res.exit_code == 2
    assert "unrated [8]" in res.output
    assert not out2.exists()
    assert not (tmp_path / "again_rois.parquet").exists()
    res = CliRunner().invoke(app, [*args[:6], "--mri", "prob", "--output", str(out2)])
    assert res.exit_code == 2
    assert "--positive-below" in res.output
