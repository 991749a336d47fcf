"""Subject stores on every kind of store: memory, local, unlistable, and S3 (moto on 127.0.0.1)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore, MemoryStore, WrapperStore

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import key_exists, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import add_image, read_subject, scene_transforms
from bridge_xr.io.validate import validate_store
from bridge_xr.model.coords import RAS_ORIENTATION, spatial_system
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.model.transforms import Affine
from bridge_xr.scene.info import describe

rng = np.random.default_rng(3)


class UnlistableStore(WrapperStore):
    """A store that cannot list keys (like some HTTP or key-value stores)."""

    @property
    def supports_listing(self) -> bool:
        return False

    def list(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError("listing not supported")

    def list_dir(self, prefix):  # type: ignore[no-untyped-def]
        raise NotImplementedError("listing not supported")

    def list_prefix(self, prefix):  # type: ignore[no-untyped-def]
        raise NotImplementedError("listing not supported")


def _meta(path: str, modality: str = "mri") -> ImageMetadata:
    return ImageMetadata(path=path, modality=modality, provenance=Provenance.now("test"))


def _mri():
    data = rng.normal(1000, 50, size=(12, 20, 16)).astype(np.float32)
    img = make_image(data, dims="zyx", spacing=(0.1, 0.05, 0.05), unit="mm")
    m = np.eye(4)
    m[:3, 3] = (1.0, -2.0, 0.5)
    return (
        data,
        img,
        [(spatial_system("scanner_ras", "mm", RAS_ORIENTATION), Affine.from_matrix(m))],
    )


def _twop():
    data = rng.integers(0, 4000, size=(2, 10, 64, 48), dtype=np.uint16)
    return data, make_image(
        data, dims="czyx", spacing=(3.0, 1.2, 1.2), unit="um", channel_names=("vessel", "tumour")
    )


def _round_trip(store) -> None:
    mri, mri_img, systems = _mri()
    twop, twop_img = _twop()
    add_image(store, mri_img, _meta("invivo_mri/d060/T2w"), extra_systems=systems, shards=False)
    add_image(store, twop_img, _meta("twophoton/d060/angiogram", "twophoton"))
    subject = read_subject(store)
    assert subject.reference_image == "invivo_mri/d060/T2w"
    assert set(subject.images) == {"invivo_mri/d060/T2w", "twophoton/d060/angiogram"}
    back = read_image(store, "invivo_mri/d060/T2w")
    np.testing.assert_array_equal(back.values, mri)
    assert back.attrs["unit"] == "millimeter"
    np.testing.assert_allclose(
        back.attrs["transforms"]["scanner_ras"].to_affine(3), systems[0][1].matrix
    )
    back2 = read_image(store, "twophoton/d060/angiogram")
    np.testing.assert_array_equal(back2.values, twop)
    assert list(back2.c.values) == ["vessel", "tumour"]
    edges = scene_transforms(store)
    assert edges[0].type == "scale"
    assert edges[0].scale == (1000.0, 1000.0, 1000.0)


def test_memory_store_round_trip() -> None:
    store = MemoryStore()
    _round_trip(store)
    assert validate_store(store) == []


def test_local_store_round_trip_and_validators(tmp_path) -> None:
    _round_trip(str(tmp_path / "M001.ome.zarr"))
    assert validate_store(str(tmp_path / "M001.ome.zarr")) == []
    info = describe(str(tmp_path / "M001.ome.zarr"))
    assert info["images"]["twophoton/d060/angiogram"]["extent"]["x"] == pytest.approx(
        [-0.6, 56.999999999999]
    )


def test_unlistable_store_round_trip() -> None:
    inner = MemoryStore()
    store = UnlistableStore(inner)
    _round_trip(store)
    # reading back through a fresh unlistable view needs no listing either
    img = read_image(UnlistableStore(inner), "twophoton/d060/angiogram")
    assert img.shape == (2, 10, 64, 48)
    assert float(img.sel(c="tumour").mean()) > 0


@pytest.mark.slow
def test_s3_round_trip_on_a_real_s3_server(s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/study/M001.ome.zarr"
    store = resolve_store(url)
    _round_trip(store)
    fresh = resolve_store(url, read_only=True)
    assert validate_store(fresh) == []
    import os

    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=os.environ["BRIDGE_XR_S3_ENDPOINT"], region_name="us-east-1"
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    shard_keys = [k for k in keys if "/twophoton/d060/angiogram/s0/c/" in k]
    # (2, 10, 64, 48) with shards (1, 10, 64, 48): one object per channel, not one per chunk
    assert len(shard_keys) == 2


def test_clashing_image_path_is_refused_and_nothing_changes() -> None:
    store = MemoryStore()
    _, img, systems = _mri()
    add_image(store, img, _meta("invivo_mri/d060/T2w"), extra_systems=systems)
    before = dict(zarr.open_group(store, mode="r").attrs.asdict())
    with pytest.raises(InvalidInputError, match="already exists"):
        add_image(store, img, _meta("invivo_mri/d060/T2w"), extra_systems=systems)
    assert zarr.open_group(store, mode="r").attrs.asdict() == before


class Boom(RuntimeError):
    pass


def _exploding(shape, dtype):
    def block(x):
        if x.sum() >= 0:  # always: the second block fails mid-write
            raise Boom("disk full")
        return x

    arr = da.zeros(shape, dtype=dtype, chunks=(shape[0] // 2, *shape[1:]))
    return arr.map_blocks(
        lambda b, block_info=None: block(b) if block_info[0]["chunk-location"][0] == 1 else b,
        dtype=dtype,
    )


def test_interrupted_write_to_a_new_store_leaves_nothing(tmp_path) -> None:
    path = tmp_path / "new.ome.zarr"
    img = make_image(_exploding((8, 16, 16), "u2"), dims="zyx", spacing=(1, 1, 1), unit="um")
    with pytest.raises(Boom):
        add_image(
            str(path),
            img,
            _meta("twophoton/d1/x", "twophoton"),
            shards=False,
            chunks={"z": 4, "y": 16, "x": 16},
        )
    assert not path.exists()


def test_interrupted_write_to_an_existing_store_leaves_it_as_it_was() -> None:
    store = MemoryStore()
    _, mri_img, systems = _mri()
    add_image(store, mri_img, _meta("invivo_mri/d060/T2w"), extra_systems=systems)
    before = dict(zarr.open_group(store, mode="r").attrs.asdict())
    img = make_image(_exploding((8, 16, 16), "u2"), dims="zyx", spacing=(1, 1, 1), unit="um")
    with pytest.raises(Boom):
        add_image(
            store,
            img,
            _meta("twophoton/d1/x", "twophoton"),
            shards=False,
            chunks={"z": 4, "y": 16, "x": 16},
        )
    assert zarr.open_group(store, mode="r").attrs.asdict() == before
    assert not key_exists(store, "twophoton/d1/x/zarr.json")
    assert not key_exists(store, "twophoton/d1/x/s0/zarr.json")


@pytest.mark.parametrize(
    "bad", ["", "a/../b", "a//b", "x/s0", "coordinateTransformations/f", "a b"]
)
def test_bad_image_paths_are_refused(bad: str) -> None:
    _, img, _ = _mri()
    with pytest.raises(InvalidInputError, match="image path"):
        add_image(MemoryStore(), img, _meta(bad))


def test_local_path_resolves_to_local_store(tmp_path) -> None:
    assert isinstance(resolve_store(tmp_path / "a.zarr"), LocalStore)
    with pytest.raises(InvalidInputError, match="no such store"):
        resolve_store(tmp_path / "missing.zarr", read_only=True)


def test_a_write_killed_before_publishing_leaves_no_store_that_looks_complete(
    tmp_path, monkeypatch
):
    """Simulate a hard kill (no cleanup runs) right before the root metadata is published."""
    import bridge_xr.io.subject as scene

    def killed(*args, **kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr(scene, "publish_subject", killed)
    monkeypatch.setattr(scene, "delete_prefix", lambda *a, **k: None)  # a kill runs no cleanup
    path = str(tmp_path / "half.ome.zarr")
    _, img, systems = _mri()
    with pytest.raises(SystemExit):
        add_image(path, img, _meta("invivo_mri/d060/T2w"), extra_systems=systems)
    assert read_subject(path).images == {}
    assert scene_transforms(path) == []
    root = zarr.open_group(path, mode="r").attrs.asdict()
    assert "ome" not in root  # no scene: readers and validators see an incomplete store
    assert validate_store(path) != []


def test_4d_nifti_round_trip(tmp_path) -> None:
    import nibabel as nib

    from bridge_xr.io.convert import convert_mri
    from bridge_xr.io.export import export_nifti

    data = rng.integers(0, 1000, size=(6, 5, 4, 3)).astype(np.int16)
    aff = np.diag([0.1, 0.1, 0.2, 1.0])
    src = tmp_path / "dyn.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), str(src))
    convert_mri(src, str(tmp_path / "s.ome.zarr"), "invivo_mri/d1/dce")
    img = read_image(str(tmp_path / "s.ome.zarr"), "invivo_mri/d1/dce")
    assert img.dims == ("t", "z", "y", "x")
    out = export_nifti(str(tmp_path / "s.ome.zarr"), "invivo_mri/d1/dce", tmp_path / "back.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), data)
