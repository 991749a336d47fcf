"""Tile scans end to end on synthetic scans with known truth: convert, stitch, flat field, fuse.

The truth: a volume cut into overlapping tiles whose true origins differ from the stage's
nominal grid by a known (sub-voxel) jitter; noise, vignetting, zig-zag order, one empty tile.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from bridge_xr.errors import InvalidInputError
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject, scene_transforms
from bridge_xr.io.validate import validate_store
from bridge_xr.testing.tiles import SyntheticScan, synthetic_scan
from bridge_xr.tiles.fusion import fuse
from bridge_xr.tiles.scan import read_tile_scan
from bridge_xr.tiles.stitching import stitch
from bridge_xr_cli.main import app

runner = CliRunner()
SCAN = "twophoton/d1/angiogram"


def _bridge(*args: object) -> str:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


def _refused(*args: object) -> str:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    return " ".join(r.output.split())


def _rms_error_px(store: Path, s: SyntheticScan) -> tuple[float, np.ndarray]:
    """RMS distance of registered to true origins (voxels), the common offset removed."""
    scan = read_tile_scan(store, SCAN)
    reg = np.array([t.registered_um for t in scan.tiles]) / np.array(s.spacing_um)
    keep = [k for k in range(len(reg)) if k != s.empty]
    e = (reg - s.true_origin_px)[keep]
    e -= e.mean(axis=0)
    return float(np.sqrt((e**2).sum(axis=1).mean())), e


def _convert(tmp: Path, s: SyntheticScan, store: Path, *extra: object) -> None:
    paths = s.write_tiffs(tmp / "tiles")
    _bridge("convert", "tiles", *paths, store, "--image", SCAN,
            "--positions", tmp / "tiles" / "positions.csv", *extra)  # fmt: skip


def test_stitch_recovers_known_subvoxel_offsets_and_reports_every_link(tmp_path) -> None:
    s = synthetic_scan(grid=(3, 3), subpixel=True, empty_tile=4, vignetting=0.3, seed=1)
    store = tmp_path / "M.ome.zarr"
    _convert(tmp_path, s, store)
    out = _bridge("stitch", store, "--image", SCAN, "--flatfield", "--report", tmp_path / "rep")
    rms, err = _rms_error_px(store, s)
    assert rms <= 0.5, err
    assert "t004" in out  # the tile without content is reported, left at its stage position
    rep = json.loads((tmp_path / "rep" / "stitch.json").read_text())
    assert rep["summary"]["unlinked_tiles"] == ["t004"]
    for lk in rep["links"]:
        involves_empty = "t004" in (lk["tile_i"], lk["tile_j"])
        if lk["used"]:
            assert lk["side"]
            assert not involves_empty
            assert lk["residual_px"] <= 1.5
        elif lk["side"]:
            assert involves_empty
            assert "quality" in lk["reason"]
    for name in ("layout_registered.png", "residuals.png"):
        assert (tmp_path / "rep" / name).read_bytes()[:4] == b"\x89PNG"
    # both edges per tile: the stage one is kept, the registered one added
    names = {t.name for t in scene_transforms(store)}
    scan = read_tile_scan(store, SCAN)
    for t in scan.tiles:
        assert {f"{t.path}:stage", f"{t.path}:registered"} <= names
        assert (t.stage_um == t.registered_um) == (t.id == "t004")  # jittered, except unlinked
    assert validate_store(store) == []


def test_stage_positions_from_czi_ome_xml_and_csv_agree(tmp_path) -> None:
    s = synthetic_scan(grid=(2, 2), seed=2)
    csv_store, czi_store, ome_store = (tmp_path / f"{n}.ome.zarr" for n in ("csv", "czi", "ome"))
    _convert(tmp_path, s, csv_store)
    _bridge("convert", "tiles", s.write_czi(tmp_path / "scan.czi"), czi_store, "--image", SCAN)
    ome = s.write_tiffs(tmp_path / "ome", ome_positions=True)
    _bridge("convert", "tiles", *ome, ome_store, "--image", SCAN)
    got = [np.array([t.stage_um for t in read_tile_scan(p, SCAN).tiles])
           for p in (csv_store, czi_store, ome_store)]  # fmt: skip
    expect = s.stage_um - s.stage_um.min(axis=0)
    for g in got:
        np.testing.assert_allclose(g, expect, atol=1e-6)
    czi_tile = zarr.open_array(czi_store, path=f"{SCAN}/t003/s0")[...]
    np.testing.assert_array_equal(czi_tile, s.tiles[3][None])  # CZI tiles keep their channel
    fused = []
    for p in (csv_store, czi_store):  # the channel axis goes through stitch and fuse unchanged
        stitch(p, SCAN)
        fuse(p, SCAN, "twophoton/d1/fused")
        fused.append(zarr.open_array(p, path="twophoton/d1/fused/s0")[...])
    np.testing.assert_array_equal(fused[1], fused[0][None])
    layout = czi_store / "bridge_xr" / "tiles" / SCAN / "stage_layout.png"
    assert layout.read_bytes()[:4] == b"\x89PNG"


def test_wrong_stage_layouts_are_caught_and_fixed_by_explicit_options(tmp_path) -> None:
    s = synthetic_scan(grid=(2, 3), seed=3)
    paths = s.write_tiffs(tmp_path / "tiles")
    # unit confusion: millimetres in columns without a unit, read as micrometres
    mm = tmp_path / "mm.csv"
    mm.write_text("file,x,y\n" + "".join(f"{p.name},{float(x) / 1000!r},{float(y) / 1000!r}\n"
                  for p, (_, y, x) in zip(paths, s.stage_um, strict=True)))  # fmt: skip
    store = tmp_path / "M.ome.zarr"
    msg = _refused("convert", "tiles", *paths, store, "--image", SCAN, "--positions", mm)
    assert "overlap by more than 90%" in msg
    assert "--positions-unit" in msg
    assert not store.exists() or SCAN not in read_subject(store).tile_scans
    _bridge("convert", "tiles", *paths, store, "--image", SCAN, "--positions", mm,
            "--positions-unit", "mm")  # fmt: skip
    # and the other way: micrometres read as millimetres
    um = tmp_path / "um.csv"
    um.write_text("file,x,y\n" + "".join(f"{p.name},{float(x)!r},{float(y)!r}\n"
                  for p, (_, y, x) in zip(paths, s.stage_um, strict=True)))  # fmt: skip
    msg = _refused("convert", "tiles", *paths, tmp_path / "U.ome.zarr", "--image", SCAN,
                   "--positions", um, "--positions-unit", "mm")  # fmt: skip
    assert "overlap no other tile" in msg
    # a stage that reports x flipped: plausible overlaps, but they do not match
    f = synthetic_scan(grid=(2, 3), seed=3, flip_x=True)
    flipped = tmp_path / "flipped.ome.zarr"
    _convert(tmp_path / "f", f, flipped)
    msg = _refused("stitch", flipped, "--image", SCAN)
    assert "stage layout is probably wrong" in msg
    assert "--flip-x" in msg
    assert read_tile_scan(flipped, SCAN).tiles[0].registered_um is None  # nothing recorded
    _convert(tmp_path / "f", f, flipped, "--flip-x", "--overwrite")
    _bridge("stitch", flipped, "--image", SCAN)
    assert _rms_error_px(flipped, f)[0] <= 0.5
    # one tile alone
    one = _refused("convert", "tiles", paths[0], tmp_path / "one.ome.zarr", "--image", SCAN,
                   "--positions", tmp_path / "tiles" / "positions.csv")  # fmt: skip
    assert "at least two" in one


def _volume_under(out: np.ndarray, s: SyntheticScan, store: Path) -> np.ndarray:
    """The source volume on the fused grid (registered positions = truth + a common offset)."""
    scan = read_tile_scan(store, SCAN)
    reg = np.array([t.registered_um for t in scan.tiles]) / np.array(s.spacing_um)
    assert np.ptp(s.true_origin_px - reg, axis=0).max() < 0.25  # one offset for all (nearest)
    o = np.rint(s.true_origin_px.min(axis=0)).astype(int)
    return s.volume[
        o[0] : o[0] + out.shape[0], o[1] : o[1] + out.shape[1], o[2] : o[2] + out.shape[2]
    ]


def test_fused_image_equals_the_source_whatever_the_shard_geometry(tmp_path) -> None:
    s = synthetic_scan(grid=(2, 3), noise=0, vignetting=0, seed=4)
    store = tmp_path / "M.ome.zarr"
    _convert(tmp_path, s, store)
    stitch(store, SCAN)
    # shards that cut across tiles and overlaps at odd places (the dask -> shard race)
    res = fuse(store, SCAN, "twophoton/d1/fused", interpolation="nearest",
               shards={"z": 8, "y": 40, "x": 56}, chunks={"z": 4, "y": 20, "x": 28})  # fmt: skip
    assert res.shards_written == res.shards_total > 6
    out = zarr.open_array(store, path="twophoton/d1/fused/s0")[...]
    truth = _volume_under(out, s, store)
    # an ordinary calibrated image: its first voxel sits at the leftmost registered tile corner
    img = read_image(store, "twophoton/d1/fused")
    reg = np.array([t.registered_um for t in read_tile_scan(store, SCAN).tiles])
    np.testing.assert_allclose([img.attrs["origin"][d] for d in "zyx"], reg.min(axis=0))
    assert [img.attrs["spacing"][d] for d in "zyx"] == list(s.spacing_um)
    covered = out > 0
    assert covered.mean() > 0.95
    np.testing.assert_array_equal(out[covered], truth[covered])  # interiors and overlaps
    # with noise: interiors are the tile (source + noise), overlaps average it down
    n = synthetic_scan(grid=(2, 3), noise=30, vignetting=0, seed=4)
    noisy = tmp_path / "N.ome.zarr"
    _convert(tmp_path / "n", n, noisy)
    stitch(noisy, SCAN)
    fuse(noisy, SCAN, "twophoton/d1/fused", interpolation="nearest")
    out = zarr.open_array(noisy, path="twophoton/d1/fused/s0")[...].astype(float)
    d = (out - _volume_under(out, n, noisy))[out > 0]
    assert abs(d.mean()) < 2
    assert d.std() < 30 * 1.1
    assert validate_store(noisy) == []


def test_flat_field_takes_the_vignetting_out(tmp_path) -> None:
    s = synthetic_scan(grid=(3, 3), noise=5, vignetting=0.4, seed=5)
    errors = {}
    for flat in (False, True):
        store = tmp_path / f"{flat}.ome.zarr"
        _convert(tmp_path / str(flat), s, store)
        stitch(store, SCAN, flatfield=flat)
        fuse(store, SCAN, "twophoton/d1/fused", interpolation="nearest")
        out = zarr.open_array(store, path="twophoton/d1/fused/s0")[...].astype(float)
        truth = _volume_under(out, s, store).astype(float)
        ok = out > 0
        ratio = out[ok] / truth[ok]
        errors[flat] = float(np.std(ratio / ratio.mean()))
    scan = read_tile_scan(tmp_path / "True.ome.zarr", SCAN)
    field = zarr.open_array(tmp_path / "True.ome.zarr", path=f"{scan.flatfield}/s0")[...]
    vig = s.vignette / s.vignette.mean()
    assert np.median(np.abs(field / vig - 1)) < 0.05
    assert errors[True] < 0.5 * errors[False]


def test_fusion_on_a_local_cluster_is_byte_identical_to_threads(tmp_path) -> None:
    s = synthetic_scan(grid=(2, 2), subpixel=True, seed=6)
    store = tmp_path / "M.ome.zarr"
    _convert(tmp_path, s, store)
    stitch(store, SCAN)
    fuse(store, SCAN, "twophoton/d1/threads", shards={"z": 8, "y": 64, "x": 64},
         chunks={"z": 8, "y": 32, "x": 32})  # fmt: skip
    _bridge("fuse", store, "--image", SCAN, "--image-out", "twophoton/d1/cluster",
            "--workers", 2, "--shards", "8,64,64", "--chunks", "8,32,32")  # fmt: skip
    a, b = store / "twophoton/d1/threads", store / "twophoton/d1/cluster"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "zarr.json")
    assert len(files) > 4
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_killed_fusion_resumes_only_unfinished_shards_byte_identically(tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    s = synthetic_scan(grid=(2, 3), subpixel=True, seed=7)
    store = tmp_path / "M.ome.zarr"
    _convert(tmp_path, s, store)
    stitch(store, SCAN)
    geometry = {"shards": {"z": 8, "y": 32, "x": 64}, "chunks": {"z": 8, "y": 32, "x": 32}}
    clean = fuse(store, SCAN, "twophoton/d1/clean", **geometry)
    code = (
        "from bridge_xr.tiles.fusion import fuse; "
        f"fuse({str(store)!r}, {SCAN!r}, 'twophoton/d1/resumed', client=None, **{geometry!r})"
    )
    env = {**os.environ, "BRIDGE_XR_TEST_FUSE_DELAY": "0.25", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    journal = store / "bridge_xr" / "fusion" / "twophoton/d1/resumed"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = list(journal.glob("*/done/*"))
        if len(done) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # a kill mid-write leaves zarr's temporary "<name>.<uuid>.partial" beside the records
    finished = len([p for p in journal.glob("*/done/*") if not p.name.endswith(".partial")])
    assert 3 <= finished < clean.shards_total
    assert "twophoton/d1/resumed" not in read_subject(store).images  # not published
    # as a kill inside zarr's atomic write leaves them, whether or not this run's kill did
    (next(journal.glob("*/done")) / "0.0.9.4f2a.partial").write_bytes(b"")
    shard = next(p for p in (store / "twophoton/d1/resumed/s0/c").rglob("*") if p.is_file())
    shard.with_suffix(".4f2a.partial").write_bytes(b"x")
    res = fuse(store, SCAN, "twophoton/d1/resumed", **geometry)
    assert res.shards_skipped == finished
    assert res.shards_written == clean.shards_total - finished
    assert not journal.exists()  # records removed once published
    a, b = store / "twophoton/d1/clean", store / "twophoton/d1/resumed"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "zarr.json")
    resumed = sorted(
        p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "zarr.json"
    )
    assert resumed == files  # no temporaries of the killed run are left behind
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    with pytest.raises(Exception, match="already exists"):
        fuse(store, SCAN, "twophoton/d1/resumed", **geometry)


def _layout_error_px(
    store: Path, s: SyntheticScan, skip: tuple[int, ...] = ()
) -> tuple[float, float]:
    """RMS and largest distance (voxels, y/x) of registered to true tile points, gauge removed.

    A 7 x 7 grid of points per tile is mapped by the stored registered layout and by the truth;
    one global affine between the two (what no tile-to-tile match can see) is fitted out.
    """
    from bridge_xr.tiles.scan import tile_matrices

    scan = read_tile_scan(store, SCAN)
    m = tile_matrices(scan, "registered")
    _, ny, nx = s.tiles[0].shape
    grid = np.array(
        [(0.0, y, x) for y in np.linspace(0, ny - 1, 7) for x in np.linspace(0, nx - 1, 7)]
    )
    keep = [k for k in range(len(m)) if k not in skip]
    got = np.concatenate([grid @ m[k][:, :3].T + m[k][:, 3] for k in keep])
    true = np.concatenate([s.true_points(k, grid) for k in keep])
    x = np.c_[got, np.ones(len(got))]
    gauge = np.linalg.lstsq(x, true, rcond=None)[0]
    e = (x @ gauge - true)[:, 1:]
    d = np.sqrt((e**2).sum(axis=1))
    return float(np.sqrt((d**2).mean())), float(d.max())


def _fused_against_truth(store: Path, s: SyntheticScan, image: str) -> tuple[float, float]:
    """Mean |fused - source| and their correlation, the source sampled through the layout."""
    from scipy import ndimage

    from bridge_xr.tiles.scan import tile_matrices

    img = read_image(store, image)
    out = np.asarray(img.data, float)
    org = np.array([img.attrs["origin"][d] for d in "zyx"])
    sp = np.asarray(s.spacing_um)
    m = tile_matrices(read_tile_scan(store, SCAN), "registered")
    pts = np.array([(z, y, x) for z in (0, 7) for y in (0, 50, 95) for x in (0, 60, 127)], float)
    got = np.concatenate([pts @ mk[:, :3].T + mk[:, 3] for mk in m])
    true = np.concatenate([s.true_points(k, pts) for k in range(len(m))])
    gauge = np.linalg.lstsq(np.c_[got, np.ones(len(got))], true, rcond=None)[0]
    idx = np.indices(out.shape).reshape(3, -1).T
    src = np.c_[org + idx * sp, np.ones(len(idx))] @ gauge
    ref = ndimage.map_coordinates(s.volume.astype(float), src.T, order=1, mode="nearest")
    ref = ref.reshape(out.shape)
    ok = out > 0
    ok[:, :10], ok[:, -10:], ok[:, :, :10], ok[:, :, -10:] = False, False, False, False
    return float(np.abs(out - ref)[ok].mean()), float(np.corrcoef(out[ok], ref[ok])[0, 1])


def test_affine_refinement_fits_tiles_that_differ_in_rotation_and_magnification(tmp_path) -> None:
    # every tile turned by up to ±1° about its centre and magnified by up to ±0.5 %
    s = synthetic_scan(grid=(3, 3), overlap=0.25, rotation_deg=1.0, scale=0.005, noise=0,
                       vignetting=0, seed=3)  # fmt: skip
    store = tmp_path / "M.ome.zarr"
    _convert(tmp_path, s, store)
    errors, fused = {}, {}
    for model in ("translation", "rigid", "affine"):
        out = _bridge("stitch", store, "--image", SCAN, "--model", model,
                      "--report", tmp_path / model)  # fmt: skip
        errors[model] = _layout_error_px(store, s)
        fuse(store, SCAN, f"twophoton/d1/{model}")
        fused[model] = _fused_against_truth(store, s, f"twophoton/d1/{model}")
        if model != "translation":
            assert "block matches" in out
    # a translation cannot fit turned tiles; the refinements can (0.52 -> 0.22 / 0.16 px measured)
    assert errors["translation"][0] > 0.4
    assert errors["rigid"][0] < 0.6 * errors["translation"][0]
    assert errors["affine"][0] < 0.25
    assert errors["affine"][1] < 0.6
    # the fused image follows: seams no longer double vessels (mean |error| 65 -> 25 measured)
    assert fused["affine"][0] < 0.5 * fused["translation"][0]
    assert fused["affine"][1] > fused["translation"][1]
    rep = json.loads((tmp_path / "affine" / "stitch.json").read_text())
    summ = rep["summary"]
    assert summ["model"] == "affine"
    assert summ["point_residual_rms_px"] < 0.5 * summ["translation_point_rms_px"]
    lo, hi = summ["rotation_deg_range"]
    assert -1.1 < lo < -0.3
    assert 0.3 < hi < 1.1
    assert all(lk["points"] >= 1 for lk in rep["links"] if lk["used"])
    # the registered edge of every tile is now an affine (the stage edge stays a translation)
    kinds = {t.name: t.type for t in scene_transforms(store)}
    tile = read_tile_scan(store, SCAN).tiles[0]
    assert (kinds[f"{tile.path}:registered"], kinds[f"{tile.path}:stage"]) == (
        "affine",
        "translation",
    )
    # a fused image is joined to the layout it was fused from; a new stitch drops stale joins
    assert "twophoton/d1/affine:layout" in kinds
    assert "twophoton/d1/translation:layout" not in kinds
    # points on a raw tile land where the fused image shows that tile's content
    from scipy import ndimage

    from bridge_xr.scene import open_scene

    centre = read_tile_scan(store, SCAN).tiles[4]
    rng = np.random.default_rng(0)
    ijk = np.c_[rng.integers(0, 8, 400), rng.integers(10, 86, 400), rng.integers(10, 118, 400)]
    um = ijk * np.asarray(s.spacing_um)
    mapped = open_scene(str(store)).map_points(um, src=centre.path, dst="twophoton/d1/affine")
    img = read_image(store, "twophoton/d1/affine")
    org = np.array([img.attrs["origin"][d] for d in "zyx"])
    at = ndimage.map_coordinates(
        np.asarray(img.data, float), ((mapped - org) / np.asarray(s.spacing_um)).T, order=1
    )
    raw = s.tiles[4][tuple(ijk.T)].astype(float)
    assert np.corrcoef(at, raw)[0, 1] > 0.98
    assert validate_store(store) == []


def test_affine_refinement_leaves_a_translation_scan_as_it_was(tmp_path) -> None:
    s = synthetic_scan(grid=(2, 3), overlap=0.25, subpixel=True, noise=10, seed=8)
    store = tmp_path / "M.ome.zarr"
    _convert(tmp_path, s, store)
    stitch(store, SCAN)
    before = _layout_error_px(store, s)[0]
    res = stitch(store, SCAN, model="affine")
    lin = np.array([t.registered_affine for t in res.scan.tiles])[:, 1:, 1:3]
    # block matches are noisier than whole overlaps: the refinement costs a little where there
    # is nothing to refine (0.08 -> 0.15 px RMS measured), which is why translation is the default
    np.testing.assert_allclose(lin, np.broadcast_to(np.eye(2), lin.shape), atol=5e-3)
    assert before < 0.15
    assert _layout_error_px(store, s)[0] < 0.25
    assert "'affine'" in _refused("stitch", store, "--image", SCAN, "--model", "spline")
    # a tile without content keeps its translation solution; the others are not turned with it
    e = synthetic_scan(grid=(3, 3), overlap=0.25, rotation_deg=0.5, empty_tile=4, seed=5)
    holed = tmp_path / "E.ome.zarr"
    _convert(tmp_path / "e", e, holed)
    res = stitch(holed, SCAN, model="affine")
    assert res.summary["unlinked_tiles"] == ["t004"]
    assert max(abs(v) for v in res.summary["rotation_deg_range"]) < 0.7
    np.testing.assert_allclose(res.scan.tiles[4].registered_um, res.scan.tiles[4].stage_um)
    assert _layout_error_px(holed, e, skip=(4,))[0] < 0.3
    with pytest.raises(InvalidInputError, match="model must be"):
        stitch(store, SCAN, model="spline")


def test_every_channel_of_a_multichannel_scan_is_fused_from_its_own_tiles(tmp_path) -> None:
    # shards hold one channel each: a shard task once wrote channel 0 into every channel
    from bridge_xr.model.image import make_image
    from bridge_xr.tiles.convert import write_tile_scan

    s = synthetic_scan(grid=(2, 2), overlap=0.25, rotation_deg=1.0, noise=0, vignetting=0, seed=3)
    images = [
        make_image(np.stack([t, t // 2]), dims="czyx", spacing=s.spacing_um, unit="um",
                   channel_names=["vessel", "half"])
        for t in s.tiles
    ]  # fmt: skip
    store = tmp_path / "M.ome.zarr"
    write_tile_scan(store, SCAN, images, s.stage_um)
    for model in ("translation", "affine"):
        stitch(store, SCAN, channel="vessel", model=model)
        fuse(store, SCAN, f"twophoton/d1/{model}")
        out = np.asarray(read_image(store, f"twophoton/d1/{model}").data).astype(int)
        assert out.shape[0] == 2
        assert out[0].max() > 1000
        assert np.abs(out[1] - out[0] / 2).max() <= 1.0  # rounding only
