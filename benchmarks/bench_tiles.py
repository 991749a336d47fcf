"""Tile scans end to end: stitch, fuse, then resample onto an MRI grid and extract densities.

A synthetic whole-window scan (uint16 tiles of 64 x 1024 x 1024 voxels, 1.1838 µm pixels, 5 µm
z, 10 % overlap, stage error up to 6 voxels, serpentine order) is written once per size. Each
phase runs in its own process, so its peak memory (VmHWM) is its own:

* ``stitch``  : ``bridge_xr.tiles.stitching`` (pairwise phase correlation + global solve), threads;
* ``fuse``    : ``bridge_xr.tiles.fusion``, one task per output shard, linear blending, threads;
* ``extract`` : ``bridge_xr.extract.densities.density`` of the fused image (thresholded) on a
                25 µm MRI grid through an affine registration;
* ``raw``     : the raw bound of fusion: the same bytes read from the tiles and written as the
                fused image's shards with zarr alone (no sampling, no blending), 2 threads;
* ``multiview-stitcher`` : registration + fusion of the same scan with multiview-stitcher, when
                it is importable (it is not a dependency of bridge_xr: install it in a separate
                environment and pass ``--mvs-python``).

Reports seconds, GB/h of fused output, peak RSS and the recovered offsets' RMS error (voxels)
against the known truth. Usage::

    python -m benchmarks.bench_tiles --sizes 2 4 8 --workdir W --json J
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._peak import peak_rss_mib

TILE = (64, 1024, 1024)
SPACING = (5.0, 1.1838, 1.1838)
OVERLAP = 0.1
JITTER = 6
PERIOD = 4096
SCAN = "twophoton/d1/angiogram"
FUSED = "twophoton/d1/fused"


def _grid(size_gb: float) -> tuple[int, int]:
    n = max(2, round(size_gb * 1e9 / (np.prod(TILE) * 2)))
    rows = max(1, int(np.floor(np.sqrt(n))))
    return rows, int(np.ceil(n / rows))


def _texture() -> np.ndarray:
    """Two periodic vessel-like planes; the volume blends them along z (structure changes in z)."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    out = []
    for _ in range(2):
        base = ndimage.gaussian_filter(rng.standard_normal((PERIOD, PERIOD)), 2.0, mode="wrap")
        out.append(np.clip(base / base.std() - 0.6, 0, None).astype(np.float32))
    return np.stack(out)


def _tile(tex: np.ndarray, y0: int, x0: int, seed: int) -> np.ndarray:
    ys = (y0 + np.arange(TILE[1])) % PERIOD
    xs = (x0 + np.arange(TILE[2])) % PERIOD
    a, b = tex[0][np.ix_(ys, xs)], tex[1][np.ix_(ys, xs)]
    z = np.arange(TILE[0], dtype=np.float32)[:, None, None]
    mix = np.cos(z / 6.0) ** 2
    depth = 0.6 + 0.4 * np.cos(z / 23.0)  # dimmer deeper
    rng = np.random.default_rng(seed)
    vol = (300.0 + 2500.0 * (mix * a + (1 - mix) * b) * depth).astype(np.uint16)
    vol += rng.integers(0, 40, size=TILE, dtype=np.uint16)  # independent noise in every tile
    return vol


def build(workdir: Path, size_gb: float) -> tuple[Path, np.ndarray]:
    """The scan's store (written once) and the true tile origins (voxels)."""
    import dask
    import dask.array as da

    from bridge_xr.model.image import make_image
    from bridge_xr.tiles.convert import write_tile_scan

    rows, cols = _grid(size_gb)
    store = workdir / f"tiles_{rows}x{cols}.ome.zarr"
    truth_file = workdir / f"tiles_{rows}x{cols}.truth.npy"
    if (store / "zarr.json").exists() and truth_file.exists():
        return store, np.load(truth_file)
    sy, sx = round(TILE[1] * (1 - OVERLAP)), round(TILE[2] * (1 - OVERLAP))
    order = [(r, c) for r in range(rows)
             for c in (range(cols) if r % 2 == 0 else range(cols - 1, -1, -1))]  # fmt: skip
    rng = np.random.default_rng(1)
    nominal = np.array([(0, r * sy, c * sx) for r, c in order], float)
    jitter = rng.integers(-JITTER, JITTER + 1, size=(len(order), 3)).astype(float)
    jitter[:, 0] = 0
    true = nominal + jitter
    tex = _texture()
    images = []
    for k, (_, y0, x0) in enumerate(true.astype(int)):
        arr = da.from_delayed(dask.delayed(_tile)(tex, int(y0), int(x0), k), TILE, dtype=np.uint16)
        images.append(make_image(arr, dims="zyx", spacing=SPACING, unit="um"))
    t0 = time.perf_counter()
    write_tile_scan(store, SCAN, images, nominal * np.array(SPACING), stage_error="12um")
    np.save(truth_file, true)
    print(f"built {rows}x{cols} tiles ({len(order) * np.prod(TILE) * 2 / 1e9:.1f} GB) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    return store, true


def case_stitch(store: Path, truth: np.ndarray, model: str = "translation") -> dict[str, Any]:
    from bridge_xr.tiles.stitching import stitch

    t0 = time.perf_counter()
    res = stitch(store, SCAN, model=model)
    wall = time.perf_counter() - t0
    reg = np.array([t.registered_um for t in res.scan.tiles]) / np.array(SPACING)
    e = reg - truth
    e -= e.mean(axis=0)
    return {
        "wall_s": wall,
        "links": res.summary["links"],
        "links_used": res.summary["links_used"],
        "offset_rms_px": float(np.sqrt((e**2).sum(axis=1).mean())),
        "offset_max_px": float(np.abs(e).max()),
    }


def case_fuse(store: Path, _truth: np.ndarray, image: str = FUSED) -> dict[str, Any]:
    import zarr

    from bridge_xr.tiles.fusion import fuse

    res = fuse(store, SCAN, image, overwrite=True)
    arr = zarr.open_array(store, path=f"{image}/s0")
    nbytes = int(np.prod(arr.shape)) * arr.dtype.itemsize
    return {"wall_s": res.seconds, "bytes": nbytes, "shards": res.shards_total,
            "gb_per_h": nbytes / 1e9 / (res.seconds / 3600)}  # fmt: skip


def case_raw(store: Path, _truth: np.ndarray) -> dict[str, Any]:
    """The I/O bound of fusion with zarr alone, 2 threads: every tile read once, every output
    shard written once. The shards' bytes come from the fused image, so compression sees the
    same data; the cost of reading them back is timed separately and subtracted."""
    from concurrent.futures import ThreadPoolExecutor

    import zarr

    from bridge_xr.tiles.scan import read_tile_scan

    scan = read_tile_scan(store, SCAN)
    src = zarr.open_array(store, path=f"{FUSED}/s0")
    out = zarr.create_array(store, name="raw/s0", shape=src.shape, dtype=src.dtype,
                            chunks=src.chunks, shards=src.shards, compressors=src.compressors,
                            fill_value=0, overwrite=True)  # fmt: skip
    grid = out.shards or out.chunks
    boxes = [tuple(slice(i * g, min((i + 1) * g, n)) for i, g, n in zip(ix, grid, out.shape, strict=True))
             for ix in np.ndindex(*[int(np.ceil(n / g)) for n, g in zip(out.shape, grid, strict=True)])]  # fmt: skip

    def timed(fn: Any, items: list[Any]) -> float:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            for _ in pool.map(lambda item: fn(item) is None, items):  # keep no results
                pass
        return time.perf_counter() - t0

    read_tiles = timed(lambda t: zarr.open_array(store, path=f"{t.path}/s0")[...], list(scan.tiles))
    read_out = timed(lambda sl: src[sl], boxes)

    def copy(sl: tuple[slice, ...]) -> None:
        out[sl] = src[sl]

    copy_out = timed(copy, boxes)
    wall = read_tiles + max(copy_out - read_out, 0.0)
    nbytes = int(np.prod(out.shape)) * out.dtype.itemsize
    return {"wall_s": wall, "read_tiles_s": read_tiles, "write_shards_s": copy_out - read_out,
            "bytes": nbytes, "gb_per_h": nbytes / 1e9 / (wall / 3600)}  # fmt: skip


def case_extract(store: Path, _truth: np.ndarray) -> dict[str, Any]:
    import dask
    import dask.threaded
    import pandas as pd

    from bridge_xr.extract.densities import density
    from bridge_xr.io.read import read_image
    from bridge_xr.io.subject import add_image, read_subject
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance
    from bridge_xr.model.pointmaps import LinearModel
    from bridge_xr.register.registration import register

    fused = read_image(store, FUSED)
    if "mri/T2w" not in read_subject(store).images:
        ext = np.array([fused.sizes[d] * fused.attrs["spacing"][d] for d in "zyx"])
        mshape = tuple(int(np.ceil(e / 25.0)) + 2 for e in ext)
        mri = make_image(np.zeros(mshape, np.float32), dims="zyx", spacing=(25.0,) * 3,
                         origin=(-20.0,) * 3, unit="um")  # fmt: skip
        meta = ImageMetadata(path="mri/T2w", modality="mri", provenance=Provenance.now("bench"))
        add_image(str(store), mri, meta, shards=False)
        offset = np.array([3.3, -7.1, 5.7]) + np.array([fused.attrs["origin"][d] for d in "xyz"])
        model = LinearModel("affine", np.eye(3), offset)
        pts = np.random.default_rng(0).uniform(0, 500, size=(4, 3))
        mov = model.forward_points(pts)
        lm = pd.DataFrame({"name": [f"L{i}" for i in range(4)],
                           **{f"moving_{a}": mov[:, i] for i, a in enumerate("xyz")},
                           **{f"fixed_{a}": pts[:, i] for i, a in enumerate("xyz")}})  # fmt: skip
        register(str(store), fixed="mri/T2w", moving=FUSED, landmarks=lm, model="affine",
                 name="fused_to_mri", precomputed=(model, {"model": "affine"}))  # fmt: skip
    t0 = time.perf_counter()
    ds = density(str(store), microscopy=FUSED, mri="mri/T2w", threshold=1000.0)
    # threads named as a callable: the string makes dask import distributed inside the clock
    frac = dask.compute(ds["fraction"].data, scheduler=dask.threaded.get)[0]
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "mri_voxels": int(frac.size),
            "mean_fraction": float(np.nanmean(frac))}  # fmt: skip


def case_stitch_affine(store: Path, truth: np.ndarray) -> dict[str, Any]:
    """``stitch --model affine`` (after the translation cases: it replaces the layout)."""
    return case_stitch(store, truth, model="affine")


def case_fuse_affine(store: Path, truth: np.ndarray) -> dict[str, Any]:
    """Fusion of the affine layout: every tile sampled through its map."""
    return case_fuse(store, truth, image=f"{FUSED}_affine")


CASES = {
    "stitch": case_stitch,
    "fuse": case_fuse,
    "raw": case_raw,
    "extract": case_extract,
    "stitch-affine": case_stitch_affine,
    "fuse-affine": case_fuse_affine,
}


def case_mvs(store: Path, truth: np.ndarray, python: str, workdir: Path) -> dict[str, Any] | None:
    """multiview-stitcher on the same tiles (dumped as .npy first, not timed), own process."""
    import zarr

    from bridge_xr.tiles.scan import read_tile_scan

    scan = read_tile_scan(store, SCAN)
    folder = workdir / f"mvs_{store.stem}"
    folder.mkdir(exist_ok=True)
    for k, t in enumerate(scan.tiles):
        f = folder / f"t{k:03d}.npy"
        if not f.exists():
            np.save(f, zarr.open_array(store, path=f"{t.path}/s0")[...])
    meta = {"spacing": list(SPACING), "stage_um": [list(t.stage_um) for t in scan.tiles]}
    (folder / "tiles.json").write_text(json.dumps(meta))
    script = Path(__file__).with_name("_mvs_case.py")
    done = subprocess.run([python, str(script), str(folder), str(folder / "fused.zarr")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode:
        print(f"multiview-stitcher failed:\n{done.stderr[-2000:]}", flush=True)
        return None
    res = json.loads(done.stdout.strip().splitlines()[-1])
    reg = np.array(res.pop("positions_um")) / np.array(SPACING)
    e = reg - truth
    e -= e.mean(axis=0)
    res["offset_rms_px"] = float(np.sqrt((e**2).sum(axis=1).mean()))
    res["offset_max_px"] = float(np.abs(e).max())
    res["bytes"] = int(np.prod(res["shape"])) * 2
    res["gb_per_h"] = res["bytes"] / 1e9 / (res["fuse_s"] / 3600)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=float, nargs="*", default=[1.0, 2.0, 4.0], help="GB")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    ap.add_argument(
        "--cases", nargs="*", default=["stitch", "fuse", "raw", "extract"], choices=list(CASES)
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--mvs-python", help="a Python with multiview-stitcher (smallest size only)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        truth = np.load(str(args.store).replace(".ome.zarr", ".truth.npy"))
        res = CASES[args.case](args.store, truth)
        res["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(res))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for size in args.sizes:
        store, _ = build(args.workdir, size)
        for case in [c for c in CASES if c in args.cases]:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_tiles", "--case", case,
                 "--store", str(store)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode:
                print(f"{case} @ {size:g} GB failed:\n{done.stderr[-2000:]}", flush=True)
                continue
            res = json.loads(done.stdout.strip().splitlines()[-1])
            results[f"{case}@{size:g}"] = res
            extra = ""
            if "gb_per_h" in res:
                extra = f"  {res['gb_per_h']:.0f} GB/h"
            if "offset_rms_px" in res:
                extra = (f"  offsets RMS {res['offset_rms_px']:.3f} px (max "
                         f"{res['offset_max_px']:.2f}), {res['links_used']}/{res['links']} links")  # fmt: skip
            print(f"{size:>6g} GB {case:<13} {res['wall_s']:8.1f} s  peak "
                  f"{res['peak_rss_mib']:6.0f} MiB{extra}", flush=True)  # fmt: skip
        fu, raw = results.get(f"fuse@{size:g}"), results.get(f"raw@{size:g}")
        if fu and raw:
            print(f"  fuse / raw bound time: {fu['wall_s'] / raw['wall_s']:.2f}x", flush=True)
        st = results.get(f"stitch@{size:g}")
        if args.mvs_python and size == min(args.sizes):
            mv = case_mvs(store, np.load(str(store).replace(".ome.zarr", ".truth.npy")),
                          args.mvs_python, args.workdir)  # fmt: skip
            if mv:
                results[f"multiview-stitcher@{size:g}"] = mv
                print(f"{size:>6g} GB multiview-stitcher register {mv['register_s']:.1f} s, fuse "
                      f"{mv['fuse_s']:.1f} s ({mv['gb_per_h']:.0f} GB/h), peak "
                      f"{mv['peak_rss_mib']:.0f} MiB, offsets RMS {mv['offset_rms_px']:.3f} px",
                      flush=True)  # fmt: skip
                if st and fu:
                    print(f"  multiview-stitcher / bridge_xr: register "
                          f"{mv['register_s'] / st['wall_s']:.1f}x, fuse "
                          f"{mv['fuse_s'] / fu['wall_s']:.1f}x", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
