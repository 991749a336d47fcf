"""Study layout: the subject stores of a study folder, and one rule for a subject's name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike
from bridge_xr.io.subject import read_subject


def subject_name(store: Any, where: StoreLike) -> str:
    """The subject's name: its metadata, else the store's file name without ``.ome.zarr``.

    Parameters
    ----------
    store : zarr store
        The opened subject store.
    where : str or path
        How the user named it (its file name is the fallback).

    Returns
    -------
    str

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> subject_name(tiny_scene().store, "/data/study/M001.ome.zarr")
    'M001'
    """
    meta = read_subject(store)
    if meta.subject:
        return meta.subject
    name = str(where).rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"(\.ome)?\.zarr$", "", name)


def subject_stores(study: str | Path) -> list[Path]:
    """The subject stores of a study folder (``*.ome.zarr`` or ``*.zarr``), sorted.

    Parameters
    ----------
    study : str or path
        The study folder.

    Returns
    -------
    list of Path

    Raises
    ------
    InvalidInputError
        No such folder, or no subject store in it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for s in ("M002.ome.zarr", "M001.ome.zarr", "notes"):
    ...     (root / s).mkdir()
    >>> [p.name for p in subject_stores(root)]
    ['M001.ome.zarr', 'M002.ome.zarr']
    """
    root = Path(study)
    if not root.is_dir():
        raise InvalidInputError(f"study folder {str(root)!r} does not exist")
    stores = sorted(p for p in root.iterdir() if p.is_dir() and p.name.endswith(".zarr"))
    if not stores:
        raise InvalidInputError(f"no subject stores (*.ome.zarr) in {str(root)!r}")
    return stores


def find_subject(study: str | Path, subject: str) -> Path:
    """The store of ``subject`` in a study folder, by the one naming rule of :func:`subject_name`.

    Parameters
    ----------
    study : str or path
        The study folder.
    subject : str
        The subject's name.

    Returns
    -------
    Path

    Raises
    ------
    InvalidInputError
        No such subject (the message lists those there).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing import tiny_scene
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = tiny_scene(where=root / "M001.v2.ome.zarr")
    >>> find_subject(root, "M001.v2").name
    'M001.v2.ome.zarr'
    """
    from bridge_xr.io._store import resolve_store

    names = {subject_name(resolve_store(str(p)), str(p)): p for p in subject_stores(study)}
    if subject not in names:
        raise InvalidInputError(f"no subject {subject!r} in {str(study)!r}; have {sorted(names)}")
    return names[subject]
