"""Connected components of a large probability map: bridge_xr block by block vs scipy in memory.

A float32 probability map (blobs from smoothed noise, made block by block) of the given size is
written to a zarr array once. Each case runs in its own process (peak memory from VmHWM):

* ``bridge`` : ``bridge_xr.lesions.component_table`` of ``map >= 0.5`` (dask blocks);
* ``scipy``  : the whole map read into memory, thresholded, ``scipy.ndimage.label`` and
               ``bincount`` for the volumes.

Both must find the same components (count and sorted volumes are compared).

Usage::

    python -m benchmarks.bench_lesions --sizes 0.25 0.5 1 --workdir W
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._peak import peak_rss_mib

CHUNK = (64, 256, 256)


def make_map(root: Path, size_gib: float) -> Path:
    import zarr
    from scipy import ndimage

    path = root / f"prob-{size_gib:g}.zarr"
    if (path / ".done").exists():
        return path
    nz = max(64, int(size_gib * 2**30 / 4 / (1024 * 1024)) // 64 * 64)
    arr = zarr.create_array(path, shape=(nz, 1024, 1024), chunks=CHUNK, dtype="float32",
                            overwrite=True)  # fmt: skip
    rng = np.random.default_rng(0)
    for z in range(0, nz, CHUNK[0]):
        noise = rng.standard_normal((CHUNK[0], 1024, 1024)).astype(np.float32)
        arr[z : z + CHUNK[0]] = 1 / (1 + np.exp(-8 * ndimage.gaussian_filter(noise, 3.0)))
    (path / ".done").write_text("")
    return path


def case_bridge(path: Path) -> dict[str, Any]:
    import dask.array as da

    from bridge_xr.lesions import component_table

    t = component_table(da.from_zarr(str(path)) >= 0.5, spacing_um=(1.0, 1.0, 1.0))
    return {"n": len(t), "volumes": np.sort(t["voxels"].to_numpy())}


def case_scipy(path: Path) -> dict[str, Any]:
    import zarr
    from scipy import ndimage

    lab, n = ndimage.label(zarr.open_array(str(path), mode="r")[:] >= 0.5)
    return {"n": int(n), "volumes": np.sort(np.bincount(lab.ravel())[1:])}


CASES = {"bridge": case_bridge, "scipy": case_scipy}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=float, nargs="*", default=[0.25, 0.5, 1.0], help="GiB")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--map", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        t = time.perf_counter()
        res = CASES[args.case](args.map)
        digest = hashlib.sha256(res["volumes"].astype(np.int64).tobytes()).hexdigest()[:16]
        print(json.dumps({"seconds": time.perf_counter() - t, "peak_mib": peak_rss_mib(),
                          "n": res["n"], "volumes_sha": digest}))  # fmt: skip
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        path = make_map(args.workdir, size)
        row = {}
        for case in CASES:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_lesions", "--case", case, "--map",
                 str(path)], capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode:
                print(f"{case} failed:\n{done.stderr[-2000:]}", flush=True)
                continue
            row[case] = r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{size:g} GiB {case:6s} {r['seconds']:7.1f} s peak {r['peak_mib']:6.0f} MiB "
                  f"{r['n']} components", flush=True)  # fmt: skip
        if len(row) == 2:
            same = row["bridge"]["volumes_sha"] == row["scipy"]["volumes_sha"]
            print(f"  scipy / bridge time {row['scipy']['seconds'] / row['bridge']['seconds']:.2f}x, "
                  f"peak {row['scipy']['peak_mib'] / row['bridge']['peak_mib']:.2f}x; "
                  f"same components: {same}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
