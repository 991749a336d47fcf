"""Archive and deep-verify a study to a loopback S3 server, against plain parallel uploads.

A synthetic study is written once per size: subject stores with 32 MiB shards (incompressible
bytes, as compressed image shards are), two 96 MiB objects (multipart), 64 KiB chunks and small
``zarr.json`` files. A moto S3 server runs in its own process on 127.0.0.1; each case runs in
its own process (peak memory from VmHWM), against a fresh bucket, 8 objects in flight:

* ``archive``   : ``bridge_xr.archive.archive_study`` (SHA-256 of every byte, manifest last);
* ``bound``     : plain parallel upload of the same files with obstore (same client, no hashing,
                  no manifest): the bound of ``archive``;
* ``s3fs``      : the same plain parallel upload with s3fs (``fs.put``, its own concurrency):
                  the client bridge_xr's zarr stores use; the client choice is measured here;
* ``zarr``      : zarr's own copy: every key of each store read with zarr's LocalStore and set
                  into an ``FsspecStore`` (s3fs), 8 at a time;
* ``verify``    : ``bridge_xr.archive.verify_archive(deep=True)``: every object read and hashed;
* ``read``      : plain parallel GET of every object with obstore (no hashing): the bound of
                  ``verify``.

Usage::

    python -m benchmarks.bench_archive --sizes 1 2 4 --workdir W --json J
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._peak import peak_rss_mib

SHARD = 32 * 2**20
BIG = 96 * 2**20
CHUNK = 64 * 2**10
WORKERS = 8


def make_study(root: Path, size_gib: float) -> Path:
    """A study of about ``size_gib`` GiB (written once; reused when there)."""
    study = root / f"study-{size_gib:g}"
    done = study / ".complete"
    if done.exists():
        return study
    rng = np.random.default_rng(0)
    total = int(size_gib * 2**30)
    written = 0
    for k in range(2):  # two multipart objects
        p = study / "raw" / f"tilescan{k}.czi"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.bytes(BIG))
        written += BIG
    for j in range(256):  # many small chunks (per-request overhead)
        p = study / "M000.ome.zarr" / "labels" / "s0" / "c" / str(j // 16) / str(j % 16)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.bytes(CHUNK))
        written += CHUNK
    i = 0
    while written < total:
        sub = study / f"M{i // 32:03d}.ome.zarr"
        p = sub / "twophoton" / "s0" / "c" / "0" / str(i % 32)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.bytes(SHARD))
        (sub / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
        written += SHARD
        i += 1
    done.write_text("")
    return study


def _files(study: Path) -> list[tuple[str, Path]]:
    return sorted(
        (p.relative_to(study).as_posix(), p)
        for p in study.rglob("*")
        if p.is_file() and p.name != ".complete"
    )


def _obstore(bucket: str, prefix: str) -> Any:
    from bridge_xr.archive import open_target

    return open_target(f"s3://{bucket}/{prefix}").store


def case_archive(study: Path, bucket: str) -> dict[str, Any]:
    from bridge_xr.archive import archive_study

    r = archive_study(study, f"s3://{bucket}/a", workers=WORKERS)
    return {"bytes": r.bytes, "objects": r.objects}


def case_bound(study: Path, bucket: str) -> dict[str, Any]:
    import obstore

    store = _obstore(bucket, "b")
    files = _files(study)

    def put(item: tuple[str, Path]) -> None:
        key, path = item
        if path.stat().st_size > 64 * 2**20:
            obstore.put(store, key, path, chunk_size=16 * 2**20, max_concurrency=4)
        else:
            obstore.put(store, key, path.read_bytes(), use_multipart=False)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(put, files))
    return {"bytes": sum(p.stat().st_size for _, p in files), "objects": len(files)}


def case_s3fs(study: Path, bucket: str) -> dict[str, Any]:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=os.environ["BRIDGE_XR_S3_ENDPOINT"], max_concurrency=4)
    files = _files(study)
    fs.put(
        [str(p) for _, p in files],
        [f"{bucket}/s/{k}" for k, _ in files],
        batch_size=WORKERS,
    )
    return {"bytes": sum(p.stat().st_size for _, p in files), "objects": len(files)}


def case_zarr(study: Path, bucket: str) -> dict[str, Any]:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import FsspecStore, LocalStore

    files = _files(study)

    async def copy() -> None:
        src = LocalStore(study, read_only=True)
        dst = FsspecStore.from_url(
            f"s3://{bucket}/z",
            storage_options={
                "endpoint_url": os.environ["BRIDGE_XR_S3_ENDPOINT"],
                "asynchronous": True,
            },
        )
        sem = asyncio.Semaphore(WORKERS)

        async def one(key: str) -> None:
            async with sem:
                buf = await src.get(key, default_buffer_prototype())
                assert buf is not None
                await dst.set(key, buf)

        await asyncio.gather(*(one(k) for k, _ in files))

    asyncio.run(copy())
    return {"bytes": sum(p.stat().st_size for _, p in files), "objects": len(files)}


def case_verify(study: Path, bucket: str) -> dict[str, Any]:
    from bridge_xr.archive import verify_archive

    rep = verify_archive(f"s3://{bucket}/a", deep=True, workers=WORKERS)
    assert rep.ok, rep.problems[:5]
    return {"bytes": rep.read_bytes, "objects": rep.objects}


def case_read(study: Path, bucket: str) -> dict[str, Any]:
    import obstore

    store = _obstore(bucket, "a")
    keys = [m["path"] for batch in obstore.list(store) for m in batch]

    def get(key: str) -> int:
        n = 0
        for buf in obstore.get(store, key).stream(min_chunk_size=8 * 2**20):
            n += len(memoryview(buf))
        return n

    with ThreadPoolExecutor(WORKERS) as pool:
        total = sum(pool.map(get, keys))
    return {"bytes": total, "objects": len(keys)}


CASES = {
    "bound": case_bound,
    "s3fs": case_s3fs,
    "zarr": case_zarr,
    "archive": case_archive,
    "verify": case_verify,
    "read": case_read,
}
#: where each upload case writes (deleted after it, except the archive that verify reads)
PREFIX = {"bound": "b", "s3fs": "s", "zarr": "z"}


def _empty(client: Any, bucket: str, prefix: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def _server(port: int) -> subprocess.Popen[bytes]:
    code = (
        "import sys, time; from moto.server import ThreadedMotoServer; "
        f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False); s.start(); "
        "sys.stdout.write('up\\n'); sys.stdout.flush(); time.sleep(1e9)"
    )
    # objects kept in RAM (moto spills objects above its buffer size to temporary files): the
    # server's disk is not what is measured; uploads of other cases are deleted after each
    env = {**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(BIG + 2**20)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=float, nargs="*", default=[1.0, 2.0, 4.0], help="GiB")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--study", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--bucket", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        t = time.perf_counter()
        res = CASES[args.case](args.study, args.bucket)
        res["seconds"] = time.perf_counter() - t
        res["peak_mib"] = peak_rss_mib()
        print(json.dumps(res))
        return 0

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["BRIDGE_XR_STATE_DIR"] = str(args.workdir / "state")
    results: list[dict[str, Any]] = []
    for size in args.sizes:
        study = make_study(args.workdir, size)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        server = _server(port)  # a fresh server per size: moto keeps every object
        os.environ["BRIDGE_XR_S3_ENDPOINT"] = f"http://127.0.0.1:{port}"
        try:
            import boto3

            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            client = boto3.client(
                "s3", endpoint_url=os.environ["BRIDGE_XR_S3_ENDPOINT"], region_name="us-east-1"
            )
            client.create_bucket(Bucket=bucket)
            row: dict[str, Any] = {"size_gib": size}
            for case in [c for c in CASES if c in args.cases]:
                done = subprocess.run(
                    [sys.executable, "-m", "benchmarks.bench_archive", "--case", case,
                     "--study", str(study), "--bucket", bucket],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if case in PREFIX:
                    _empty(client, bucket, PREFIX[case] + "/")
                if done.returncode:
                    print(f"{case} failed:\n{done.stderr[-2000:]}", flush=True)
                    continue
                res = json.loads(done.stdout.strip().splitlines()[-1])
                res["mb_s"] = res["bytes"] / 1e6 / res["seconds"]
                row[case] = res
                print(
                    f"{size:g} GiB {case:8s} {res['seconds']:7.1f} s {res['mb_s']:7.0f} MB/s "
                    f"peak {res['peak_mib']:6.0f} MiB ({res['objects']} objects)",
                    flush=True,
                )
            for a, b in (("archive", "bound"), ("archive", "s3fs"), ("archive", "zarr"),
                         ("verify", "read"), ("bound", "s3fs")):  # fmt: skip
                if a in row and b in row:
                    row[f"{a}/{b}"] = row[a]["mb_s"] / row[b]["mb_s"]
                    print(f"  throughput {a}/{b}: {row[f'{a}/{b}']:.2f}", flush=True)
            results.append(row)
        finally:
            server.kill()
            server.wait()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
