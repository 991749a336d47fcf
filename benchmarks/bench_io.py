"""TIFF -> sharded multiscale OME-Zarr: bridge_xr vs ome-zarr-py, ngff-zarr and raw zarr.

Each case runs in its own process (so peak RSS is its own) and prints one JSON line.
All cases use the same inner chunk (32, 256, 256), shard (128, 1024, 1024) and codec
(blosc zstd level 3, bit-shuffle); pyramids are 2x in y/x (z kept, as for 2P stacks).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._peak import peak_rss_mib

CHUNK = (32, 256, 256)
SHARD = (128, 1024, 1024)
SPACING = {"z": 5.0, "y": 1.1838, "x": 1.1838}


def codec() -> Any:
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle", typesize=2)


def make_tiff(path: Path, size_gib: float, *, seed: int = 0) -> tuple[int, int, int]:
    """A 2P-like uint16 stack (vessels as bright tubes, noise), written plane by plane."""
    import tifffile

    yx = 2048
    nz = max(8, int(round(size_gib * 2**30 / (yx * yx * 2))))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:yx, 0:yx].astype(np.float32)
    base = np.zeros((yx, yx), np.float32)
    for _ in range(60):
        cy, cx, r = rng.uniform(0, yx), rng.uniform(0, yx), rng.uniform(3, 40)
        ang = rng.uniform(0, np.pi)
        d = np.abs((yy - cy) * np.cos(ang) - (xx - cx) * np.sin(ang))
        base = np.maximum(base, (d < r) * rng.uniform(800, 2500))
    noise = rng.integers(0, 200, size=(16, yx, yx), dtype=np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)

    def planes():
        for z in range(nz):
            shift = int(z * 3) % yx
            yield (np.roll(base, shift, axis=1) * np.exp(-z / 400)).astype(np.uint16) + noise[
                z % 16
            ]

    tifffile.imwrite(
        path,
        planes(),
        shape=(nz, yx, yx),
        dtype=np.uint16,
        metadata={"axes": "ZYX"},
        photometric="minisblack",
        bigtiff=size_gib > 3.5,
    )
    return nz, yx, yx


def _tiff_dask(path: Path, chunks: tuple[int, ...]) -> Any:
    """The TIFF as a dask array whose tasks read regions (same reader for every baseline)."""
    from bridge_xr.io.tiff import read_tiff

    img, _ = read_tiff(
        path,
        pixel_size_um=SPACING["x"],
        z_step_um=SPACING["z"],
        chunks=dict(zip("zyx", chunks, strict=True)),
    )
    return img.data


def _levels(shape: tuple[int, ...]) -> int:
    n, s = 1, min(shape[1:])
    while s // 2 >= 64:
        s //= 2
        n += 1
    return n


def case_bridge_xr(tiff: Path, out: Path) -> None:
    from bridge_xr.io.convert import convert_microscopy

    convert_microscopy(
        tiff,
        str(out),
        "twophoton/d060/angiogram",
        pixel_size=f"{SPACING['x']}um",
        z_step=f"{SPACING['z']}um",
        chunks=dict(zip("zyx", CHUNK, strict=True)),
        shards=dict(zip("zyx", SHARD, strict=True)),
        compressor="blosc-zstd",
    )


def case_raw_zarr(tiff: Path, out: Path) -> None:
    """Lower bound: read + compress + write level 0 only with zarr (shard-aligned tasks)."""
    import dask.array as da
    import zarr

    arr = _tiff_dask(tiff, SHARD)
    target = zarr.create_array(
        str(out),
        shape=arr.shape,
        dtype=arr.dtype,
        chunks=CHUNK,
        shards=SHARD,
        compressors=codec(),
        fill_value=0,
    )
    da.store(arr, target, lock=False)


def case_ome_zarr_py(tiff: Path, out: Path) -> None:
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image

    arr = _tiff_dask(tiff, SHARD)
    root = zarr.open_group(str(out), mode="w", zarr_format=3)
    factors = [{"z": 1, "y": 2**k, "x": 2**k} for k in range(1, _levels(arr.shape))]
    write_image(
        arr,
        root,
        axes="zyx",
        scale=SPACING,
        scale_factors=factors,
        fmt=FormatV05(),
        axes_units=dict.fromkeys("zyx", "micrometer"),
        storage_options={"chunks": CHUNK, "shards": SHARD, "compressor": codec()},
    )


def case_ngff_zarr(tiff: Path, out: Path) -> None:
    import ngff_zarr

    arr = _tiff_dask(tiff, SHARD)
    image = ngff_zarr.to_ngff_image(
        arr, dims=["z", "y", "x"], scale=SPACING, axes_units=dict.fromkeys("zyx", "micrometer")
    )
    factors = [{"z": 1, "y": 2**k, "x": 2**k} for k in range(1, _levels(arr.shape))]
    ms = ngff_zarr.to_multiscales(
        image, scale_factors=factors, chunks=dict(zip("zyx", CHUNK, strict=True))
    )
    ngff_zarr.to_ngff_zarr(
        str(out),
        ms,
        version="0.5",
        chunks_per_shard={d: s // c for d, s, c in zip("zyx", SHARD, CHUNK, strict=True)},
        compressors=[codec()],
    )


CASES = {
    "bridge_xr": case_bridge_xr,
    "ome-zarr-py": case_ome_zarr_py,
    "ngff-zarr": case_ngff_zarr,
    "raw-zarr": case_raw_zarr,
}


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_case(name: str, tiff: Path, out: Path) -> dict[str, Any]:
    """Run one case in this process; returns time, peak RSS and output size."""
    shutil.rmtree(out, ignore_errors=True)
    import dask

    dask.config.set(scheduler="threads")
    t0 = time.perf_counter()
    CASES[name](tiff, out)
    wall = time.perf_counter() - t0
    peak = peak_rss_mib()
    return {"case": name, "wall_s": wall, "peak_rss_mib": peak, "out_bytes": _dir_bytes(out)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=sorted(CASES))
    ap.add_argument("--tiff", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    print(json.dumps(run_case(args.case, args.tiff, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
