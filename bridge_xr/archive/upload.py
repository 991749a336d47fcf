"""``bridge archive``: a study folder to an object-store prefix, with SHA-256, resumable.

Order of writes: every data object (each with its SHA-256 in its metadata), then the manifest,
create-only. A reader never sees a complete study before the manifest exists, and a second
archive to the same prefix is refused unless ``resume`` or ``overwrite``.

Progress is journalled outside the archive, in ``$BRIDGE_XR_STATE_DIR`` (default
``~/.cache/bridge_xr/archive``): one line per object the server confirmed. A resumed run skips
an object when the server has it with the journalled size and ETag; an object the server has but
the journal lacks (the process died between the put and the journal line) is kept when the
SHA-256 in its metadata equals the local file's. So only the objects in flight are sent again.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge_xr.archive.manifest import Entry, Manifest, read_manifest
from bridge_xr.archive.target import (
    MANIFEST_NAME,
    SHA_ATTRIBUTE,
    Target,
    abort_multipart,
    check_key,
    list_objects,
    one_line,
    open_target,
    recorded_sha,
    store_errors,
)
from bridge_xr.errors import BridgeXRError, InvalidInputError

#: objects above this go up as multipart uploads, in parts of this size
PART_BYTES = 16 * 2**20
MULTIPART_ABOVE = 64 * 2**20


class ArchiveError(BridgeXRError):
    """The object store failed mid-archive (server gone, connection cut); rerun with resume."""


@dataclass(frozen=True)
class SourceFile:
    """A file of the study folder and its key in the archive."""

    key: str
    path: Path
    size: int
    mtime_ns: int


@dataclass
class ArchiveResult:
    """What an archive run did."""

    target: str
    objects: int = 0
    bytes: int = 0
    sent: int = 0
    sent_bytes: int = 0
    kept: int = 0
    deleted: int = 0
    aborted_uploads: int = 0
    already_complete: bool = False
    sent_keys: list[str] = field(default_factory=list)


def scan_source(study: str | os.PathLike[str]) -> list[SourceFile]:
    """Every file under ``study`` with its key; symlinks and odd names are refused.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "M001.ome.zarr").mkdir(); _ = (root / "M001.ome.zarr" / "zarr.json").write_text("{}")
    >>> [f.key for f in scan_source(root)]
    ['M001.ome.zarr/zarr.json']
    """
    root = Path(study)
    if not root.is_dir():
        raise InvalidInputError(f"study folder {str(root)!r} does not exist; check the path")
    if root.is_symlink():
        raise InvalidInputError(f"{str(root)!r} is a symbolic link; archive the folder it names")
    files: list[SourceFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in dirnames + filenames:
            path = here / name
            if path.is_symlink():
                raise InvalidInputError(
                    f"{str(path)!r} is a symbolic link; links are not archived "
                    "(they could point outside the study): replace it by the file itself"
                )
        for name in filenames:
            path = here / name
            key = check_key(path.relative_to(root).as_posix())
            if key == MANIFEST_NAME:
                raise InvalidInputError(
                    f"{str(path)!r} is an archive manifest; the source must be a study, "
                    "not a copy of an archive"
                )
            st = path.stat()
            files.append(SourceFile(key, path, st.st_size, st.st_mtime_ns))
    if not files:
        raise InvalidInputError(f"study folder {str(root)!r} is empty")
    return sorted(files, key=lambda f: f.key)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in parts (hashlib releases the GIL)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# -- the journal, outside the archive ------------------------------------------------------------
def state_dir() -> Path:
    """Where journals of unfinished archives live."""
    env = os.environ.get("BRIDGE_XR_STATE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "bridge_xr" / "archive"


def journal_path(target: Target) -> Path:
    """The journal of ``target`` (named by a hash of its URL and endpoint)."""
    ident = f"{target.url}|{target.endpoint or ''}".encode()
    return state_dir() / f"{hashlib.sha256(ident).hexdigest()[:20]}.jsonl"


class _Journal:
    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.done: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if "key" in rec:
                    self.done[rec["key"]] = rec
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = path.open("a")
        if not self.done:
            self.fh.write(json.dumps({"target": target}) + "\n")
            self.fh.flush()

    def add(self, rec: dict[str, Any]) -> None:
        with self.lock:
            self.fh.write(json.dumps(rec) + "\n")
            self.fh.flush()
            self.done[rec["key"]] = rec

    def close(self) -> None:
        self.fh.close()


# -- test hook: die between two writes ------------------------------------------------------------
_WRITES = 0
_WRITES_LOCK = threading.Lock()


def _after_write() -> None:
    """``BRIDGE_XR_TEST_ARCHIVE_KILL_AFTER=N``: SIGKILL this process after its N-th write."""
    global _WRITES
    limit = os.environ.get("BRIDGE_XR_TEST_ARCHIVE_KILL_AFTER")
    if not limit:
        return
    with _WRITES_LOCK:
        _WRITES += 1
        if int(limit) <= _WRITES:
            os.kill(os.getpid(), signal.SIGKILL)


def remote_sha(target: Target, key: str) -> str | None:
    """The SHA-256 recorded on an archived object, or None (none recorded, or unreadable)."""
    try:
        return recorded_sha(target, key) or None
    except Exception:
        return None


def _put(target: Target, f: SourceFile) -> tuple[str, str | None, int]:
    """Send one file; (sha256, e_tag, size)."""
    import obstore

    def attrs(sha: str) -> dict[str, str] | None:
        return {SHA_ATTRIBUTE: sha} if target.kind == "s3" else None

    if f.size > MULTIPART_ABOVE:
        sha = file_sha256(f.path)
        res = obstore.put(
            target.store,
            f.key,
            f.path,
            attributes=attrs(sha),
            use_multipart=True,
            chunk_size=PART_BYTES,
            max_concurrency=4,
        )
        size = f.path.stat().st_size
    else:
        data = f.path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        res = obstore.put(target.store, f.key, data, attributes=attrs(sha), use_multipart=False)
        size = len(data)
    if size != f.size:
        raise InvalidInputError(f"{str(f.path)!r} changed while it was archived; run again")
    return sha, res.get("e_tag"), size


def archive_study(
    study: str | os.PathLike[str],
    target: str,
    *,
    workers: int = 8,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveResult:
    """Archive a study folder to ``target`` (``s3://bucket/prefix`` or a local folder).

    Parameters
    ----------
    study : str or path
        The study folder (subject stores, tables, anything in it).
    target : str
        The archive prefix.
    workers : int
        Objects in flight at once.
    resume : bool
        Finish an unfinished archive: send only what is missing or differs.
    overwrite : bool
        Replace an archive there: the manifest is removed first, objects that are equal are
        kept, the others are sent, and objects not in the study are deleted.
    progress : callable, optional
        ``progress(bytes_done, bytes_total)``.

    Returns
    -------
    ArchiveResult

    Raises
    ------
    InvalidInputError
        Bad source (symlinks, odd names), or the target is taken without resume/overwrite.
    ArchiveError
        The store failed; what was confirmed is journalled, so rerun with ``resume=True``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "study").mkdir(), (root / "study" / "a.txt").write_text("hello")
    >>> r = archive_study(root / "study", str(root / "archive"))
    >>> (r.objects, r.sent, (root / "archive" / "bridge_xr-manifest.json").exists())
    (1, 1, True)
    """
    import obstore

    files = scan_source(study)
    tgt = open_target(target, create=True)
    errors = store_errors()
    result = ArchiveResult(target=tgt.url, objects=len(files), bytes=sum(f.size for f in files))
    try:
        existing = read_manifest(tgt)
        listing = list_objects(tgt)
    except errors as exc:
        raise ArchiveError(f"cannot reach {tgt.url}: {one_line(exc)}") from None
    listing.pop(MANIFEST_NAME, None)
    extras = sorted(set(listing) - {f.key for f in files})
    if existing is not None and not (resume or overwrite):
        raise InvalidInputError(
            f"{tgt.url} is already an archive ({len(existing.objects)} objects, "
            f"{existing.created}); check it with `bridge verify`, or pass --overwrite to replace it"
        )
    if existing is None and listing and not (resume or overwrite):
        raise InvalidInputError(
            f"{tgt.url} holds {len(listing)} objects but no manifest (an unfinished archive?); "
            "pass --resume to finish it or --overwrite to replace it"
        )
    if extras and not overwrite:
        raise InvalidInputError(
            f"{tgt.url} holds {len(extras)} objects that are not in the study (e.g. "
            f"{extras[0]!r}): the study changed since the archive began; pass --overwrite"
        )

    journal = _Journal(journal_path(tgt), tgt.url)
    try:
        entries: dict[str, Entry] = {}
        todo: list[SourceFile] = []
        for f in files:
            have = listing.get(f.key)
            rec = journal.done.get(f.key)
            if have is not None and have["size"] == f.size:
                if (
                    rec is not None
                    and rec.get("size") == f.size
                    and rec.get("mtime_ns") == f.mtime_ns
                    and rec.get("e_tag") == have["e_tag"]
                ):
                    entries[f.key] = Entry(f.key, f.size, rec["sha256"])
                    continue
                remote = remote_sha(tgt, f.key)
                if remote is not None:
                    local = file_sha256(f.path)
                    if remote == local:
                        entries[f.key] = Entry(f.key, f.size, local)
                        continue
            todo.append(f)
        result.kept = len(entries)
        if existing is not None and not todo and not extras:
            if existing.by_key() == entries:
                result.already_complete = True
                journal.close()
                journal.path.unlink(missing_ok=True)
                return result
            if not overwrite:
                raise InvalidInputError(
                    f"{tgt.url} is a complete archive that differs from the study; "
                    "pass --overwrite to replace it"
                )
        if existing is not None:
            # from here on the prefix is no archive until the new manifest is written
            try:
                obstore.delete(tgt.store, MANIFEST_NAME)
            except errors as exc:
                raise ArchiveError(f"cannot remove the old manifest: {one_line(exc)}") from None

        total = result.bytes
        done_bytes = [sum(e.size for e in entries.values())]
        lock = threading.Lock()
        if progress is not None:
            progress(done_bytes[0], total)

        delay = float(os.environ.get("BRIDGE_XR_TEST_ARCHIVE_DELAY", "0"))

        def send(f: SourceFile) -> None:
            if delay:  # test hook: slow uploads, so a test can cut the connection mid-archive
                time.sleep(delay)
            sha, e_tag, size = _put(tgt, f)
            _after_write()
            journal.add(
                {"key": f.key, "size": size, "mtime_ns": f.mtime_ns, "sha256": sha, "e_tag": e_tag}
            )
            with lock:
                entries[f.key] = Entry(f.key, size, sha)
                result.sent += 1
                result.sent_bytes += size
                result.sent_keys.append(f.key)
                done_bytes[0] += size
                if progress is not None:
                    progress(done_bytes[0], total)

        pool = ThreadPoolExecutor(max_workers=max(1, workers))
        try:
            futures = [pool.submit(send, f) for f in todo]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [fut for fut in finished if fut.exception() is not None]
            if failed:
                for fut in futures:
                    fut.cancel()
                wait(futures)
                first = failed[0].exception()
                assert first is not None
                if isinstance(first, BridgeXRError):
                    raise first
                if isinstance(first, errors):
                    raise ArchiveError(
                        f"archive to {tgt.url} stopped: {one_line(first)}; {len(entries)} of "
                        f"{len(files)} objects are there; run the same command with --resume"
                    ) from None
                raise first
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

        try:
            result.aborted_uploads = abort_multipart(tgt)
            for key in extras:  # only with overwrite (refused above otherwise)
                obstore.delete(tgt.store, key)
                result.deleted += 1
            manifest = Manifest(objects=[entries[f.key] for f in files], source=Path(study).name)
            obstore.put(tgt.store, MANIFEST_NAME, manifest.to_bytes(), mode="create")
            _after_write()
        except errors as exc:
            from obstore.exceptions import AlreadyExistsError

            if isinstance(exc, AlreadyExistsError):
                raise InvalidInputError(
                    f"another archive of {tgt.url} finished first (its manifest is there); "
                    "check it with `bridge verify`"
                ) from None
            raise ArchiveError(
                f"archive to {tgt.url} stopped before its manifest: {one_line(exc)}; "
                "run the same command with --resume"
            ) from None
    finally:
        journal.close()
    journal.path.unlink(missing_ok=True)
    return result
