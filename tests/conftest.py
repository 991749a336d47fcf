"""Shared fixtures: a real S3-compatible server on 127.0.0.1 (moto), phantom data, CLI runner."""

from __future__ import annotations

import locale
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge_xr.testing.phantom import Phantom, PhantomConfig, make_phantom


@pytest.fixture(autouse=True)
def _keep_locale() -> Iterator[None]:
    """GDCM's DICOM writer sets the process locale to "C"; one test must not change the next."""
    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on loopback with fake credentials (no real account is ever touched)."""
    from moto.server import ThreadedMotoServer

    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(var, None)
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    yield endpoint
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; ``BRIDGE_XR_S3_ENDPOINT`` points bridge_xr at the local server."""
    import boto3

    name = f"bucket-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    monkeypatch.setenv("BRIDGE_XR_S3_ENDPOINT", s3_server)
    return name


@pytest.fixture(scope="session")
def tiny_phantom() -> Phantom:
    """A small phantom, built once per session."""
    return make_phantom(PhantomConfig.tiny())


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    """Alias of ``tmp_path``."""
    return tmp_path
