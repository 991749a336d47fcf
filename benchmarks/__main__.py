"""Run the benchmarks: ``python -m benchmarks [--size-gib 2] [--cases ...]``.

Prints time and peak RSS of each case and the ratios ``case / bridge_xr`` and
``bridge_xr / raw-zarr`` (the lower bound), measured in the same run, and checks that every
output holds the same level-0 pixels as the input.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.bench_io import CASES, make_tiff


def _check_output(case: str, out: Path, tiff: Path) -> bool:
    import tifffile
    import zarr

    with tifffile.TiffFile(tiff) as tf:
        nz = len(tf.pages)
        zs = sorted({0, nz // 2, nz - 1})
        planes = {z: tf.pages[z].asarray() for z in zs}
    if case == "raw-zarr":
        arr = zarr.open_array(str(out), mode="r")
    elif case == "bridge_xr":
        arr = zarr.open_array(str(out / "twophoton/d060/angiogram/s0"), mode="r")
    elif case == "ngff-zarr":
        root = zarr.open_group(str(out), mode="r")
        path = root.attrs["ome"]["multiscales"][0]["datasets"][0]["path"]
        arr = zarr.open_array(str(out / path), mode="r")
    else:
        arr = zarr.open_array(str(out / "s0"), mode="r")
    return all(np.array_equal(arr[z], planes[z]) for z in zs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument(
        "--cases", nargs="*", default=["raw-zarr", "bridge_xr", "ome-zarr-py", "ngff-zarr"]
    )
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    tiff = args.workdir / f"stack_{args.size_gib:g}GiB.tif"
    if not tiff.exists():
        print(f"writing {tiff} ...", flush=True)
        shape = make_tiff(tiff, args.size_gib)
        print(f"  shape {shape}, {tiff.stat().st_size / 2**30:.2f} GiB", flush=True)
    results = {}
    for case in args.cases:
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; choose from {sorted(CASES)}")
        out = args.workdir / f"out_{case}.zarr"
        print(f"running {case} ...", flush=True)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_io",
                case,
                "--tiff",
                str(tiff),
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(f"  {case} failed:\n{done.stderr[-2000:]}")
            continue
        res = json.loads(done.stdout.strip().splitlines()[-1])
        res["pixels_match_input"] = _check_output(case, out, tiff)
        results[case] = res
        print(f"  {res['wall_s']:.1f} s, peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
    ours = results.get("bridge_xr")
    print(f"\nTIFF {tiff.stat().st_size / 2**30:.2f} GiB -> sharded multiscale OME-Zarr")
    print(f"{'case':<13}{'time s':>9}{'peak MiB':>10}{'out GiB':>9}{'time/ours':>11}{'ok':>5}")
    for case, r in results.items():
        ratio = r["wall_s"] / ours["wall_s"] if ours else float("nan")
        print(
            f"{case:<13}{r['wall_s']:>9.1f}{r['peak_rss_mib']:>10.0f}{r['out_bytes'] / 2**30:>9.2f}"
            f"{ratio:>11.2f}{'yes' if r['pixels_match_input'] else 'NO':>5}"
        )
    if ours and "raw-zarr" in results:
        print(
            f"bridge_xr / raw lower bound: {ours['wall_s'] / results['raw-zarr']['wall_s']:.2f}x time"
        )
    if args.json:
        args.json.write_text(json.dumps({"size_gib": args.size_gib, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
