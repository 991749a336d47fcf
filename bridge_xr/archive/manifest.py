"""The archive manifest: every object's key, size and SHA-256; the archive's commit point.

Written last, create-only, at ``<prefix>/bridge_xr-manifest.json``. A prefix without it is not
an archive (or an unfinished one); readers that discover a study by listing say so.

Examples
--------
>>> m = Manifest(objects=[Entry("M001.ome.zarr/zarr.json", 3, "ab" * 32)], source="study")
>>> Manifest.from_bytes(m.to_bytes(), "s3://b/p").objects[0].size
3
>>> m.total_bytes
3
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge_xr.archive.target import MANIFEST_NAME, Target, check_key
from bridge_xr.errors import InvalidInputError

FORMAT = "bridge_xr.archive"
VERSION = 1


@dataclass(frozen=True)
class Entry:
    """One archived object."""

    key: str
    size: int
    sha256: str


@dataclass
class Manifest:
    """What an archive holds (``objects`` sorted by key)."""

    objects: list[Entry]
    source: str = ""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def total_bytes(self) -> int:
        """Sum of the objects' sizes."""
        return sum(e.size for e in self.objects)

    def by_key(self) -> dict[str, Entry]:
        """Entries by key."""
        return {e.key: e for e in self.objects}

    def to_bytes(self) -> bytes:
        """The manifest as JSON (UTF-8)."""
        from bridge_xr import __version__

        doc: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "bridge_xr_version": __version__,
            "source": self.source,
            "count": len(self.objects),
            "total_bytes": self.total_bytes,
            "objects": [
                {"key": e.key, "size": e.size, "sha256": e.sha256}
                for e in sorted(self.objects, key=lambda e: e.key)
            ],
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        """Parse and check a manifest (every key must stay inside the prefix)."""
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ValueError("not a bridge_xr archive manifest")
            if int(doc.get("version", 0)) > VERSION:
                raise ValueError(f"manifest version {doc['version']} is newer than this bridge_xr")
            objects = [
                Entry(check_key(str(o["key"])), int(o["size"]), str(o["sha256"]))
                for o in doc["objects"]
            ]
        except InvalidInputError as exc:
            raise InvalidInputError(f"manifest of {where} is refused: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"manifest of {where} cannot be read: {exc}") from None
        return cls(objects=objects, source=str(doc.get("source", "")), created=str(doc["created"]))


def read_manifest(target: Target) -> Manifest | None:
    """The target's manifest, or None when there is none."""
    import obstore
    from obstore.exceptions import NotFoundError

    try:
        data = obstore.get(target.store, MANIFEST_NAME).bytes()
    except (NotFoundError, FileNotFoundError):
        return None
    return Manifest.from_bytes(bytes(data), target.url)
