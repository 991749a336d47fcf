"""Automatic crops prefer low registration error (bootstrap TRE maps) and honour --max-tre."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.interpolate import RegularGridInterpolator
from typer.testing import CliRunner

from bridge_xr.io.read import read_image
from bridge_xr.learn.crops import _auto_crops, tre_on_grid
from bridge_xr.model.units import conversion_factor
from bridge_xr.register.landmarks import read_csv
from bridge_xr.register.registration import register
from bridge_xr.testing.phantom import PhantomConfig
from bridge_xr.testing.study import write_analysis_study
from bridge_xr_cli.main import app


def test_auto_crops_rank_by_error_and_drop_tiles_above_the_limit() -> None:
    covered = np.ones((3, 16, 32), dtype=bool)
    label = np.zeros((3, 16, 32), dtype=np.uint8)
    label[:, 4:12, :] = 1  # vessel everywhere along x
    label[:, :, :8] = 0
    label[:, 4:6, :8] = 1  # ...but the left tile has less of it
    tre = np.broadcast_to(np.linspace(10.0, 100.0, 32), (3, 16, 32)).copy()  # worse to the right
    plain = _auto_crops(covered, label, 16, 5)
    ranked = _auto_crops(covered, label, 16, 5, tre)
    limited = _auto_crops(covered, label, 16, 5, tre, max_tre_um=40.0)
    assert plain == [(0, 3, 0, 16, 8, 24)]  # the most vessel first: it blocks both neighbours
    assert ranked == [(0, 3, 0, 16, 0, 16), (0, 3, 0, 16, 16, 32)]  # lowest error first
    assert limited == [(0, 3, 0, 16, 0, 16)]  # only the left tile's mean TRE is below 40 µm
    assert all(float(tre[:, y0:y1, x0:x1].mean()) <= 40.0 for _, _, y0, y1, x0, x1 in limited)


def test_export_uses_the_tre_map_of_the_registration(tmp_path) -> None:
    studies = write_analysis_study(tmp_path, ("M001", "M002"), PhantomConfig.tiny())
    for sub in studies:
        register(
            sub.store,
            fixed="invivo_mri/d060/T2w",
            moving="twophoton/d060/angiogram",
            landmarks=read_csv(sub.landmark_csvs[0]),
            model="tps",
            name="angiogram_to_mri",
            tre_map=True,
            fle_um=20.0,
            overwrite=True,
        )
    st = studies[0]
    runner = CliRunner()
    base = ["learn", "export", str(tmp_path / "study"), "--spacing", "30um,30um,30um",
            "--crop-size", "4", "--min-vessel", "1", "--no-verify"]  # fmt: skip
    r = runner.invoke(app, [*base, "--output", str(tmp_path / "all")])
    assert r.exit_code == 0, r.output
    cases = pd.read_csv(next((tmp_path / "all").glob("Dataset*/cases.csv")))
    assert cases["tre_um"].notna().all()
    # the per-voxel error is the TRE map sampled at the export grid's voxel centres
    grid = read_image(str(st.store), "learn/d060/T2w_grid")
    tre_img = read_image(str(st.store), "qc/angiogram_to_mri/tre_map")
    err = tre_on_grid(str(st.store), "learn/d060/T2w_grid", "twophoton/d060/angiogram")
    assert err is not None
    assert err.shape == grid.shape
    axes = [
        tre_img.attrs["origin"][d] + np.arange(tre_img.sizes[d]) * tre_img.attrs["spacing"][d]
        for d in "zyx"
    ]
    f = conversion_factor(grid.attrs["unit"], tre_img.attrs["unit"])
    pts = np.stack(
        np.meshgrid(
            *[(grid.attrs["origin"][d] + np.arange(grid.sizes[d]) * grid.attrs["spacing"][d]) * f
              for d in "zyx"], indexing="ij",
        ), axis=-1,
    )  # fmt: skip
    lo = np.array([a[0] for a in axes])
    hi = np.array([a[-1] for a in axes])
    ref = RegularGridInterpolator(axes, np.asarray(tre_img.values, float))(np.clip(pts, lo, hi))
    np.testing.assert_allclose(err, ref, rtol=1e-6, atol=1e-6)
    # 2P diameters travel with every case; evaluate-folds uses them for the vessel-wise table
    # (a validation folder holding the truth itself: a perfect "prediction", nnU-Net's layout)
    import json
    import shutil

    from bridge_xr.learn.masks import read_mask

    ds = next((tmp_path / "all").glob("Dataset*"))
    val = tmp_path / "model" / "fold_0" / "validation"
    val.mkdir(parents=True)
    for case in cases.case:
        assert (ds / "bridge_xr" / "diameters" / f"{case}.nii.gz").exists()
        shutil.copy(ds / "labelsTr" / f"{case}.nii.gz", val / f"{case}.nii.gz")
    cv_path = tmp_path / "cv.json"
    r = runner.invoke(app, ["learn", "evaluate-folds", str(tmp_path / "model"),
                            "--dataset", str(ds), "--json", str(cv_path)])  # fmt: skip
    assert r.exit_code == 0, r.output
    vis = json.loads(cv_path.read_text())["visibility"]
    n_truth = 0
    for case in cases.case:
        truth, _ = read_mask(str(ds / "labelsTr" / f"{case}.nii.gz"))
        diam, _ = read_mask(str(ds / "bridge_xr" / "diameters" / f"{case}.nii.gz"))
        assert np.all(diam[truth > 0] > 0)  # every truth voxel holds 2P vessel
        lo, hi = diam[truth > 0].min(), diam[truth > 0].max()
        rows = [v for v in vis["per_vessel"] if v["case"] == case]
        assert all(lo - 1e-3 <= float(v["diameter_um"]) <= hi + 1e-3 for v in rows)
        n_truth += int((truth > 0).sum())
    assert sum(int(v["voxels"]) for v in vis["per_vessel"]) == n_truth  # segments partition it
    assert all(v["model_detected"] == 1.0 for v in vis["per_vessel"])
    # with a limit between the best and the worst crop, only crops under it are exported
    limit = float(np.median(cases["tre_um"]))
    r = runner.invoke(app, [*base, "--output", str(tmp_path / "lim"), "--max-tre", f"{limit}um"])
    assert r.exit_code == 0, r.output
    kept = pd.read_csv(next((tmp_path / "lim").glob("Dataset*/cases.csv")))
    assert len(kept) > 0
    assert (kept["tre_um"] <= limit + 1e-9).all()
    r = runner.invoke(app, [*base, "--output", str(tmp_path / "none"), "--max-tre", "0.001um"])
    assert r.exit_code == 2
    assert "--max-tre" in r.stderr
    # exporting again at another spacing remakes the export grid instead of reusing the old one
    other = [a if a != "30um,30um,30um" else "20um,20um,20um" for a in base]
    r = runner.invoke(app, [*other, "--output", str(tmp_path / "coarse")])
    assert r.exit_code == 0, r.output
    grid = read_image(str(st.store), "learn/d060/T2w_grid")
    assert grid.attrs["spacing"]["x"] * conversion_factor(
        grid.attrs["unit"], "um"
    ) == pytest.approx(20.0)
    import nibabel as nib

    img = nib.load(next((tmp_path / "coarse").glob("Dataset*/imagesTr/*.nii.gz")))
    np.testing.assert_allclose(img.header.get_zooms(), (0.02, 0.02, 0.02), rtol=1e-6)


def test_microscopy_diameter_measures_cylinders_in_their_own_space() -> None:
    from zarr.storage import MemoryStore

    from bridge_xr.io.subject import add_image
    from bridge_xr.learn.crops import microscopy_diameter
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance
    from bridge_xr.scene.mapping import map_points

    sp = (3.0, 2.0, 2.0)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip((40, 60, 120), sp, strict=True)],
                          indexing="ij")  # fmt: skip
    thin = (z - 60) ** 2 + (x - 60) ** 2 <= 10.0**2  # 20 µm, along y
    thick = (z - 60) ** 2 + (x - 170) ** 2 <= 30.0**2  # 60 µm
    data = np.where(thin | thick, 2000, 500).astype(np.uint16)
    store = MemoryStore()
    img = make_image(data, dims="zyx", spacing=sp, origin=(10.0, 0.0, 5.0), unit="um")
    add_image(store, img, ImageMetadata(path="twop/d1/angiogram", modality="twophoton",
                                        provenance=Provenance.now("t")))  # fmt: skip
    path = microscopy_diameter(store, "twop/d1/angiogram", "d1", 1000.0)
    d = np.asarray(read_image(store, path).values)
    assert np.all(d[~(thin | thick)] == 0)
    assert abs(np.median(d[thin]) - 20.0) <= 0.15 * 20 + 2 * 2.0
    assert abs(np.median(d[thick]) - 60.0) <= 0.15 * 60
    # asked again with another threshold, the stored map is remade (not silently reused)
    assert microscopy_diameter(store, "twop/d1/angiogram", "d1", 2500.0) == path
    assert not np.asarray(read_image(store, path).values).any()  # nothing above 2500
    pts = np.array([[10.0, 20.0, 30.0], [200.0, 50.0, 100.0]])
    np.testing.assert_allclose(map_points(store, pts, path, "twop/d1/angiogram"), pts)
