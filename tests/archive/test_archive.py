"""Archive, verify and resume studies on a real S3 server on 127.0.0.1 (moto), with real faults."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bridge_xr_cli.main import app

runner = CliRunner()


def _study(root: Path, big: int = 0) -> Path:
    """Two subject stores, a Parquet table and (``big`` bytes) one file for multipart uploads."""
    from bridge_xr.testing import tiny_scene

    study = root / "study"
    for name in ("M001", "M002"):
        tiny_scene(registered=True, where=study / f"{name}.ome.zarr")
    tables = study / "tables" / "subject=M001"
    tables.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pd.DataFrame({"v": rng.random(500), "i": np.arange(500)}).to_parquet(tables / "part.parquet")
    if big:
        (study / "raw.bin").write_bytes(rng.integers(0, 255, big, dtype=np.uint8).tobytes())
    return study


def _files(study: Path) -> dict[str, bytes]:
    return {
        p.relative_to(study).as_posix(): p.read_bytes() for p in study.rglob("*") if p.is_file()
    }


def _s3(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _objects(endpoint: str, bucket: str, prefix: str) -> dict[str, bytes]:
    s3 = _s3(endpoint)
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            key = o["Key"][len(prefix) + 1 :]
            out[key] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("BRIDGE_XR_STATE_DIR", str(d))
    return d


def test_round_trip_archive_verify_read_back(
    tmp_path: Path, s3_server: str, s3_bucket: str, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge_xr.archive import upload

    monkeypatch.setattr(upload, "MULTIPART_ABOVE", 6 * 2**20)
    monkeypatch.setattr(upload, "PART_BYTES", 5 * 2**20)
    study = _study(tmp_path, big=13 * 2**20)
    url = f"s3://{s3_bucket}/archive/study-2026"
    res = runner.invoke(app, ["archive", str(study), url, "--workers", "4"])
    assert res.exit_code == 0, res.output
    src = _files(study)
    assert f"{len(src)} objects" in res.output
    got = _objects(s3_server, s3_bucket, "archive/study-2026")
    manifest = json.loads(got.pop("bridge_xr-manifest.json"))
    assert got == src  # byte-identical, nothing more, nothing less
    assert {o["key"]: o["sha256"] for o in manifest["objects"]} == {
        k: hashlib.sha256(v).hexdigest() for k, v in src.items()
    }
    assert manifest["total_bytes"] == sum(map(len, src.values()))
    # the 13 MiB file went up in parts, and no unfinished upload is left
    head = _s3(s3_server).head_object(Bucket=s3_bucket, Key="archive/study-2026/raw.bin")
    assert head["ETag"].strip('"').endswith("-3")
    assert not _s3(s3_server).list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    assert not list(state.glob("*.jsonl"))  # the journal goes when the archive is complete

    for extra in ([], ["--deep"]):
        res = runner.invoke(app, ["verify", url, *extra])
        assert res.exit_code == 0, res.output
        assert "OK" in res.output

    # tables straight from the archive with pyarrow; a subject store through bridge_xr's reader
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(
        endpoint_override=s3_server, scheme="http", access_key="testing", secret_key="testing"
    )
    table = pads.dataset(
        f"{s3_bucket}/archive/study-2026/tables", filesystem=fs, partitioning="hive"
    ).to_table()
    local = pd.read_parquet(study / "tables" / "subject=M001" / "part.parquet")
    assert np.array_equal(np.sort(table.column("v").to_numpy()), np.sort(local["v"].to_numpy()))

    from bridge_xr.scene import open_scene

    remote = open_scene(f"{url}/M001.ome.zarr")
    here = open_scene(study / "M001.ome.zarr")
    assert np.array_equal(remote.image("micro").values, here.image("micro").values)

    # a second archive to the same prefix is refused; --resume finds it complete
    res = runner.invoke(app, ["archive", str(study), url])
    assert res.exit_code == 2
    assert "already an archive" in res.output
    res = runner.invoke(app, ["archive", str(study), url, "--resume"])
    assert res.exit_code == 0
    assert "already complete" in res.output


def test_overwrite_replaces_only_what_changed(
    tmp_path: Path, s3_server: str, s3_bucket: str, state: Path
) -> None:
    from bridge_xr.archive import archive_study

    study = _study(tmp_path)
    url = f"s3://{s3_bucket}/ow"
    archive_study(study, url)
    (study / "tables" / "subject=M001" / "part.parquet").unlink()
    (study / "notes.txt").write_text("new")
    res = runner.invoke(app, ["archive", str(study), url])
    assert res.exit_code == 2
    res = runner.invoke(app, ["archive", str(study), url, "--resume"])
    assert res.exit_code == 2
    assert "not in the study" in res.output
    r = archive_study(study, url, overwrite=True)
    assert (r.sent, r.deleted) == (1, 1)
    assert r.sent_keys == ["notes.txt"]
    got = _objects(s3_server, s3_bucket, "ow")
    got.pop("bridge_xr-manifest.json")
    assert got == _files(study)


def test_verify_deep_names_tampered_truncated_deleted_and_extra(
    tmp_path: Path, s3_server: str, s3_bucket: str, state: Path
) -> None:
    from bridge_xr.archive import archive_study

    study = _study(tmp_path)
    url = f"s3://{s3_bucket}/v"
    archive_study(study, url)
    s3 = _s3(s3_server)
    keys = sorted(_files(study))
    tampered, truncated, deleted = keys[0], keys[1], keys[2]
    body = (study / tampered).read_bytes()
    evil = bytes([body[0] ^ 0xFF]) + body[1:]  # same size, and the recorded checksum copied
    meta = s3.head_object(Bucket=s3_bucket, Key=f"v/{tampered}")["Metadata"]
    s3.put_object(Bucket=s3_bucket, Key=f"v/{tampered}", Body=evil, Metadata=meta)
    s3.put_object(
        Bucket=s3_bucket, Key=f"v/{truncated}", Body=(study / truncated).read_bytes()[:-1]
    )
    s3.delete_object(Bucket=s3_bucket, Key=f"v/{deleted}")
    s3.put_object(Bucket=s3_bucket, Key="v/M001.ome.zarr/stray", Body=b"x")

    shallow = runner.invoke(app, ["verify", url, "--json"])
    assert shallow.exit_code == 1
    kinds = {p["key"]: p["kind"] for p in json.loads(shallow.stdout)["problems"]}
    # the copied checksum fools the shallow check; only reading the bytes catches it
    assert kinds == {truncated: "size", deleted: "missing", "M001.ome.zarr/stray": "extra"}

    deep = runner.invoke(app, ["verify", url, "--deep", "--json"])
    assert deep.exit_code == 1
    kinds = {p["key"]: p["kind"] for p in json.loads(deep.stdout)["problems"]}
    assert kinds == {
        tampered: "checksum",
        truncated: "size",
        deleted: "missing",
        "M001.ome.zarr/stray": "extra",
    }
    table = runner.invoke(app, ["verify", url, "--deep"])
    assert table.exit_code == 1
    for key in (tampered, truncated, deleted):
        assert key.rsplit("/", 1)[-1] in table.stdout

    # a plain overwrite (no checksum metadata) is caught by the shallow check too
    s3.put_object(Bucket=s3_bucket, Key=f"v/{tampered}", Body=evil)
    kinds = {
        p["key"]: p["kind"]
        for p in json.loads(runner.invoke(app, ["verify", url, "--json"]).stdout)["problems"]
    }
    assert kinds[tampered] == "checksum"


class _Proxy:
    """A TCP forwarder on 127.0.0.1 in front of the S3 server: ``cut()`` drops every connection
    and stops listening (the server is gone, as far as the client can tell); ``start()`` again."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = int(s.getsockname()[1])
        s.close()
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            with self.lock:
                self.conns += [client, up]
            for a, b in ((client, up), (up, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(1 << 16):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        assert self.listener is not None
        self.listener.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass
            self.conns.clear()


@pytest.fixture
def proxy(s3_server: str) -> Iterator[_Proxy]:
    p = _Proxy(int(s3_server.rsplit(":", 1)[1]))
    p.start()
    yield p
    p.cut()


def _bridge(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import sys; from bridge_xr_cli.main import app; sys.argv[0] = 'bridge'; app()"
    res = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )
    res.stdout = " ".join(res.stdout.split())  # rich wraps at the terminal's width
    return res


def _env(endpoint: str, state: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BRIDGE_XR_S3_ENDPOINT=endpoint, BRIDGE_XR_STATE_DIR=str(state),
        BRIDGE_XR_S3_RETRY_TIMEOUT="2", PYTHONPATH=os.pathsep.join(sys.path), **extra,
    )  # fmt: skip
    return env


def test_connection_cut_mid_upload_then_resume_sends_only_what_is_missing(
    tmp_path: Path, s3_server: str, s3_bucket: str, state: Path, proxy: _Proxy
) -> None:
    study = _study(tmp_path)
    n = len(_files(study))
    url = f"s3://{s3_bucket}/cut"
    env = _env(f"http://127.0.0.1:{proxy.port}", state, BRIDGE_XR_TEST_ARCHIVE_DELAY="0.15")
    code = "import sys; from bridge_xr_cli.main import app; sys.argv[0] = 'bridge'; app()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "archive", str(study), url, "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = _s3(s3_server).list_objects_v2(Bucket=s3_bucket, Prefix="cut/").get("KeyCount", 0)
        if listed >= n // 3:
            break
        time.sleep(0.05)
    proxy.cut()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "--resume" in lines[0], stderr
    assert "Traceback" not in stderr
    there = set(_objects(s3_server, s3_bucket, "cut"))
    assert "bridge_xr-manifest.json" not in there
    assert 0 < len(there) < n

    proxy.start()
    res = _bridge(
        ["archive", str(study), url, "--resume", "--workers", "2"],
        _env(f"http://127.0.0.1:{proxy.port}", state),
    )
    assert res.returncode == 0, res.stderr
    assert f"{n - len(there)} sent" in res.stdout
    assert f"{len(there)} already there" in res.stdout
    got = _objects(s3_server, s3_bucket, "cut")
    got.pop("bridge_xr-manifest.json")
    assert got == _files(study)


def test_killed_between_every_pair_of_writes_resume_completes(
    tmp_path: Path, s3_server: str, s3_bucket: str, state: Path
) -> None:
    study = tmp_path / "study"
    for i in range(4):
        (study / f"M00{i}.ome.zarr").mkdir(parents=True)
        (study / f"M00{i}.ome.zarr" / "zarr.json").write_bytes(os.urandom(1000 + i))
    n = 4 + 1  # data objects, then the manifest
    want = _files(study)
    for kill_after in range(1, n + 1):
        url = f"s3://{s3_bucket}/kill{kill_after}"
        env = _env(s3_server, state, BRIDGE_XR_TEST_ARCHIVE_KILL_AFTER=str(kill_after))
        killed = _bridge(["archive", str(study), url, "--workers", "1"], env)
        assert killed.returncode == -9, killed.stderr
        there = _objects(s3_server, s3_bucket, f"kill{kill_after}")
        assert len(there) == kill_after
        s3 = _s3(s3_server)
        if kill_after == 1:  # as a run killed mid-multipart leaves it: invisible, but billed
            s3.create_multipart_upload(Bucket=s3_bucket, Key=f"kill1/{sorted(want)[-1]}")
        res = _bridge(
            ["archive", str(study), url, "--resume", "--workers", "1"], _env(s3_server, state)
        )
        if kill_after == 1:
            assert "1 abandoned multipart uploads aborted" in res.stdout, res.stdout
            assert not s3.list_multipart_uploads(Bucket=s3_bucket, Prefix="kill1/").get("Uploads")
        assert res.returncode == 0, res.stderr
        if kill_after == n:
            assert "already complete" in res.stdout
        else:  # the last confirmed object is not journalled yet, but its checksum says keep it
            assert f"{4 - kill_after} sent" in res.stdout
        got = _objects(s3_server, s3_bucket, f"kill{kill_after}")
        assert json.loads(got.pop("bridge_xr-manifest.json"))["count"] == 4
        assert got == want
    assert not list(state.glob("*.jsonl"))


def test_path_escape_and_credential_leaks_are_refused(
    tmp_path: Path, s3_server: str, s3_bucket: str, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"SeCrEt{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    study = _study(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    (study / "link.txt").symlink_to(outside)
    outputs = []
    res = runner.invoke(app, ["archive", str(study), f"s3://{s3_bucket}/esc"])
    outputs.append(res.output)
    assert res.exit_code == 2
    assert "symbolic link" in res.output
    assert not _s3(s3_server).list_objects_v2(Bucket=s3_bucket).get("KeyCount")  # nothing written
    (study / "link.txt").unlink()
    for bad in (f"s3://{s3_bucket}/../other", f"s3://{s3_bucket}/a//b", f"s3://{s3_bucket}/./a"):
        res = runner.invoke(app, ["archive", str(study), bad])
        outputs.append(res.output)
        assert res.exit_code == 2, res.output
        assert "escapes" in res.output, res.output

    # a manifest whose keys point outside the prefix is refused, not followed
    url = f"s3://{s3_bucket}/ok"
    res = runner.invoke(app, ["archive", str(study), url])
    outputs.append(res.output)
    assert res.exit_code == 0
    s3 = _s3(s3_server)
    doc = json.loads(
        s3.get_object(Bucket=s3_bucket, Key="ok/bridge_xr-manifest.json")["Body"].read()
    )
    doc["objects"][0]["key"] = "../../etc/passwd"
    s3.put_object(Bucket=s3_bucket, Key="ok/bridge_xr-manifest.json", Body=json.dumps(doc).encode())
    res = runner.invoke(app, ["verify", url, "--deep"])
    outputs.append(res.output)
    assert res.exit_code == 2
    assert "refused" in res.output

    # a failure message (server gone) names the endpoint but never the secret
    monkeypatch.setenv("BRIDGE_XR_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("BRIDGE_XR_S3_RETRY_TIMEOUT", "1")
    res = runner.invoke(app, ["archive", str(study), f"s3://{s3_bucket}/gone"])
    outputs.append(res.output)
    assert res.exit_code == 2
    assert "cannot reach" in res.output
    for text in outputs:
        assert secret not in text
    written = [
        p.read_bytes() for p in [*state.rglob("*"), *tmp_path.rglob("*.json*")] if p.is_file()
    ]
    written += list(_objects(s3_server, s3_bucket, "ok").values())
    assert all(secret.encode() not in b for b in written)


def test_study_commands_run_in_place_on_an_archive(
    tmp_path: Path, s3_server: str, s3_bucket: str, state: Path
) -> None:
    from bridge_xr.extract.tables import read_tables
    from bridge_xr.testing.phantom import PhantomConfig
    from bridge_xr.testing.study import write_analysis_study

    write_analysis_study(tmp_path, ("M001", "M002"), PhantomConfig.tiny())
    study = tmp_path / "study"
    thr = ["--threshold", "angiogram=1000", "--threshold", "glioma=900"]
    res = runner.invoke(app, ["extract-study", str(study), "--output", str(study / "tables"), *thr])
    assert res.exit_code == 0, res.output
    url = f"s3://{s3_bucket}/lab/study-2026"
    assert runner.invoke(app, ["archive", str(study), url]).exit_code == 0

    res = runner.invoke(app, ["info", url])
    assert res.exit_code == 0, res.output
    assert "2 subjects" in res.output
    assert "archive:" in res.output
    assert "M002" in res.output

    # tables extracted from the archive, written to the object store, equal those made locally
    out_url = f"s3://{s3_bucket}/lab/tables-2026"
    res = runner.invoke(app, ["extract-study", url, "--output", out_url, *thr])
    assert res.exit_code == 0, res.output
    cols = ["subject", "session", "z", "y", "x"]
    remote = read_tables(out_url).sort_values(cols).reset_index(drop=True)
    local = read_tables(study / "tables").sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(remote[local.columns], local, check_categorical=False)
    res = runner.invoke(app, ["extract-study", url, "--output", out_url, *thr])
    assert res.exit_code == 2
    assert "already exists" in res.output

    res = runner.invoke(app, ["report", url, "--output", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report" / "index.html").read_text()
    assert "M001.ome.zarr" in html
    assert "M002.ome.zarr" in html

    base = ["learn", "export", "--spacing", "30um,30um,30um", "--crop-size", "4",
            "--min-vessel", "1", "--no-verify", "--no-diameters"]  # fmt: skip
    res = runner.invoke(app, [*base[:2], url, *base[2:], "--output", str(tmp_path / "ds_s3")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base[:2], str(study), *base[2:], "--output", str(tmp_path / "ds")])
    assert res.exit_code == 0, res.output
    import nibabel as nib

    here = sorted((tmp_path / "ds").glob("Dataset*/labelsTr/*.nii.gz"))
    there = sorted((tmp_path / "ds_s3").glob("Dataset*/labelsTr/*.nii.gz"))
    assert [p.name for p in here] == [p.name for p in there]
    assert here
    for a, b in zip(here, there, strict=True):
        assert np.array_equal(np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj))

    # none of it wrote into the archive
    res = runner.invoke(app, ["verify", url, "--deep"])
    assert res.exit_code == 0, res.output

    # a prefix without a manifest (unfinished, or written in place) needs --live
    _s3(s3_server).delete_object(Bucket=s3_bucket, Key="lab/study-2026/bridge_xr-manifest.json")
    res = runner.invoke(app, ["report", url, "--output", str(tmp_path / "r2")])
    assert res.exit_code == 2
    assert "--live" in res.output
    res = runner.invoke(app, ["info", url, "--live"])
    assert res.exit_code == 0, res.output
    assert "2 subjects" in res.output
    assert "no archive manifest" in " ".join(res.output.split())


def test_credentials_from_a_profile(
    tmp_path: Path, s3_server: str, s3_bucket: str, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge_xr.archive import archive_study, verify_archive
    from bridge_xr.archive.target import open_target

    creds = tmp_path / "credentials"
    creds.write_text(
        "[lab]\naws_access_key_id = profilekey\naws_secret_access_key = profilesecret\n"
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_PROFILE", "lab")
    url = f"s3://{s3_bucket}/profile"
    assert open_target(url).store.credential_provider()["access_key_id"] == "profilekey"
    study = tmp_path / "study"
    study.mkdir()
    (study / "a.bin").write_bytes(b"abc")
    assert archive_study(study, url).sent == 1
    assert verify_archive(url, deep=True).ok
