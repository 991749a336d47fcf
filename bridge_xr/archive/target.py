"""Where an archive goes: an ``s3://bucket/prefix`` (or a local folder), as an obstore store.

The client is obstore (Rust ``object_store``): it releases the GIL for whole requests, does
multipart uploads itself (aborting them when a put fails) and offers create-only puts
(``If-None-Match: *``), which is what makes the manifest a commit point. s3fs stays the client of
zarr's own ``s3://`` stores; ``benchmarks/bench_archive.py`` measures both.

Credentials and endpoints come from the usual places and never from the command line:
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, else the profile named
by ``AWS_PROFILE`` (or ``default``) in ``~/.aws`` (read by botocore); the endpoint from
``BRIDGE_XR_S3_ENDPOINT``, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``. They are never
printed: every message goes through :func:`redact`.

Examples
--------
>>> check_key("M001.ome.zarr/zarr.json")
'M001.ome.zarr/zarr.json'
>>> check_key("../secrets")
Traceback (most recent call last):
...
bridge_xr.errors.InvalidInputError: key '../secrets' escapes the archive prefix ('..', '.' or an empty part); refused
>>> redact("failed: AWS_SECRET_ACCESS_KEY=abc123 at s3://b/p")
'failed: AWS_SECRET_ACCESS_KEY=*** at s3://b/p'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bridge_xr._constants import ARCHIVE_MANIFEST
from bridge_xr.errors import InvalidInputError

#: the manifest's key at the root of the archive prefix (written last, create-only)
MANIFEST_NAME = ARCHIVE_MANIFEST
#: user metadata on every archived object: the SHA-256 of its bytes, as sent
SHA_ATTRIBUTE = "bridge-xr-sha256"

_ENDPOINT_VARS = ("BRIDGE_XR_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_SECRET_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
#: secrets read from a profile (not in the environment): redacted like the environment's
_KNOWN_SECRETS: set[str] = set()


def check_key(key: str) -> str:
    """``key`` if it stays inside the archive prefix, else :class:`InvalidInputError`.

    Refused: absolute keys, ``..`` / ``.`` / empty parts, backslashes and control characters.
    """
    if not key or key.startswith("/") or _CONTROL.search(key):
        raise InvalidInputError(f"key {key!r} is absolute or has control characters; refused")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidInputError(
            f"key {key!r} escapes the archive prefix ('..', '.' or an empty part); refused"
        )
    return key


def redact(text: str) -> str:
    """``text`` with every credential value this process knows replaced by ``***``."""
    values = {os.environ.get(var) for var in ("AWS_ACCESS_KEY_ID", *_SECRET_VARS)}
    for value in values | _KNOWN_SECRETS:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    text = re.sub(
        r"(?i)(secret[_-]?access[_-]?key|session[_-]?token|signature)=[^\s&]+", r"\1=***", text
    )
    return re.sub(r"(?i)(X-Amz-Credential|X-Amz-Signature)=[^\s&]+", r"\1=***", text)


def one_line(exc: BaseException) -> str:
    """An exception as one short, redacted line (obstore's messages span several)."""
    text = " ".join(str(exc).split())
    return redact(text[:300] + ("…" if len(text) > 300 else ""))


@dataclass(frozen=True)
class Target:
    """An archive location: ``url`` for messages, ``store`` for obstore calls.

    ``kind`` is ``"s3"`` or ``"local"``; ``bucket``/``prefix`` are set for ``s3``.
    """

    url: str
    store: Any
    kind: str
    bucket: str = ""
    prefix: str = ""
    endpoint: str | None = None


def _endpoint() -> str | None:
    for var in _ENDPOINT_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def _profile_credentials() -> Any:
    """A credential provider from botocore's chain (profiles, SSO, instance roles), or None."""
    try:
        import botocore.session
    except ImportError:
        return None
    creds = botocore.session.Session(profile=os.environ.get("AWS_PROFILE")).get_credentials()
    if creds is None:
        return None

    def provide() -> dict[str, Any]:
        frozen = creds.get_frozen_credentials()
        _KNOWN_SECRETS.update(v for v in (frozen.access_key, frozen.secret_key, frozen.token) if v)
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": None,
        }

    return provide


def _retry() -> dict[str, Any]:
    seconds = float(os.environ.get("BRIDGE_XR_S3_RETRY_TIMEOUT", "120"))
    return {"max_retries": 10 if seconds > 10 else 2, "retry_timeout": timedelta(seconds=seconds)}


def open_target(where: str | os.PathLike[str], *, create: bool = False) -> Target:
    """The obstore store of ``where`` (``s3://bucket/prefix``, ``file://`` or a local folder).

    Parameters
    ----------
    where : str or path
        The archive location.
    create : bool
        For a local folder: create it.

    Raises
    ------
    InvalidInputError
        An unknown scheme, a prefix with ``..``, or obstore is missing.

    Examples
    --------
    >>> import tempfile
    >>> open_target(tempfile.mkdtemp()).kind
    'local'
    """
    try:
        from obstore.store import LocalStore, S3Store
    except ImportError as exc:
        raise InvalidInputError("archiving needs obstore: pip install 'bridge_xr[s3]'") from exc
    text = os.fspath(where)
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "file", text
    if scheme == "file":
        root = Path(rest).expanduser().absolute()
        if create:
            root.mkdir(parents=True, exist_ok=True)
        elif not root.is_dir():
            raise InvalidInputError(f"no archive folder {str(root)!r}; check the path")
        return Target(url=str(root), store=LocalStore(root), kind="local")
    if scheme not in ("s3", "s3a"):
        raise InvalidInputError(f"cannot archive to {text!r}: only s3:// URLs and local folders")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise InvalidInputError(f"{text!r} names no bucket; use s3://BUCKET/PREFIX")
    if prefix:
        check_key(prefix)
    endpoint = _endpoint()
    options: dict[str, Any] = {
        "timeout": timedelta(seconds=300),
        "connect_timeout": timedelta(seconds=10),
    }
    config: dict[str, Any] = {}
    if endpoint:
        config["endpoint"] = endpoint
        options["allow_http"] = endpoint.startswith("http://")
    provider = None
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        provider = _profile_credentials()
    config.setdefault(
        "region",
        os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
    )
    store = S3Store(
        bucket,
        prefix=prefix or None,
        config=config,  # type: ignore[arg-type]
        client_options=options,  # type: ignore[arg-type]
        retry_config=_retry(),  # type: ignore[arg-type]
        credential_provider=provider,
    )
    url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return Target(url=url, store=store, kind="s3", bucket=bucket, prefix=prefix, endpoint=endpoint)


def list_objects(target: Target) -> dict[str, dict[str, Any]]:
    """Every object under the target: key -> ``{"size", "e_tag"}`` (keys relative to the prefix)."""
    import obstore

    found: dict[str, dict[str, Any]] = {}
    for batch in obstore.list(target.store, chunk_size=1000):
        for meta in batch:
            found[meta["path"]] = {"size": int(meta["size"]), "e_tag": meta.get("e_tag")}
    return found


def abort_multipart(target: Target) -> int:
    """Abort the unfinished multipart uploads under an ``s3`` target (a killed archive's); count.

    obstore aborts its own when a put fails; a killed process leaves them, invisible but billed.
    Needs botocore (installed with s3fs); without it nothing is aborted and 0 is returned.
    """
    if target.kind != "s3":
        return 0
    try:
        import botocore.session
    except ImportError:
        return 0
    session = botocore.session.Session(profile=os.environ.get("AWS_PROFILE"))
    client = session.create_client(
        "s3",
        endpoint_url=target.endpoint,
        region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
    prefix = f"{target.prefix}/" if target.prefix else ""
    aborted = 0
    pager = client.get_paginator("list_multipart_uploads")
    for page in pager.paginate(Bucket=target.bucket, Prefix=prefix):
        for up in page.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=target.bucket, Key=up["Key"], UploadId=up["UploadId"]
            )
            aborted += 1
    return aborted


def store_errors() -> tuple[type[BaseException], ...]:
    """The exceptions an object store raises when it fails (server gone, connection cut)."""
    from obstore.exceptions import BaseError

    return (BaseError, OSError, RuntimeError, TimeoutError)


def read_sha(target: Target, key: str, chunk: int = 8 * 2**20) -> tuple[str, int]:
    """SHA-256 and size of an object's bytes, read in parts of ``chunk`` bytes."""
    import hashlib

    import obstore

    h = hashlib.sha256()
    n = 0
    for buf in obstore.get(target.store, key).stream(min_chunk_size=chunk):
        view = memoryview(buf)
        h.update(view)
        n += len(view)
    return h.hexdigest(), n


def recorded_sha(target: Target, key: str) -> str:
    """The SHA-256 recorded on an object at upload ('' if none); a folder's object is read."""
    import obstore

    if target.kind == "local":  # a folder keeps no object metadata
        return read_sha(target, key)[0]
    res = obstore.get(target.store, key, options={"head": True})
    return str(res.attributes.get(SHA_ATTRIBUTE, "") or "")
