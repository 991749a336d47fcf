"""T2* maps of a multi-echo series: bridge_xr block by block vs the straightforward ways.

A synthetic gradient-echo series (N x N x 64 voxels, 8 echoes from 2.6 ms every 4 ms, T2* 5 to
60 ms, Rician noise at SNR 50) is written to a subject store once per size. Each case runs in
its own process (peak memory from VmHWM):

* ``bridge``  : ``bridge_xr.relax.relax`` (store read, dask blocks, three maps written);
* ``numpy``   : the same vectorised fit on the whole series loaded into memory at once;
* ``scipy``   : ``scipy.optimize.curve_fit`` voxel by voxel, timed on a random sample of voxels
                and extrapolated to the whole volume (said so in the output).

Usage::

    python -m benchmarks.bench_relax --sizes 64 128 256 --fit lsq --workdir W
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._peak import peak_rss_mib

TE = 2.6 + 4.0 * np.arange(8)
SIGMA = 1000 / 50
SAMPLE = 2000


def make_store(root: Path, n: int) -> Path:
    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import Acquisition, ImageMetadata, Provenance

    store = root / f"relax-{n}.ome.zarr"
    if (store / "zarr.json").exists():
        return store
    rng = np.random.default_rng(0)
    t2 = rng.uniform(5, 60, (64, n, n)).astype(np.float32)
    a = 1000 * np.exp(-TE[:, None, None, None] / t2[None])
    noise = SIGMA * (rng.standard_normal(a.shape) + 1j * rng.standard_normal(a.shape))
    data = np.abs(a + noise).astype(np.float32)
    img = make_image(data, dims="czyx", spacing=(100.0, 50.0, 50.0), unit="um",
                     channel_names=[f"TE {t:g} ms" for t in TE])  # fmt: skip
    meta = ImageMetadata(path="mri/mge", modality="mri",
                         acquisition=Acquisition(extra={"echo_times_ms": TE.tolist()}),
                         provenance=Provenance.now("benchmark"))  # fmt: skip
    add_image(store, img, meta, levels=1)
    np.save(root / f"relax-{n}.t2.npy", t2)
    return store


def case_bridge(store: Path, fit: str) -> dict[str, Any]:
    from bridge_xr.relax import relax

    relax(store, echoes="mri/mge", image_out="maps/T2star", fit=fit,  # type: ignore[arg-type]
          noise_sigma=SIGMA, overwrite=True)  # fmt: skip
    from bridge_xr.io.read import read_image

    got = np.asarray(read_image(str(store), "maps/T2star").values)
    return {"map": got}


def case_numpy(store: Path, fit: str) -> dict[str, Any]:
    from bridge_xr.io.read import read_image
    from bridge_xr.relax import fit_t2

    data = np.asarray(read_image(str(store), "mri/mge").values)
    t2, _, _ = fit_t2(data, TE, model=fit, sigma=SIGMA)  # type: ignore[arg-type]
    return {"map": t2}


def case_scipy(store: Path, fit: str) -> dict[str, Any]:
    from scipy.optimize import curve_fit

    from bridge_xr.io.read import read_image
    from bridge_xr.relax import rician_mean

    data = np.asarray(read_image(str(store), "mri/mge").values)
    flat = data.reshape(len(TE), -1)
    idx = np.random.default_rng(1).choice(flat.shape[1], SAMPLE, replace=False)

    def model(te: np.ndarray, s0: float, t2: float) -> np.ndarray:
        a = s0 * np.exp(-te / t2)
        return rician_mean(a, SIGMA) if fit == "rician" else a

    t = time.perf_counter()
    out = np.full(SAMPLE, np.nan)
    for k, i in enumerate(idx):
        with contextlib.suppress(RuntimeError):  # no convergence: left NaN
            out[k] = curve_fit(model, TE, flat[:, i], p0=(flat[0, i], 20.0), maxfev=2000)[0][1]
    per_voxel = (time.perf_counter() - t) / SAMPLE
    return {"per_voxel_s": per_voxel, "extrapolated_s": per_voxel * flat.shape[1], "idx": idx,
            "sample": out}  # fmt: skip


CASES = {"bridge": case_bridge, "numpy": case_numpy, "scipy": case_scipy}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 128, 256])
    ap.add_argument("--fit", default="lsq", choices=["lsq", "rician", "loglinear"])
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        t = time.perf_counter()
        res = CASES[args.case](args.store, args.fit)
        seconds = time.perf_counter() - t
        truth = np.load(str(args.store).replace(".ome.zarr", ".t2.npy"))
        if "map" in res:
            err = np.nanmedian(np.abs(res["map"] / truth - 1))
        else:
            err = np.nanmedian(np.abs(res["sample"] / truth.reshape(-1)[res["idx"]] - 1))
        row = {"seconds": res.get("extrapolated_s", seconds), "measured_s": seconds,
               "peak_mib": peak_rss_mib(), "median_rel_err": float(err)}  # fmt: skip
        print(json.dumps(row))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        store = make_store(args.workdir, n)
        row: dict[str, Any] = {}
        for case in args.cases:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_relax", "--case", case, "--store",
                 str(store), "--fit", args.fit],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode:
                print(f"{case} failed:\n{done.stderr[-2000:]}", flush=True)
                continue
            row[case] = json.loads(done.stdout.strip().splitlines()[-1])
            r = row[case]
            note = " (extrapolated from a sample)" if case == "scipy" else ""
            print(f"{n}x{n}x64x8 {args.fit} {case:6s} {r['seconds']:8.1f} s{note} "
                  f"peak {r['peak_mib']:6.0f} MiB, median |T2* error| {100 * r['median_rel_err']:.2f} %",
                  flush=True)  # fmt: skip
        for other in ("numpy", "scipy"):
            if "bridge" in row and other in row:
                print(
                    f"  {other} / bridge: {row[other]['seconds'] / row['bridge']['seconds']:.2f}x"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
