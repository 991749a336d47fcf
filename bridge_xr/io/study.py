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


def _manifest(study: str | Path) -> dict[str, Any] | None:
    """The archive manifest at ``study`` (a folder or a URL) as parsed JSON, or None."""
    import json

    from bridge_xr._constants import ARCHIVE_MANIFEST
    from bridge_xr.io.locations import filesystem, is_remote, join, local_path

    where = join(study, ARCHIVE_MANIFEST)
    try:
        if is_remote(where):
            fs, path = filesystem(where)
            with fs.open(path, "rb") as fh:
                return dict(json.load(fh))
        return dict(json.loads(local_path(where).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as exc:
        raise InvalidInputError(
            f"the archive manifest of {str(study)!r} cannot be read: {exc}"
        ) from None


def _manifest_subjects(study: str) -> list[str] | None:
    """Subject store names from the archive manifest at ``study``, or None without one."""
    doc = _manifest(study)
    if doc is None:
        return None
    tops = {str(o["key"]).split("/", 1)[0] for o in doc.get("objects", []) if "/" in str(o["key"])}
    return sorted(t for t in tops if t.endswith(".zarr"))


def subject_stores(study: str | Path, *, live: bool = False) -> list[Any]:
    """The subject stores of a study (``*.ome.zarr`` or ``*.zarr``), sorted.

    A local folder gives :class:`~pathlib.Path` objects. An object-store prefix (``s3://``)
    gives URLs: the subjects its archive manifest lists (``bridge archive``); a prefix without a
    manifest is an unfinished archive or a study written in place, and is refused unless
    ``live`` (an unfinished archive reads missing chunks as fill values: silently wrong numbers).

    Parameters
    ----------
    study : str or path
        The study folder or prefix.
    live : bool
        Read an object-store study that has no archive manifest, by listing.

    Returns
    -------
    list of Path (local) or of str (URLs)

    Raises
    ------
    InvalidInputError
        No such folder, no subject store in it, or (remote) no manifest without ``live``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for s in ("M002.ome.zarr", "M001.ome.zarr", "notes"):
    ...     (root / s).mkdir()
    >>> [p.name for p in subject_stores(root)]
    ['M001.ome.zarr', 'M002.ome.zarr']
    """
    from bridge_xr.io.locations import is_remote, join, list_folders, local_path

    if is_remote(study):
        text = str(study).rstrip("/")
        names = _manifest_subjects(text)
        if names is None:
            if not live:
                raise InvalidInputError(
                    f"{text} has no archive manifest: an unfinished archive (finish it with "
                    "`bridge archive --resume`) or a study written in place (pass --live to "
                    "read it as it is)"
                )
            names = [n for n in list_folders(text) if n.endswith(".zarr")]
        if not names:
            raise InvalidInputError(f"no subject stores (*.ome.zarr) in {text!r}")
        return [join(text, n) for n in names]
    root = local_path(study)
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


def is_study(where: str | Path) -> bool:
    """Whether ``where`` is a study (a folder or prefix of stores), not a subject store itself."""
    from bridge_xr.io.locations import exists, join

    return exists(where) and not exists(join(where, "zarr.json"))


def describe_study(where: str | Path, *, live: bool = False) -> dict[str, Any]:
    """The subjects of a study (images, registrations) and its archive manifest, if any.

    Parameters
    ----------
    where : str or path
        A study folder or an ``s3://`` prefix.
    live : bool
        Read an ``s3://`` study that has no archive manifest.

    Returns
    -------
    dict
        ``study``, ``archive`` (``None`` or count, total_bytes, created) and ``subjects``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing import tiny_scene
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = tiny_scene(registered=True, where=root / "M001.ome.zarr")
    >>> d = describe_study(root)
    >>> [(s["subject"], s["images"]) for s in d["subjects"]], d["archive"]
    ([('M001', 2)], None)
    """
    from bridge_xr.io._store import resolve_store
    from bridge_xr.io.locations import name_of

    doc = _manifest(where)
    archive = (
        None
        if doc is None
        else {k: doc.get(k) for k in ("count", "total_bytes", "created", "source")}
    )
    subjects = []
    for store in subject_stores(where, live=live):
        st = resolve_store(str(store), read_only=True)
        meta = read_subject(st)
        subjects.append(
            {
                "subject": subject_name(st, str(store)),
                "store": name_of(store),
                "images": len(meta.images),
                "registrations": len(meta.registrations),
            }
        )
    return {"study": str(where), "archive": archive, "subjects": subjects}
