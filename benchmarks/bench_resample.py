"""Resampling a 2P-like volume through a 50-landmark TPS onto a grid of the same size.

Cases (each in its own process, so peak RSS is its own):

* ``bridge_xr-tps``   : bridge_xr.resample (checked coarse grid), written shard-aligned to zarr;
* ``bridge_xr-affine``: the same with an affine registration (throughput reference);
* ``exact-tps``       : exact per-voxel TPS evaluation + trilinear interpolation (numpy), the way
                        Slicer/ITK/BigWarp apply a TPS; timed on a sample of blocks, extrapolated;
* ``sitk-field``      : SimpleITK ``Resample`` with a full-resolution displacement field (the field
                        itself is not timed), on the first ``--sitk-slabs`` z-slabs, extrapolated.

Usage: ``python -m benchmarks.bench_resample --size-gib 1 [--sizes 0.25 0.5 1]``.
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

SPACING = (2.0, 1.2, 1.2)  # z, y, x µm


def _shape(size_gib: float) -> tuple[int, int, int]:
    yx = 1024
    return (max(8, int(round(size_gib * 2**30 / (yx * yx * 2)))), yx, yx)


def build(workdir: Path, size_gib: float) -> Path:
    """A store with a small fixed image covering the extent and a 2P-like moving volume."""
    import dask.array as da

    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance
    from bridge_xr.register.registration import register

    store = workdir / f"resample_{size_gib:g}GiB.ome.zarr"
    if (store / "zarr.json").exists():
        return store
    shape = _shape(size_gib)
    ext = np.array(shape) * SPACING
    fixed = make_image(
        np.zeros((8, 32, 32), np.float32), dims="zyx", spacing=tuple(ext / [8, 32, 32]), unit="um"
    )
    add_image(
        str(store),
        fixed,
        ImageMetadata(path="fixed/img", modality="mri", provenance=Provenance.now("bench")),
        shards=False,
    )
    rng = da.random.default_rng(0)
    base = rng.integers(0, 3000, size=shape, chunks=(32, 512, 512), dtype=np.uint16)
    mov = make_image(base, dims="zyx", spacing=SPACING, unit="um")
    add_image(
        str(store),
        mov,
        ImageMetadata(path="twop/img", modality="twophoton", provenance=Provenance.now("bench")),
    )
    r = np.random.default_rng(1)
    f = r.uniform(0.05, 0.95, size=(50, 3)) * ext[::-1]  # xyz µm
    m = f * 0.98 + 8.0 * np.sin(f / 150.0) + 3.0
    import pandas as pd

    lm = pd.DataFrame(
        {
            "name": [f"L{i}" for i in range(50)],
            "moving_x": m[:, 0],
            "moving_y": m[:, 1],
            "moving_z": m[:, 2],
            "fixed_x": f[:, 0],
            "fixed_y": f[:, 1],
            "fixed_z": f[:, 2],
        }
    )
    register(
        str(store), fixed="fixed/img", moving="twop/img", landmarks=lm, model="tps", name="tps"
    )
    register(
        str(store),
        fixed="fixed/img",
        moving="twop/img",
        landmarks=lm,
        model="affine",
        name="affine",
    )
    return store


def _resampled(store: Path, name: str) -> Any:
    """The lazy resample of twop/img through registration ``name`` onto a same-size grid."""
    import bridge_xr as bx

    # two registrations join the images (tps, affine): `via` says which one
    return bx.resample(
        str(store),
        moving="twop/img",
        onto="fixed/img",
        spacing_um=SPACING,
        level=0,
        chunks=(32, 256, 256),
        via=[name],
    )


def case_bridge(store: Path, name: str, out: Path) -> dict[str, Any]:
    import dask
    import zarr

    img = _resampled(store, name)
    target = zarr.create_array(
        str(out),
        shape=img.shape,
        dtype=img.dtype,
        chunks=(32, 256, 256),
        shards=(32, 512, 512),
        overwrite=True,
    )
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        import dask.array as da

        da.store(img.data.rechunk((32, 512, 512)), target, lock=False)
    res: dict[str, Any] = {"wall_s": time.perf_counter() - t0, "voxels": int(np.prod(img.shape))}
    if name == "tps":  # the per-block certified error map `bridge resample` stores beside it
        t1 = time.perf_counter()
        from bridge_xr.resampling import block_errors

        errs = block_errors(
            str(store),
            moving="twop/img",
            onto="fixed/img",
            spacing_um=SPACING,
            chunks=(32, 256, 256),
            via=[name],
        ).values
        res["block_error_s"] = time.perf_counter() - t1
        res["certified_max_error_um"] = float(np.nanmax(errs))
    return res


def case_exact(store: Path, out: Path, n_blocks: int = 4) -> dict[str, Any]:
    """Exact per-voxel TPS + trilinear on a few (32, 256, 256) blocks; extrapolated."""
    import zarr
    from scipy.ndimage import map_coordinates

    from bridge_xr.io.subject import read_subject
    from bridge_xr.scene.chains import model_from_record

    tps = model_from_record(read_subject(str(store)).registrations["tps"])
    arr = zarr.open_array(str(store / "twop/img/s0"), mode="r")
    shape = arr.shape
    t0 = time.perf_counter()
    nvox = 0
    for b in range(n_blocks):
        z0 = (b * 32) % max(1, shape[0] - 32)
        axes = [
            np.arange(z0, z0 + 32) * SPACING[0],
            np.arange(256) * SPACING[1],
            np.arange(256) * SPACING[2],
        ]
        gz, gy, gx = np.meshgrid(*axes, indexing="ij")
        pts = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)
        idx = (tps.forward_points(pts)[:, ::-1] / SPACING).T
        lo = np.maximum(np.floor(idx.min(axis=1)).astype(int) - 1, 0)
        hi = np.minimum(np.ceil(idx.max(axis=1)).astype(int) + 2, shape)
        sub = arr[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float64)
        map_coordinates(sub, idx - lo[:, None], order=1)
        nvox += pts.shape[0]
    wall = time.perf_counter() - t0
    total = int(np.prod(shape))
    return {"wall_s": wall * total / nvox, "voxels": total, "extrapolated_from_voxels": nvox}


def case_sitk(store: Path, out: Path, slabs: int = 2) -> dict[str, Any]:
    """SimpleITK Resample with a full-resolution displacement field on ``slabs`` z-slabs of 32."""
    import SimpleITK as sitk
    import zarr

    from bridge_xr.io.subject import read_subject
    from bridge_xr.scene.chains import model_from_record

    tps = model_from_record(read_subject(str(store)).registrations["tps"])
    arr = zarr.open_array(str(store / "twop/img/s0"), mode="r")
    shape = arr.shape
    mov = sitk.GetImageFromArray(np.asarray(arr[...]))
    mov.SetSpacing(SPACING[::-1])
    wall, nvox = 0.0, 0
    for s in range(slabs):
        z0 = s * 32
        sub_shape = (32, shape[1], shape[2])
        axes = [
            np.arange(z0, z0 + 32) * SPACING[0],
            np.arange(shape[1]) * SPACING[1],
            np.arange(shape[2]) * SPACING[2],
        ]
        gz, gy, gx = np.meshgrid(*axes, indexing="ij")
        pts = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)
        disp = (tps.forward_points(pts) - pts).reshape(
            *sub_shape, 3
        )  # field built exactly, not timed
        field = sitk.GetImageFromArray(disp, isVector=True)
        field.SetSpacing(SPACING[::-1])
        field.SetOrigin((0.0, 0.0, z0 * SPACING[0]))
        ref = sitk.Image(shape[2], shape[1], 32, sitk.sitkUInt16)
        ref.SetSpacing(SPACING[::-1])
        ref.SetOrigin((0.0, 0.0, z0 * SPACING[0]))
        tx = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
        t0 = time.perf_counter()
        sitk.Resample(mov, ref, tx, sitk.sitkLinear, 0.0)
        wall += time.perf_counter() - t0
        nvox += int(np.prod(sub_shape))
    total = int(np.prod(shape))
    return {"wall_s": wall * total / nvox, "voxels": total, "extrapolated_from_voxels": nvox}


def max_deviation_voxels(store: Path, n_blocks: int = 6) -> float:
    """Largest |mapped position - exact TPS| over whole blocks, in output voxels."""
    from bridge_xr.io.subject import read_subject
    from bridge_xr.resampling.blocks import _tps_block
    from bridge_xr.scene.chains import model_from_record

    tps = model_from_record(read_subject(str(store)).registrations["tps"])
    shape = _shape(float(store.name.split("_")[1].removesuffix("GiB.ome.zarr")))
    worst = 0.0
    r = np.random.default_rng(0)
    for _ in range(n_blocks):
        z0, y0, x0 = (
            int(r.integers(0, max(1, n - s))) for n, s in zip(shape, (32, 256, 256), strict=True)
        )
        axes = [
            np.arange(z0, z0 + 32) * SPACING[0],
            np.arange(y0, y0 + 256) * SPACING[1],
            np.arange(x0, x0 + 256) * SPACING[2],
        ]
        approx = _tps_block(tps, axes, 0.1 * min(SPACING))
        gz, gy, gx = np.meshgrid(*axes, indexing="ij")
        pts = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)
        exact = tps.forward_points(pts)[:, ::-1].T.reshape(approx.shape)
        worst = max(worst, float(np.linalg.norm(approx - exact, axis=0).max() / min(SPACING)))
    return worst


def run_case(case: str, store: Path, out: Path) -> dict[str, Any]:
    if case == "bridge_xr-tps":
        res = case_bridge(store, "tps", out)
    elif case == "bridge_xr-affine":
        res = case_bridge(store, "affine", out)
    elif case == "exact-tps":
        res = case_exact(store, out)
    else:
        res = case_sitk(store, out)
    res["case"] = case
    res["peak_rss_mib"] = peak_rss_mib()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=float, nargs="*", default=[0.25, 0.5, 1.0])
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.store, args.workdir / "resampled.zarr")))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for size in args.sizes:
        store = build(args.workdir, size)
        cases = ["bridge_xr-tps", "bridge_xr-affine"]
        if size == max(args.sizes):
            cases += ["exact-tps", "sitk-field"]
        for case in cases:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.bench_resample",
                    "--case",
                    case,
                    "--store",
                    str(store),
                    "--workdir",
                    str(args.workdir),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode:
                print(f"{case} @ {size} GiB failed:\n{done.stderr[-1500:]}")
                continue
            res = json.loads(done.stdout.strip().splitlines()[-1])
            results[f"{case}@{size:g}"] = res
            print(
                f"{size:>5g} GiB {case:<17} {res['wall_s']:8.1f} s  {res['voxels'] / res['wall_s'] / 1e6:7.2f} Mvox/s"
                f"  peak {res['peak_rss_mib']:6.0f} MiB",
                flush=True,
            )
        if size == max(args.sizes):
            dev = max_deviation_voxels(store)
            results[f"max_deviation_voxels@{size:g}"] = dev
            ours = results.get(f"bridge_xr-tps@{size:g}")
            for base in ("exact-tps", "sitk-field", "bridge_xr-affine"):
                b = results.get(f"{base}@{size:g}")
                if ours and b:
                    print(f"  {base} / bridge_xr-tps time: {b['wall_s'] / ours['wall_s']:.2f}x")
            print(f"  max deviation from the exact TPS: {dev:.4f} output voxels")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
