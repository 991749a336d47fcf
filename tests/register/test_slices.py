"""Ex vivo slice stacks: sections stacked, registered slice by slice, chained to in vivo MRI.

Ground truth is the phantom of :mod:`bridge_xr.testing.exvivo`: every section's 2D map onto its
MRI slice and the 3D deformation between the two MRIs are known in closed form.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from typer.testing import CliRunner

from bridge_xr.extract.densities import density
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject
from bridge_xr.model.slices import SliceStackModel, fit_plane, slice_index
from bridge_xr.register.registration import register
from bridge_xr.register.slices import register_slices
from bridge_xr.resampling import resample
from bridge_xr.scene.mapping import map_points
from bridge_xr.testing.exvivo import (
    exvivo_tissue,
    invivo_landmarks,
    invivo_tumour_fraction,
    slice_scene,
    slice_truth,
)
from bridge_xr_cli.main import app

runner = CliRunner()
FIXED, MOVING = "exvivo_mri/T2w", "exvivo/slab03"


def _section_points(truth, k: int, n: int = 200, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Random fixed points (zyx µm) in MRI slice k and where the truth puts them in section k."""
    rng = np.random.default_rng(seed + k)
    xy = rng.uniform(120, 680, size=(n, 2))
    z = (k + 0.5) * truth.thickness_um + rng.uniform(-40, 40, size=n)
    uv = truth.to_moving(k, xy)
    fixed = np.column_stack([z, xy[:, 1], xy[:, 0]])
    moving = np.column_stack([z, uv[:, 1], uv[:, 0]])
    return fixed, moving


# -- the model ---------------------------------------------------------------------------------


def test_plane_fits_recover_known_2d_maps_and_invert() -> None:
    rng = np.random.default_rng(0)
    f = rng.uniform(0, 500, size=(8, 2))
    a = np.deg2rad(7.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    for model, mat in (
        ("rigid", rot),
        ("similarity", 1.1 * rot),
        ("affine", rot @ [[1, 0.1], [0, 0.9]]),
    ):
        m = f @ np.asarray(mat).T + [12.0, -7.0]
        fitted = fit_plane(model, f, m)  # type: ignore[arg-type]
        p = np.column_stack([f, np.full(len(f), 33.0)])
        assert np.allclose(fitted.forward_points(p), np.column_stack([m, p[:, 2]]), atol=1e-9)
        assert np.allclose(fitted.inverse_points(fitted.forward_points(p)), p, atol=1e-9)
    # a reflection is not a rigid map: the best proper rotation is fitted instead
    refl = fit_plane("rigid", f, f * [-1.0, 1.0])
    assert np.linalg.det(refl.matrix) > 0
    # 2D TPS interpolates its landmarks and inverts by Newton
    m = f + 10 * np.sin(f[:, ::-1] / 90.0)
    tps = fit_plane("tps", f, m)
    p = np.column_stack([f, np.zeros(len(f))])
    assert np.allclose(tps.forward_points(p)[:, :2], m, atol=1e-8)
    assert np.allclose(tps.inverse_points(tps.forward_points(p)), p, atol=1e-6)


def test_slice_stack_keeps_points_in_their_slab_and_round_trips() -> None:
    f = np.array([[0, 0], [100, 0], [0, 100.0]])
    planes = tuple((k, k + 1, fit_plane("rigid", f, f + [k * 3.0, 1.0])) for k in range(3))
    stack = SliceStackModel("rigid", (50.0, 100.0), (50.0, 100.0), planes)
    zyx = np.array([[110.0, 5.0, 7.0], [199.9, 5.0, 7.0], [200.0, 5.0, 7.0], [20.0, 5.0, 7.0]])
    out = stack.transform_points(zyx)
    # fixed slice 1 (z 100-200) -> section 0 (+0 µm in x), the depth kept within the slab; the
    # slab face z = 200 belongs to slice 2 -> section 1 (+3 µm in x)
    assert np.allclose(out[:3], [[10.0, 6.0, 7.0], [99.9, 6.0, 7.0], [100.0, 6.0, 10.0]])
    assert np.isnan(out[3]).all()  # fixed slice 0 has no section: nowhere, not a neighbour's map
    assert np.allclose(stack.transform_points(out[:3], inverse=True), zyx[:3])
    again = SliceStackModel.from_description(stack.describe())
    assert np.allclose(again.transform_points(zyx[:3]), out[:3])
    assert slice_index(np.array([49.999, 50.0]), 0.0, 100.0).tolist() == [0, 1]


# -- convert slices ----------------------------------------------------------------------------


def _write_sections(folder: Path, n: int = 3) -> list[Path]:
    files = []
    for k in range(n):
        img = np.full((2, 20 + 2 * k, 30 - k), k + 1, np.uint16)  # sizes differ per section
        img[1] *= 10
        p = folder / f"sec{k + 1}.ome.tif"
        tifffile.imwrite(p, img, ome=True, metadata={
            "axes": "CYX", "PhysicalSizeX": 0.325, "PhysicalSizeY": 0.325,
            "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm", "Channel": {"Name": ["DAPI", "nestin"]},
        })  # fmt: skip
        files.append(p)
    return files


def test_convert_slices_stacks_sections_at_their_depths(tmp_path: Path) -> None:
    files = _write_sections(tmp_path)
    store = tmp_path / "M.ome.zarr"
    res = runner.invoke(app, ["convert", "slices", *map(str, files), str(store), "--image",
                              "exvivo/slab03", "--thickness", "100um", "--order", "3..1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    img = read_image(store, "exvivo/slab03")
    assert img.dims == ("c", "z", "y", "x")
    assert img.shape == (2, 3, 24, 30)
    assert list(img.c.values) == ["DAPI", "nestin"]
    assert img.attrs["spacing"]["z"] == pytest.approx(100.0)
    assert np.allclose(img.z.values, [50.0, 150.0, 250.0])  # section k centred at (k + 1/2) t
    data = img.values
    # reversed order: the last file is the first section; padding is zero, content unchanged
    assert (data[0, 0, :24, :28] == 3).all()
    assert (data[0, 2, :20, :30] == 1).all()
    assert (data[0, 2, 20:, :] == 0).all()
    assert (data[1, 1, :22, :29] == 20).all()
    meta = read_subject(store).images["exvivo/slab03"]
    slices = meta.acquisition.extra["slices"]
    assert [s["source"] for s in slices] == ["sec3.ome.tif", "sec2.ome.tif", "sec1.ome.tif"]
    assert slices[0]["shape_yx"] == [24, 28]


def test_convert_slices_refuses_what_would_be_wrong(tmp_path: Path) -> None:
    files = _write_sections(tmp_path)
    odd = tmp_path / "odd.ome.tif"
    tifffile.imwrite(odd, np.zeros((2, 20, 30), np.uint16), ome=True, metadata={
        "axes": "CYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65,
        "Channel": {"Name": ["DAPI", "nestin"]},
    })  # fmt: skip
    store = tmp_path / "M.ome.zarr"
    for extra, word in (
        ([str(files[0]), str(odd)], "pixel size"),
        ([*map(str, files)], "--order"),
    ):
        args = ["convert", "slices", *extra, str(store), "--image", "exvivo/s", "--thickness"]
        args += ["100um"] + (["--order", "1,1,2"] if word == "--order" else [])
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert word in res.output, res.output
        assert "Traceback" not in res.output
    res = runner.invoke(app, ["convert", "slices", str(files[0]), str(store), "--image", "e/s",
                              "--thickness", "100"])  # fmt: skip
    assert res.exit_code == 2
    assert "unit" in res.output
    assert not store.exists()  # nothing half-written


# -- register slices ---------------------------------------------------------------------------


def test_register_slices_recovers_each_sections_map(tmp_path: Path) -> None:
    store = tmp_path / "M.ome.zarr"
    scene, lms = slice_scene(3, where=store)
    truth = slice_truth(3)
    lm_csv = tmp_path / "lms.csv"
    lms.to_csv(lm_csv, index=False)
    report = tmp_path / "qc" / "slices.json"
    res = runner.invoke(app, ["register-slices", str(store), "--fixed", FIXED, "--moving", MOVING,
                              "--landmarks", str(lm_csv), "--model", "affine", "--report",
                              str(report), "--channel", "DAPI"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "section   2 -> MRI slice   2" in res.output
    rep = json.loads(report.read_text())
    assert [r["section"] for r in rep["per_slice"]] == [1, 2, 3]
    assert rep["rmse_um"] < 1e-6
    assert rep["consecutive"]
    assert rep["unregistered_slices"] == []
    assert (tmp_path / "qc" / "slices_errors.png").stat().st_size > 1000
    assert (tmp_path / "qc" / "slices_overlay.png").stat().st_size > 1000
    rec = read_subject(store).registrations["slices"]
    assert rec.model == "slices"
    assert rec.certified_max_error_um is not None
    for k in range(3):
        fixed, moving = _section_points(truth, k)
        assert np.abs(map_points(store, fixed, FIXED, MOVING) - moving).max() < 1e-6
        assert np.abs(map_points(store, moving, MOVING, FIXED) - fixed).max() < 1e-6


def test_tps_per_section_follows_a_bend_within_landmark_noise() -> None:
    truth = slice_truth(3, nonlinear=True)
    errs = {}
    for model in ("affine", "tps"):
        scene, lms = slice_scene(3, nonlinear=True, noise_um=1.0)
        _, rep = register_slices(scene, fixed=FIXED, moving=MOVING, landmarks=lms, model=model)
        e = [np.linalg.norm(map_points(scene, f, FIXED, MOVING) - m, axis=1)
             for f, m in (_section_points(truth, k) for k in range(3))]  # fmt: skip
        errs[model] = float(np.sqrt(np.mean(np.concatenate(e) ** 2)))
        assert rep["per_slice"][0]["loo_tre_rms_um"] is not None
    # 16 landmarks per section with 1 µm noise, an 8 µm bend: TPS follows it to within the
    # landmark noise, affine cannot
    assert errs["tps"] < 1.5, errs
    assert errs["affine"] > 2 * errs["tps"], errs


def test_sections_resample_onto_the_mri_and_densities_match_the_phantom() -> None:
    scene, lms = slice_scene(3)
    register_slices(scene, fixed=FIXED, moving=MOVING, landmarks=lms, model="affine")
    out = resample(scene, moving=MOVING, onto=FIXED, spacing_um=(100, 5, 5), nan_outside=True)
    z = (np.arange(3) + 0.5) * 100
    yx = (np.arange(160) + 0.5) * 5
    zz, yy, xx = np.meshgrid(z, yx, yx, indexing="ij")
    tum = out.sel(c="tumour").values
    ok = np.isfinite(tum)
    assert ok.mean() > 0.95
    wrong = np.abs(tum[ok] - exvivo_tissue(xx, yy, zz, "tumour")[ok]) > 0.5
    assert wrong.mean() < 0.005  # only pixels on the tumour's edge, by interpolation
    # tumour fraction per MRI voxel vs the analytic area fraction in each 25 µm pixel
    ds = density(scene, microscopy=MOVING, mri=FIXED, channel="tumour", threshold=0.5,
                 method="resliced")  # fmt: skip
    fr, cov = ds["fraction"].values, ds["coverage"].values
    s = 25 / 20
    fine = (np.arange(32 * 20) + 0.5) * s
    fy, fx = np.meshgrid(fine, fine, indexing="ij")
    truth = np.stack([exvivo_tissue(fx, fy, np.full_like(fx, zc), "tumour")
                      .reshape(32, 20, 32, 20).mean(axis=(1, 3)) for zc in z])  # fmt: skip
    full = cov > 0.999
    assert full.mean() > 0.9
    err = np.abs(fr[full] - truth[full])
    assert err.mean() < 0.005
    assert err.max() <= 0.2 + 1e-9
    assert ds.attrs["density"]["chain_error"]["hops"][0]["model"] == "slices"
    with pytest.raises(Exception, match="resliced"):
        density(scene, microscopy=MOVING, mri=FIXED, channel="tumour", threshold=0.5)


def test_sections_without_landmarks_or_with_two_mri_slices_are_never_guessed() -> None:
    scene, lms = slice_scene(3)
    few = lms[~lms["name"].str.startswith("s2_")]
    _, rep = register_slices(scene, fixed=FIXED, moving=MOVING, landmarks=few, model="affine")
    assert rep["unregistered_slices"] == [2]
    truth = slice_truth(3)
    fixed, _ = _section_points(truth, 1)
    assert np.isnan(map_points(scene, fixed, FIXED, MOVING, strict=False)).all()
    bad = lms.copy()
    bad.loc[bad["name"] == "s1_L1", "fixed_z"] = 150.0  # one landmark on the next MRI slice
    with pytest.raises(Exception, match="section 1 point at MRI slices"):
        register_slices(scene, fixed=FIXED, moving=MOVING, landmarks=bad, model="affine",
                        name="bad")  # fmt: skip
    thin, lms2 = slice_scene(3, thickness_um=60.0)
    # the MRI of a 60 µm phantom has 60 µm slices too: equal thickness is accepted
    register_slices(thin, fixed=FIXED, moving=MOVING, landmarks=lms2, model="affine")


# -- chains: sections -> ex vivo MRI -> in vivo MRI --------------------------------------------


def test_points_and_densities_go_through_the_whole_chain(tmp_path: Path) -> None:
    store = tmp_path / "M.ome.zarr"
    scene, lms = slice_scene(3, invivo=True, where=store)
    truth = slice_truth(3)
    register_slices(scene, fixed=FIXED, moving=MOVING, landmarks=lms, model="affine")
    register(scene, fixed=FIXED, moving="invivo_mri/d060/T2w", landmarks=invivo_landmarks(truth),
             model="tps", name="invivo_to_exvivo")  # fmt: skip
    # points: in vivo -> ex vivo (inverse TPS) -> section (its 2D map)
    rng = np.random.default_rng(3)
    p = np.column_stack([rng.uniform(110, 190, 300), rng.uniform(150, 650, (300, 2))])  # zyx
    ex = truth.invivo_to_exvivo(p[:, ::-1])  # xyz
    k = slice_index(ex[:, 2], 50.0, 100.0)
    want = np.array(
        [[*truth.to_moving(int(kk), e[None, :2])[0][::-1]] for kk, e in zip(k, ex, strict=False)]
    )
    got = map_points(scene, p, "invivo_mri/d060/T2w", MOVING)
    assert np.abs(got[:, 1:] - want).max() < 3.0  # the TPS hop's own error, 40 landmarks
    csv = tmp_path / "cells.csv"
    pd.DataFrame({"x": p[:, 2], "y": p[:, 1], "z": p[:, 0], "id": range(300)}).to_csv(csv)
    res = runner.invoke(app, ["transform-points", str(store), str(csv), "--from",
                              "invivo_mri/d060/T2w", "--to", MOVING, "--output",
                              str(tmp_path / "out.csv")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "accumulated" in res.output
    assert "slices" in res.output
    # densities of the sections' tumour on the in vivo grid, against the phantom through the chain
    ds = density(scene, microscopy=MOVING, mri="invivo_mri/d060/T2w", channel="tumour",
                 threshold=0.5, method="resliced")  # fmt: skip
    fr, cov = ds["fraction"].values, ds["coverage"].values
    t = invivo_tumour_fraction(truth, fr.shape)
    full = cov > 0.999
    assert full.sum() > 500
    err = np.abs(fr[full] - t[full])
    assert err.mean() < 0.02, err.mean()
    hops = ds.attrs["density"]["chain_error"]
    assert [h["registration"] for h in hops["hops"]] == ["invivo_to_exvivo", "slices"]
    assert hops["accumulated_um"] is not None
    # the same through `bridge extract`, one channel of the stack, errors in the provenance
    res = runner.invoke(app, ["extract", str(store), "--mri", "invivo_mri/d060/T2w",
                              "--microscopy", f"{MOVING}#tumour", "--threshold", "0.5",
                              "--method", "resliced", "--output", str(tmp_path / "tables")])  # fmt: skip
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "tables")
    col = table["fraction_tumour"].to_numpy()
    assert np.isclose(np.nansum(col), np.nansum(np.where(cov > 0, fr, np.nan)), rtol=1e-6)
    prov = json.loads(next((tmp_path / "tables").rglob("_provenance.json")).read_text())
    errs = prov["parameters"]["registration_errors"][f"{MOVING}#tumour"]
    assert errs["accumulated_um"] == pytest.approx(hops["accumulated_um"])


def test_a_scene_sees_registrations_written_through_it_by_any_function() -> None:
    # the Scene's transform graph is rebuilt after every write, whoever made it
    scene, lms = slice_scene(2)
    register_slices(scene, fixed=FIXED, moving=MOVING, landmarks=lms, model="affine", name="a")
    assert [r.name for r, _ in scene.graph.chain(FIXED, MOVING)] == ["a"]
    moved = lms.assign(moving_x=lms["moving_x"] + 7.0)
    register_slices(scene, fixed=FIXED, moving=MOVING, landmarks=moved, model="affine", name="a",
                    overwrite=True)  # fmt: skip
    p = np.array([[50.0, 300.0, 300.0]])
    got = scene.map_points(p, src=FIXED, dst=MOVING)  # the new model, not the overwritten one
    assert np.isclose(got[0, 2] - map_points(scene.store, p, FIXED, MOVING)[0, 2], 0.0)
    first, _ = slice_scene(2)
    register_slices(first, fixed=FIXED, moving=MOVING, landmarks=lms, model="affine", name="a")
    assert np.isclose(got[0, 2] - first.map_points(p, src=FIXED, dst=MOVING)[0, 2], 7.0)
