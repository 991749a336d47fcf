"""Inner chunks decoded straight into a buffer, against zarr's own reads of the same regions."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, TransposeCodec, ZstdCodec

from bridge_xr.errors import InvalidInputError
from bridge_xr.io.chunks import ChunkDecoder, thread_buffer

SHAPE = (7, 21, 18)  # edge chunks on every axis
INNER = (3, 8, 8)


def _array(root: Path, dtype: str, compressors, shards) -> zarr.Array:
    arr = zarr.create_array(
        root, shape=SHAPE, chunks=INNER, dtype=dtype, fill_value=7, compressors=compressors,
        **({"shards": shards} if shards else {}),
    )  # fmt: skip
    rng = np.random.default_rng(0)
    data = (rng.random(SHAPE) * 200).astype(dtype)
    # written everywhere but one corner: chunks (and with shards, one whole shard) never stored
    arr[:, : INNER[1] * 2, :] = data[:, : INNER[1] * 2, :]
    arr[: INNER[0], INNER[1] * 2 :, : INNER[2]] = data[: INNER[0], INNER[1] * 2 :, : INNER[2]]
    return arr


CASES = [
    ("u1", BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"), (6, 16, 16)),
    ("u2", BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), (3, 16, 8)),
    ("f4", ZstdCodec(level=3), (6, 8, 16)),
    ("u2", None, (3, 16, 16)),
    ("u1", BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle"), None),
    ("f4", ZstdCodec(level=1), None),
]


@pytest.mark.parametrize(("dtype", "codec", "shards"), CASES)
def test_every_chunk_decodes_to_what_zarr_reads(tmp_path, dtype, codec, shards) -> None:
    arr = _array(tmp_path / "a.zarr", dtype, [codec] if codec else None, shards)
    dec = ChunkDecoder.of(arr)
    assert dec is not None
    assert dec.inner == INNER
    assert dec.dtype == np.dtype(dtype)
    out = np.empty(INNER, dtype)
    grid = [range(-(-s // i)) for s, i in zip(SHAPE, INNER, strict=True)]
    filled = 0
    for chunk in itertools.product(*grid):
        lo = [c * i for c, i in zip(chunk, INNER, strict=True)]
        hi = [min(a + i, s) for a, i, s in zip(lo, INNER, SHAPE, strict=True)]
        out.fill(123)
        dec.read(chunk, out)
        part = tuple(slice(0, b - a) for a, b in zip(lo, hi, strict=True))
        expected = arr[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        np.testing.assert_array_equal(out[part], expected, err_msg=str(chunk))
        filled += bool((expected == 7).all())
    assert filled > 0  # some chunks were never written and read as the fill value


def test_index_at_the_start_of_the_shard(tmp_path) -> None:
    data = np.arange(np.prod(SHAPE), dtype="u2").reshape(SHAPE)
    start = zarr.create_array(
        tmp_path / "t.zarr", shape=SHAPE, dtype="u2", fill_value=0,
        serializer=zarr.codecs.ShardingCodec(
            chunk_shape=INNER, codecs=[BytesCodec(), ZstdCodec(level=1)], index_location="start"
        ),
        chunks=(6, 16, 16), compressors=None,
    )  # fmt: skip
    start[...] = data
    dec = ChunkDecoder.of(start)
    assert dec is not None
    assert not dec.index_at_end
    out = np.empty(INNER, "u2")
    dec.read((1, 2, 1), out)
    np.testing.assert_array_equal(out[:, :5, :], data[3:6, 16:21, 8:16])


def test_chains_and_stores_it_cannot_decode_are_refused(tmp_path) -> None:
    mem = zarr.create_array(zarr.storage.MemoryStore(), shape=SHAPE, chunks=INNER, dtype="u1")
    gz = zarr.create_array(
        tmp_path / "g.zarr", shape=SHAPE, chunks=INNER, dtype="u1", compressors=[GzipCodec()]
    )
    tr = zarr.create_array(
        tmp_path / "t.zarr", shape=SHAPE, chunks=INNER, dtype="u2",
        filters=[TransposeCodec(order=(2, 1, 0))],
    )  # fmt: skip
    big = zarr.create_array(
        tmp_path / "b.zarr", shape=SHAPE, chunks=INNER, dtype="u2",
        serializer=BytesCodec(endian="big"),
    )  # fmt: skip
    v2 = zarr.create_array(tmp_path / "v2.zarr", shape=SHAPE, chunks=INNER, dtype="u1",
                           zarr_format=2)  # fmt: skip
    for arr in (mem, gz, tr, big, v2):
        assert ChunkDecoder.of(arr) is None


def test_a_damaged_shard_index_is_one_clear_error(tmp_path) -> None:
    arr = _array(tmp_path / "d.zarr", "u1", [ZstdCodec(level=1)], (6, 16, 16))
    dec = ChunkDecoder.of(arr)
    assert dec is not None
    shard = tmp_path / "d.zarr" / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF  # inside the index
    shard.write_bytes(bytes(raw))
    with pytest.raises(InvalidInputError, match="checksum mismatch"):
        dec.read((0, 0, 0), np.empty(INNER, "u1"))
    with pytest.raises(ValueError, match="C-ordered"):
        dec.read((0, 0, 0), np.empty(INNER, "u2"))


def test_thread_buffers_are_reused_per_thread_and_not_shared() -> None:
    a = thread_buffer("t", (4, 4), np.uint8)
    assert thread_buffer("t", (4, 4), np.uint8) is a
    assert thread_buffer("t", (4, 4), np.uint16) is not a
    seen = []
    t = threading.Thread(target=lambda: seen.append(thread_buffer("t", (4, 4), np.uint16)))
    t.start()
    t.join()
    assert seen[0] is not thread_buffer("t", (4, 4), np.uint16)
