"""``bridge verify``: an archive against its manifest, object by object (never through zarr).

Shallow: the listing's sizes and the SHA-256 each object carries in its metadata. Deep: every
object read and hashed. zarr is no judge here: a missing chunk reads as the fill value.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from bridge_xr.archive.manifest import Entry, Manifest, read_manifest
from bridge_xr.archive.target import (
    MANIFEST_NAME,
    list_objects,
    one_line,
    open_target,
    read_sha,
    recorded_sha,
    store_errors,
)
from bridge_xr.archive.upload import ArchiveError
from bridge_xr.errors import InvalidInputError

READ_BYTES = 8 * 2**20


@dataclass(frozen=True)
class Problem:
    """One thing wrong: ``kind`` is missing, extra, size, checksum or unreadable."""

    key: str
    kind: str
    expected: str = ""
    found: str = ""


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_archive` (``ok`` when ``problems`` is empty)."""

    target: str
    deep: bool
    objects: int = 0
    bytes: int = 0
    read_bytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing missing, extra, truncated or corrupted."""
        return not self.problems


def verify_archive(
    target: str,
    *,
    deep: bool = False,
    workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Check an archive against its manifest.

    Parameters
    ----------
    target : str
        The archive prefix (``s3://bucket/prefix`` or a local folder).
    deep : bool
        Read every object and compare its SHA-256 (else sizes and the recorded checksums).
    workers : int
        Objects read at once.
    progress : callable, optional
        ``progress(done, total)`` in bytes (deep) or objects.

    Returns
    -------
    VerifyReport

    Raises
    ------
    InvalidInputError
        No manifest there (not an archive, or an unfinished one), or a manifest that is refused.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.archive import archive_study
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "study").mkdir(), (root / "study" / "a.txt").write_text("hello")
    >>> _ = archive_study(root / "study", str(root / "archive"))
    >>> verify_archive(str(root / "archive"), deep=True).ok
    True
    >>> _ = (root / "archive" / "a.txt").write_text("HELLO")
    >>> [(p.key, p.kind) for p in verify_archive(str(root / "archive"), deep=True).problems]
    [('a.txt', 'checksum')]
    """
    tgt = open_target(target)
    errors = store_errors()
    try:
        manifest: Manifest | None = read_manifest(tgt)
        if manifest is None:
            raise InvalidInputError(
                f"no manifest at {tgt.url}: not a bridge_xr archive, or an unfinished one "
                "(finish it with `bridge archive ... --resume`)"
            )
        listing = list_objects(tgt)
    except errors as exc:
        raise ArchiveError(f"cannot read {tgt.url}: {one_line(exc)}") from None
    listing.pop(MANIFEST_NAME, None)
    report = VerifyReport(
        target=tgt.url, deep=deep, objects=len(manifest.objects), bytes=manifest.total_bytes
    )
    problems = report.problems
    expected = manifest.by_key()
    present: list[Entry] = []
    for key, entry in expected.items():
        have = listing.get(key)
        if have is None:
            problems.append(Problem(key, "missing", f"{entry.size} B"))
        elif have["size"] != entry.size:
            problems.append(Problem(key, "size", f"{entry.size} B", f"{have['size']} B"))
        else:
            present.append(entry)
    problems.extend(
        Problem(key, "extra", "", f"{listing[key]['size']} B")
        for key in sorted(set(listing) - set(expected))
    )
    total = sum(e.size for e in present) if deep else len(present)
    done = 0
    if progress is not None:
        progress(0, total)

    def check(entry: Entry) -> tuple[Entry, str, int]:
        if deep:
            return (entry, *read_sha(tgt, entry.key, READ_BYTES))
        return entry, recorded_sha(tgt, entry.key), 0

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(check, e): e for e in present}
        for fut in as_completed(futures):
            entry = futures[fut]
            try:
                _, sha, n = fut.result()
            except errors as exc:
                problems.append(Problem(entry.key, "unreadable", "", one_line(exc)[:80]))
                continue
            report.read_bytes += n
            if deep and n != entry.size:
                problems.append(Problem(entry.key, "size", f"{entry.size} B", f"{n} B read"))
            elif sha != entry.sha256:
                problems.append(
                    Problem(entry.key, "checksum", entry.sha256[:12], (sha or "none")[:12])
                )
            done += n if deep else 1
            if progress is not None:
                progress(done, total)
    problems.sort(key=lambda p: (p.kind, p.key))
    return report
