"""The fast fill-value check: the same answers as zarr's own, and the same bytes on disk."""

from __future__ import annotations

import itertools
import warnings

import dask.array as da
import numpy as np
import pytest
import zarr
from zarr.buffer.cpu import NDBuffer

from bridge_xr.io._fillcheck import FastWrites, FillCheckNDBuffer, prototype, write_region
from bridge_xr.io.downsample import store_shard_aligned

DTYPES = ["u1", "u2", "i2", "i4", "bool", "f2", "f4", "f8"]
VALUES = [[0, 0, 0], [0, 1, 0], [1, 1, 1], [0.0, -0.0, 0.0], [np.nan, 0.0, 0.0]]


def _answer(cls: type[NDBuffer], data: np.ndarray, fill: object) -> object:
    try:
        return cls(data).all_equal(fill)
    except Exception as e:  # the same error is the same answer
        return type(e).__name__


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_equal_answers_as_zarr_does(dtype: str) -> None:
    fills = [0, 1, np.float64(0.0), np.float64(-0.0), np.nan, None, True, False]
    fills += [np.zeros((), dtype)[()], np.ones((), dtype)[()]]
    checked = 0
    for values, fill in itertools.product(VALUES, fills):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN cast to an integer
            data = np.array(values).astype(dtype)
        for view in (data, np.tile(data, (3, 2))[::2, ::2]):  # contiguous and strided
            assert _answer(FillCheckNDBuffer, view, fill) == _answer(NDBuffer, view, fill)
            checked += 1
    assert checked == 2 * len(VALUES) * len(fills)


def test_negative_zero_is_not_the_fill() -> None:
    assert not FillCheckNDBuffer(np.array([0.0, -0.0], np.float32)).all_equal(np.float32(0.0))
    assert FillCheckNDBuffer(np.zeros(3, np.float32)).all_equal(np.float32(0.0))
    assert not FillCheckNDBuffer(np.zeros(3, np.float32)).all_equal(np.float64(-0.0))


def _sharded(store: object, dtype: str) -> zarr.Array:
    return zarr.create_array(
        store,  # type: ignore[arg-type]
        shape=(8, 32, 32),
        chunks=(4, 8, 8),
        shards=(8, 16, 16),
        dtype=dtype,
        fill_value=0,
    )


def _data(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    vals = (rng.random((8, 32, 32)) > 0.7) * rng.integers(1, 200, (8, 32, 32))
    vals[:, :16, :16] = 0  # one whole shard empty: no shard file
    vals[:4, 16:24, :8] = 0  # one inner chunk empty: absent from its shard's index
    out = vals.astype(dtype)
    if dtype.startswith("f"):
        out[0, 16, 0] = -0.0  # a chunk whose only "zero" is negative is still written
        out[0, 16:24, 16:24] = 0.0
        out[0, 16, 16] = -0.0
    return out


@pytest.mark.parametrize("dtype", ["u1", "u2", "i2", "f4"])
def test_shard_aligned_writes_the_same_bytes_as_plain_zarr(dtype: str) -> None:
    data = _data(dtype)
    plain_store, fast_store = zarr.storage.MemoryStore(), zarr.storage.MemoryStore()
    plain, fast = _sharded(plain_store, dtype), _sharded(fast_store, dtype)
    plain[...] = data
    store_shard_aligned(da.from_array(data, chunks=(8, 16, 16)), fast)
    np.testing.assert_array_equal(fast[...], data)
    assert sorted(fast_store._store_dict) == sorted(plain_store._store_dict)
    assert "c/0/0/0" not in fast_store._store_dict  # the empty shard
    for key, value in plain_store._store_dict.items():
        assert fast_store._store_dict[key].to_bytes() == value.to_bytes(), key


def test_write_region_and_dask_target_round_trip() -> None:
    data = _data("u2")
    a = _sharded(zarr.storage.MemoryStore(), "u2")
    write_region(a, (slice(0, 8), slice(0, 16), slice(16, 32)), data[:, :16, 16:])
    da.store(da.from_array(data[:, 16:], chunks=(8, 16, 16)), FastWrites(a),
             regions=(slice(None), slice(16, 32), slice(None)), lock=False)  # fmt: skip
    expected = data.copy()
    expected[:, :16, :16] = 0
    np.testing.assert_array_equal(a[...], expected)


def test_another_configured_buffer_is_respected() -> None:
    assert prototype().nd_buffer is FillCheckNDBuffer
    other = {"ndbuffer": "zarr.buffer.cpu.NDBuffer", "buffer": "x.Buffer"}
    # zarr's own prototype, which looks the configured (here unknown) class up
    with zarr.config.set(other), pytest.raises(Exception, match="x.Buffer"):
        prototype()


def test_unaligned_writes_keep_zarrs_prototype_and_bytes() -> None:
    # an array that ends inside its last inner chunks: the edge shards are merged by zarr
    data = _data("u2")[:7, :30, :27]
    plain_store, fast_store = zarr.storage.MemoryStore(), zarr.storage.MemoryStore()
    kw = {"shape": data.shape, "chunks": (4, 8, 8), "shards": (8, 16, 16), "dtype": "u2"}
    plain = zarr.create_array(plain_store, fill_value=0, **kw)  # type: ignore[arg-type]
    fast = zarr.create_array(fast_store, fill_value=0, **kw)  # type: ignore[arg-type]
    plain[...] = data
    store_shard_aligned(da.from_array(data, chunks=(3, 7, 9)), fast)
    np.testing.assert_array_equal(fast[...], data)
    assert sorted(fast_store._store_dict) == sorted(plain_store._store_dict)
    for key, value in plain_store._store_dict.items():
        assert fast_store._store_dict[key].to_bytes() == value.to_bytes(), key
    inner = (slice(0, 4), slice(0, 16), slice(8, 24))
    assert prototype(fast, inner).nd_buffer is FillCheckNDBuffer
    edge = (slice(0, 7), slice(16, 30), slice(16, 27))
    assert prototype(fast, edge).nd_buffer is NDBuffer
