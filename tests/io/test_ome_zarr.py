"""Writing and reading multiscale images: shard safety, pyramid geometry, versions, validators."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import stats
from zarr.storage import MemoryStore, WrapperStore

from bridge_xr.io._plan import plan_storage
from bridge_xr.io.downsample import store_shard_aligned
from bridge_xr.io.ome_zarr import write_multiscale
from bridge_xr.io.read import normalise_version, read_image, read_multiscale
from bridge_xr.io.validate import validate_group

rng = np.random.default_rng(7)


class SlowStore(WrapperStore):
    """Delays reads so that concurrent read-modify-write of one shard overlaps every time."""

    async def get(self, key, prototype, byte_range=None):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.02)
        return await self._store.get(key, prototype, byte_range)


def _sharded(store, shape=(32, 96, 96)):
    return zarr.create_array(
        store,
        name="a",
        shape=shape,
        dtype="uint16",
        chunks=(8, 32, 32),
        shards=(16, 64, 64),
        fill_value=0,
    )


def test_naive_dask_store_loses_data_and_shard_aligned_store_does_not() -> None:
    data = rng.integers(1, 60000, size=(32, 96, 96), dtype=np.uint16)
    misaligned = da.from_array(data, chunks=(5, 21, 30))  # disagrees with the shard grid
    pool = ThreadPoolExecutor(8)
    with dask.config.set(scheduler="threads", pool=pool):
        naive = _sharded(SlowStore(MemoryStore()))
        da.store(misaligned, naive, lock=False)
        ours = _sharded(SlowStore(MemoryStore()))
        store_shard_aligned(misaligned, ours)
    lost = np.count_nonzero(naive[...] != data)
    assert lost > 0, "the naive route should have dropped writes under concurrency"
    np.testing.assert_array_equal(ours[...], data)


@pytest.mark.parametrize("chunks", [(3, 17, 29), (16, 64, 64), (32, 96, 96), (1, 96, 7)])
def test_write_multiscale_round_trips_any_dask_chunking(chunks) -> None:
    data = rng.integers(0, 60000, size=(33, 97, 95), dtype=np.uint16)
    store = MemoryStore()
    write_multiscale(
        store,
        "img",
        da.from_array(data, chunks=chunks),
        dims="zyx",
        spacing={"z": 3.0, "y": 1.2, "x": 1.2},
        unit="um",
        chunks={"z": 8, "y": 32, "x": 32},
        shards={"z": 16, "y": 64, "x": 64},
    )
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(read_image(store, "img").values, data)


def test_pyramid_levels_sit_at_half_voxel_offsets() -> None:
    """Mean downsampling preserves a linear ramp: each voxel's value is its physical centre."""
    shape = (20, 64, 50)
    sp = {"z": 2.0, "y": 0.5, "x": 0.7}
    org = {"z": 10.0, "y": -3.0, "x": 5.0}
    zz, yy, xx = np.meshgrid(
        *[org[d] + np.arange(n) * sp[d] for d, n in zip("zyx", shape, strict=False)], indexing="ij"
    )
    store = MemoryStore()
    for axis, ramp in (("x", xx), ("y", yy), ("z", zz)):
        path = f"ramp_{axis}"
        plan = write_multiscale(
            store,
            path,
            da.from_array(ramp),
            dims="zyx",
            spacing=sp,
            origin=org,
            unit="um",
            levels=4,
        )
        assert len(plan.levels) == 4
        for k in range(4):
            img = read_image(store, path, level=k)
            # values along `axis` must equal the physical coordinate of the voxel centres
            profile = np.moveaxis(img.values, "zyx".index(axis), 0)[:, 0, 0]
            np.testing.assert_allclose(profile, img[axis].values, atol=1e-9)


def test_anisotropic_pyramid_downsamples_the_finest_axes_first() -> None:
    plan = plan_storage((50, 512, 512), "zyx", "uint16", {"z": 5.0, "y": 1.2, "x": 1.2})
    factors = [lv.factors for lv in plan.levels]
    assert factors[1] == {"z": 1, "y": 2, "x": 2}
    assert factors[2] == {"z": 1, "y": 4, "x": 4}
    assert factors[3]["z"] == 2  # z joins once in-plane spacing has caught up
    for lv in plan.levels:
        assert all(s % c == 0 for s, c in zip(lv.shards, lv.chunks, strict=False)), (
            "shards tile whole chunks"
        )


def test_labels_are_downsampled_by_mode() -> None:
    labels = rng.integers(0, 4, size=(8, 16, 16)).astype(np.uint32)
    store = MemoryStore()
    write_multiscale(
        store,
        "lab",
        da.from_array(labels),
        dims="zyx",
        spacing={"z": 1, "y": 1, "x": 1},
        unit="um",
        method="mode",
        levels=2,
    )
    level1 = read_image(store, "lab", level=1).values
    blocks = labels.reshape(4, 2, 8, 2, 8, 2).transpose(0, 2, 4, 1, 3, 5).reshape(4, 8, 8, 8)
    expected = stats.mode(blocks, axis=-1, keepdims=False).mode  # smallest among ties, like ours
    np.testing.assert_array_equal(level1, expected)


@pytest.mark.parametrize(
    ("kind", "compressor", "codec"),
    [("labels", "auto", "ZstdCodec"), ("image", "auto", "BloscCodec"),
     ("labels", "blosc-zstd", "BloscCodec"), ("image", "zstd", "ZstdCodec")],
)  # fmt: skip
def test_labels_default_to_plain_zstd_and_a_named_compressor_is_kept(
    kind, compressor, codec
) -> None:
    store = MemoryStore()
    data = (rng.random((8, 16, 16)) > 0.8).astype(np.uint8)
    write_multiscale(store, "m", da.from_array(data), dims="zyx", spacing={"z": 1, "y": 1, "x": 1},
                     unit="um", kind=kind, method="mode", levels=2, compressor=compressor)  # fmt: skip
    for level in ("s0", "s1"):
        arr = zarr.open_array(store, path=f"m/{level}", mode="r")
        assert [type(c).__name__ for c in arr.compressors] == [codec]
    np.testing.assert_array_equal(read_image(store, "m").values, data)


def test_written_images_pass_both_validators_and_read_as_datatree() -> None:
    store = MemoryStore()
    data = rng.random((2, 10, 40, 40)).astype(np.float32)
    write_multiscale(
        store,
        "a/b/img",
        da.from_array(data),
        dims="czyx",
        spacing={"z": 2.0, "y": 1.0, "x": 1.0},
        unit="um",
        levels=2,
    )
    group = zarr.open_group(store, path="a/b/img", mode="r")
    assert validate_group(group) == []
    attrs = group.attrs.asdict()
    assert attrs["ome"]["version"] == "0.6"
    assert attrs["ome"]["multiscales"][0]["coordinateSystems"][-1]["name"] == "intrinsic"
    tree = read_multiscale(store, "a/b/img")
    assert set(tree.children) == {"s0", "s1"}
    assert tree["s1"].dataset["image"].shape == (2, 10, 20, 20)


def test_validators_catch_a_broken_image() -> None:
    store = MemoryStore()
    write_multiscale(
        store,
        "img",
        da.zeros((4, 8, 8), dtype="u1"),
        dims="zyx",
        spacing={"z": 1, "y": 1, "x": 1},
        unit="um",
        levels=1,
    )
    group = zarr.open_group(store, path="img", mode="a")
    attrs = group.attrs.asdict()
    attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"] = [
        {"type": "affine", "affine": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]}
    ]
    group.attrs.put(attrs)
    problems = validate_group(zarr.open_group(store, path="img", mode="r"))
    assert any("ngff-zarr" in p for p in problems)
    assert any("ome-zarr-models" in p for p in problems)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("0.4", "0.4"),
        ("0.5", "0.5"),
        ("0.6", "0.6"),
        ("0.6.dev4", "0.6"),
        ("0.6rc0", "0.6"),
        ("0.6-dev2", "0.6"),
        ("0.5-dev-spatialdata", "0.5"),
        ("0.4-dev-spatialdata", "0.4"),
    ],
)
def test_version_tags_normalise(tag: str, expected: str) -> None:
    assert normalise_version(tag) == expected


def test_unknown_version_is_refused() -> None:
    from bridge_xr.errors import FormatVersionError

    with pytest.raises(FormatVersionError, match="0.3"):
        normalise_version("0.3")


# --------------------------------------------------------------- stores written by other tools


def _ramp(shape=(8, 32, 24)):
    return np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)


@pytest.mark.parametrize("fmt", ["0.4", "0.5"])
def test_reads_ome_zarr_py_stores(tmp_path, fmt) -> None:
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    data = _ramp()
    zf = 2 if fmt == "0.4" else 3
    root = zarr.open_group(str(tmp_path / "x.zarr"), mode="w", zarr_format=zf)
    write_image(
        data,
        root,
        axes="zyx",
        scale={"z": 4.0, "y": 1.5, "x": 1.5},
        axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
        scale_factors=[2],
        fmt=FormatV04() if fmt == "0.4" else FormatV05(),
    )
    from zarr.storage import LocalStore

    img = read_image(LocalStore(tmp_path / "x.zarr"), "")
    assert img.attrs["ome_version"] == fmt
    np.testing.assert_array_equal(img.values, data)
    np.testing.assert_allclose(img.x.values, np.arange(24) * 1.5)
    lvl1 = read_image(LocalStore(tmp_path / "x.zarr"), "", level=1)
    np.testing.assert_allclose(lvl1.attrs["spacing"]["x"], 3.0)
    np.testing.assert_allclose(lvl1.attrs["origin"]["x"], 0.75)  # ome-zarr-py's half-voxel offset


@pytest.mark.parametrize("tag", ["0.6", "0.6.dev4", "0.6rc0"])
def test_reads_ngff_zarr_06_stores_and_dev_tags(tmp_path, tag) -> None:
    import ngff_zarr

    data = _ramp()
    image = ngff_zarr.to_ngff_image(
        data,
        dims=["z", "y", "x"],
        scale={"z": 4.0, "y": 1.5, "x": 1.5},
        translation={"z": 10.0, "y": 0.0, "x": -3.0},
        axes_units=dict.fromkeys("zyx", "micrometer"),
    )
    ms = ngff_zarr.to_multiscales(image, scale_factors=[2])
    path = tmp_path / "n.zarr"
    ngff_zarr.to_ngff_zarr(str(path), ms, version="0.6")
    meta_file = path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["ome"]["version"] = tag
    meta_file.write_text(json.dumps(meta))
    from zarr.storage import LocalStore

    store = LocalStore(path)
    img = read_image(store, "")
    assert img.attrs["ome_version"] == "0.6"
    np.testing.assert_array_equal(img.values, data)
    np.testing.assert_allclose(img.z.values, 10.0 + 4.0 * np.arange(8))
    np.testing.assert_allclose(img.x.values, -3.0 + 1.5 * np.arange(24))


def test_reads_legacy_string_input_output(tmp_path) -> None:
    store = MemoryStore()
    write_multiscale(
        store,
        "img",
        da.from_array(_ramp()),
        dims="zyx",
        spacing={"z": 1, "y": 2, "x": 3},
        unit="um",
        levels=1,
    )
    group = zarr.open_group(store, path="img", mode="a")
    attrs = group.attrs.asdict()
    attrs["ome"]["version"] = "0.6-dev2"
    for ds in attrs["ome"]["multiscales"][0]["datasets"]:
        ds["coordinateTransformations"][0]["input"] = ds["path"]
        ds["coordinateTransformations"][0]["output"] = "intrinsic"
    group.attrs.put(attrs)
    img = read_image(store, "img")
    np.testing.assert_allclose(img.x.values, 3.0 * np.arange(24))


def test_chunked_reads_are_lazy_and_bounded() -> None:
    store = MemoryStore()
    write_multiscale(
        store,
        "img",
        da.zeros((64, 256, 256), dtype="u2", chunks=(16, 64, 64)),
        dims="zyx",
        spacing={"z": 1, "y": 1, "x": 1},
        unit="um",
        levels=1,
        chunks={"z": 16, "y": 64, "x": 64},
        shards={"z": 32, "y": 128, "x": 128},
    )
    img = read_image(store, "img")
    assert isinstance(img.data, da.Array)
    assert img.data.chunksize == (32, 128, 128)
    t0 = time.perf_counter()
    assert int(img[0:2, 0:5, 0:5].sum().compute()) == 0
    assert time.perf_counter() - t0 >= 0  # reading a corner touches one shard only


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
def test_fused_pyramid_equals_level_by_level_and_an_independent_reduction(
    monkeypatch, dtype
) -> None:
    from skimage.measure import block_reduce

    import bridge_xr.io._plan as plan_mod

    data = rng.integers(
        -3000 if dtype != "uint16" else 0, 60000 if dtype == "uint16" else 3000, size=(12, 130, 97)
    ).astype(dtype)
    opts = {
        "dims": "zyx",
        "spacing": {"z": 5.0, "y": 1.2, "x": 1.2},
        "unit": "um",
        "levels": 4,
        "chunks": {"z": 4, "y": 16, "x": 16},
        "shards": {"z": 8, "y": 64, "x": 64},
    }
    monkeypatch.setattr(plan_mod, "FUSE_MIN_BYTES", 0)
    fused_store = MemoryStore()
    plan = write_multiscale(fused_store, "img", da.from_array(data, chunks=(5, 50, 50)), **opts)
    assert [lv.fused for lv in plan.levels] == [False, True, True, True]
    monkeypatch.setattr(plan_mod, "FUSE_MIN_BYTES", 2**62)
    plain_store = MemoryStore()
    plan2 = write_multiscale(plain_store, "img", da.from_array(data, chunks=(5, 50, 50)), **opts)
    assert not any(lv.fused for lv in plan2.levels)
    expected = data.astype(np.float64)
    for k in range(4):
        a = read_image(fused_store, "img", level=k).values
        b = read_image(plain_store, "img", level=k).values
        np.testing.assert_array_equal(a, b)
        if k:
            step = tuple(plan.levels[k].factors[d] // plan.levels[k - 1].factors[d] for d in "zyx")
            trimmed = expected[
                tuple(slice(0, (n // s) * s) for n, s in zip(expected.shape, step, strict=True))
            ]
            expected = block_reduce(trimmed, step, np.mean)
            want = np.floor(expected + 0.5) if dtype != "float32" else expected
            np.testing.assert_allclose(
                a, want.astype(dtype), atol=1e-3 if dtype == "float32" else 0
            )
            expected = a.astype(np.float64)
