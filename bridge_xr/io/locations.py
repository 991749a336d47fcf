"""Folders that may be object-store prefixes: a study, a tables folder, on disk or ``s3://``.

One place decides whether a location is remote and gives the fsspec filesystem for it, with the
same endpoint rule as :func:`bridge_xr.io._store.resolve_store` (``BRIDGE_XR_S3_ENDPOINT``,
``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``) and the usual AWS credential chain.

Examples
--------
>>> is_remote("s3://lab/study"), is_remote("/data/study"), is_remote("file:///data/study")
(True, False, False)
>>> join("s3://lab/study/", "M001.ome.zarr")
's3://lab/study/M001.ome.zarr'
>>> name_of("s3://lab/study/M001.ome.zarr/")
'M001.ome.zarr'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bridge_xr.errors import InvalidInputError

Location = str | os.PathLike[str]


def is_remote(where: Location) -> bool:
    """Whether ``where`` is a URL other than ``file://``."""
    text = os.fspath(where)
    return "://" in text and not text.startswith("file://")


def local_path(where: Location) -> Path:
    """``where`` as a local path (``file://`` stripped)."""
    text = os.fspath(where)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def join(base: Location, *names: str) -> str:
    """``base/name/...`` for URLs and paths alike (as text)."""
    text = os.fspath(base)
    if not is_remote(text):
        return str(local_path(text).joinpath(*names))
    return "/".join([text.rstrip("/"), *names])


def name_of(where: Location) -> str:
    """The last part of a path or URL."""
    return os.fspath(where).rstrip("/").rsplit("/", 1)[-1]


def filesystem(url: str) -> tuple[Any, str]:
    """The (synchronous) fsspec filesystem of a URL and the path inside it."""
    import fsspec

    from bridge_xr.io._store import _s3_options

    scheme = url.split("://", 1)[0]
    opts: dict[str, Any] = {}
    if scheme in ("s3", "s3a"):
        opts = _s3_options(None)
        opts.pop("asynchronous", None)
    try:
        fs, path = fsspec.core.url_to_fs(url, **opts)
    except (ImportError, ValueError) as exc:
        raise InvalidInputError(f"cannot open {url!r}: {exc}") from exc
    return fs, path


def list_folders(where: Location) -> list[str]:
    """The names of the folders (common prefixes) directly under ``where``, sorted."""
    if not is_remote(where):
        root = local_path(where)
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    fs, path = filesystem(os.fspath(where))
    try:
        entries = fs.ls(path, detail=True, refresh=True)
    except FileNotFoundError:
        return []
    return sorted(name_of(e["name"]) for e in entries if e.get("type") == "directory")


def exists(where: Location) -> bool:
    """Whether a file or folder (a prefix with objects under it) is there."""
    if not is_remote(where):
        return local_path(where).exists()
    fs, path = filesystem(os.fspath(where))
    return bool(fs.exists(path))
