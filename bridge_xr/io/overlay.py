"""A subject store read from an archive, written locally: the archive is never modified.

Commands that add derived images to a subject store (``bridge learn export`` stores its export
grid) can run on an archived study: reads fall through to the archive, writes and deletions land
in a local folder, and ``bridge verify`` still finds the archive as it was.

Examples
--------
>>> import tempfile, numpy as np, zarr
>>> from zarr.storage import MemoryStore, LocalStore
>>> base = MemoryStore()
>>> _ = zarr.create_array(base, name="a", data=np.arange(4))
>>> st = OverlayStore(base.with_read_only(True), LocalStore(tempfile.mkdtemp()))
>>> _ = zarr.create_array(st, name="b", data=np.ones(2))
>>> sorted(zarr.open_group(st).array_keys()), sorted(zarr.open_group(base).array_keys())
(['a', 'b'], ['a'])
"""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

#: key in the upper store listing base keys deleted through the overlay
WHITEOUT = ".bridge_xr-overlay-deleted.json"


class OverlayStore(Store):
    """``upper`` over a read-only ``base``: reads prefer ``upper``; writes go to ``upper``."""

    supports_writes = True
    supports_deletes = True
    supports_listing = True
    supports_partial_writes = False

    def __init__(self, base: Store, upper: Store, *, read_only: bool = False) -> None:
        super().__init__(read_only=read_only)
        self.base = base
        self.upper = upper
        self._deleted: builtins.set[str] | None = None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, OverlayStore)
            and self.base == other.base
            and self.upper == other.upper
        )

    def __repr__(self) -> str:
        return f"OverlayStore({self.base!r} under {self.upper!r})"

    def with_read_only(self, read_only: bool = False) -> OverlayStore:
        """The same overlay, read-only or not."""
        return OverlayStore(self.base, self.upper, read_only=read_only)

    async def _whiteouts(self) -> builtins.set[str]:
        if self._deleted is None:
            buf = await self.upper.get(WHITEOUT, default_buffer_prototype())
            self._deleted = set(json.loads(buf.to_bytes())) if buf is not None else set()
        return self._deleted

    async def _save_whiteouts(self) -> None:
        data = json.dumps(sorted(await self._whiteouts())).encode()
        await self.upper.set(WHITEOUT, default_buffer_prototype().buffer.from_bytes(data))

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """From ``upper``, else (unless deleted here) from ``base``."""
        found = await self.upper.get(key, prototype, byte_range)
        if found is not None or key == WHITEOUT or key in await self._whiteouts():
            return found
        return await self.base.get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        """Several ranges, each as :meth:`get`."""
        return [await self.get(k, prototype, r) for k, r in key_ranges]

    async def exists(self, key: str) -> bool:
        """In ``upper``, or in ``base`` and not deleted here."""
        if await self.upper.exists(key):
            return True
        return key not in await self._whiteouts() and await self.base.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        """Write to ``upper``."""
        self._check_writable()
        await self.upper.set(key, value)
        deleted = await self._whiteouts()
        if key in deleted:
            deleted.discard(key)
            await self._save_whiteouts()

    async def delete(self, key: str) -> None:
        """Delete from ``upper``; a ``base`` key is hidden (``base`` is never changed)."""
        self._check_writable()
        if await self.upper.exists(key):
            await self.upper.delete(key)
        if await self.base.exists(key):
            (await self._whiteouts()).add(key)
            await self._save_whiteouts()

    async def _keys(self, listing: Any) -> builtins.set[str]:
        return {k async for k in listing}

    async def list(self) -> AsyncIterator[str]:
        """Every key of both layers, less the deleted."""
        async for key in self.list_prefix(""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Keys under ``prefix`` of both layers, less the deleted."""
        deleted = await self._whiteouts()
        keys = await self._keys(self.upper.list_prefix(prefix))
        keys |= {k for k in await self._keys(self.base.list_prefix(prefix)) if k not in deleted}
        for key in sorted(keys - {WHITEOUT}):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """Names directly under ``prefix``."""
        prefix = prefix.rstrip("/")
        start = f"{prefix}/" if prefix else ""
        seen: builtins.set[str] = builtins.set()
        async for key in self.list_prefix(start):
            seen.add(key[len(start) :].split("/", 1)[0])
        for name in sorted(seen):
            yield name
