"""One place that turns a user's "where" (path, ``s3://`` URL, zarr store) into a zarr Store.

Examples
--------
>>> from zarr.storage import MemoryStore
>>> s = MemoryStore()
>>> resolve_store(s) is s
True
>>> type(resolve_store("/tmp/M001.ome.zarr")).__name__
'LocalStore'
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from zarr.abc.store import Store
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, MemoryStore

from bridge_xr.errors import InvalidInputError


@runtime_checkable
class HasStore(Protocol):
    """Anything that holds an open subject store (a :class:`bridge_xr.Scene`)."""

    @property
    def store(self) -> Store:
        """The zarr store."""
        ...


StoreLike = str | os.PathLike[str] | Store | HasStore
T = TypeVar("T")

#: Metadata caches of the stores a Scene holds open, by ``id(store)``. A store not held by a
#: Scene (a path given to a function) is read afresh every time; every write through bridge_xr
#: empties its store's cache.
_CACHES: dict[int, dict[Any, Any]] = {}


def hold_cache(store: Store) -> None:
    """Cache metadata reads of ``store`` until it is garbage-collected (see :func:`cached`)."""
    if id(store) not in _CACHES:
        _CACHES[id(store)] = {}
        weakref.finalize(store, _CACHES.pop, id(store), None)


def cached(store: Store, key: Any, make: Callable[[], T]) -> T:
    """``make()``, remembered under ``key`` while a Scene holds ``store``."""
    cache = _CACHES.get(id(store))
    if cache is None:
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def invalidate(store: Store) -> None:
    """Forget every cached read of ``store`` (called by every write)."""
    cache = _CACHES.get(id(store))
    if cache is not None:
        cache.clear()


_ENDPOINT_VARS = ("BRIDGE_XR_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def _s3_options(storage_options: dict[str, Any] | None) -> dict[str, Any]:
    opts = dict(storage_options or {})
    if "endpoint_url" not in opts and "client_kwargs" not in opts:
        for var in _ENDPOINT_VARS:
            if os.environ.get(var):
                opts["endpoint_url"] = os.environ[var]
                break
    opts.setdefault("asynchronous", True)
    return opts


def resolve_store(
    where: StoreLike, *, read_only: bool = False, storage_options: dict[str, Any] | None = None
) -> Store:
    """Return a zarr v3 :class:`~zarr.abc.store.Store` for a path, URL or store.

    Parameters
    ----------
    where : str, PathLike or Store
        A local path, an fsspec URL (``s3://bucket/prefix``, ``memory://x``), or a store.
    read_only : bool
        Open read-only.
    storage_options : dict, optional
        Passed to fsspec for URLs. For ``s3://`` the endpoint is taken from
        ``BRIDGE_XR_S3_ENDPOINT`` / ``AWS_ENDPOINT_URL`` when not given.

    Examples
    --------
    >>> type(resolve_store("memory://example")).__name__
    'FsspecStore'
    """
    if isinstance(where, HasStore) and not isinstance(where, Store):
        return where.store  # a Scene: its own store (and metadata cache), as it was opened
    if isinstance(where, Store):
        return where.with_read_only(True) if read_only and not where.read_only else where
    text = os.fspath(where)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme == "file":
            return LocalStore(text.split("://", 1)[1], read_only=read_only)
        opts = (
            _s3_options(storage_options) if scheme in {"s3", "s3a"} else dict(storage_options or {})
        )
        if scheme not in {"s3", "s3a"}:
            opts.setdefault("asynchronous", True)
        try:
            return FsspecStore.from_url(text, storage_options=opts, read_only=read_only)
        except (ImportError, ValueError) as exc:
            msg = f"cannot open {text!r}: {exc}"
            raise InvalidInputError(msg) from exc
    path = Path(text).expanduser()
    if read_only and not path.exists():
        msg = f"no such store: {text!r}; check the path"
        raise InvalidInputError(msg)
    return LocalStore(path, read_only=read_only)


def describe_store(store: Store) -> str:
    """A short human name for a store (for messages)."""
    if isinstance(store, LocalStore):
        return str(store.root)
    if isinstance(store, FsspecStore):
        return f"{store.fs.protocol if isinstance(store.fs.protocol, str) else store.fs.protocol[0]}://{store.path}"
    if isinstance(store, MemoryStore):
        return "<memory store>"
    return repr(store)


def key_exists(store: Store, key: str) -> bool:
    """Whether ``key`` exists in ``store``."""
    return bool(sync(store.exists(key)))


def delete_prefix(store: Store, prefix: str) -> None:
    """Delete every key under ``prefix`` ('' = the whole store), where the store allows it."""
    if not store.supports_deletes:
        return
    invalidate(store)
    if isinstance(store, LocalStore) and prefix == "":
        import shutil

        shutil.rmtree(store.root, ignore_errors=True)
        return
    if store.supports_listing:
        sync(store.delete_dir(prefix))
