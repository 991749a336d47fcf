"""Zeiss CZI and Leica LIF, written by their documented byte layouts and checked against the
formats' own Python readers (czifile, liffile): pixels, calibration, channels, scenes, errors."""

from __future__ import annotations

import os

import czifile
import liffile
import numpy as np
import pytest
from typer.testing import CliRunner

from bridge_xr.io.convert import convert_microscopy
from bridge_xr.io.czi import read_czi
from bridge_xr.io.lif import read_lif
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject
from bridge_xr.io.validate import validate_store
from bridge_xr.testing.formats import write_czi, write_lif
from bridge_xr_cli.main import app

runner = CliRunner()


def _stack(shape=(1, 2, 4, 24, 32), dtype=np.uint16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000, size=shape).astype(dtype)


@pytest.mark.parametrize("compression", ["none", "zstd0", "zstd1"])
def test_czi_pixels_match_czifile_and_calibration_comes_from_scaling(tmp_path, compression):
    data = _stack()
    f = write_czi(tmp_path / "a.czi", data, pixel_size_um=(1.1838, 1.1838, 5.0),
                  channel_names=("vessel", "tumour"), compression=compression)  # fmt: skip
    img, info = read_czi(f)
    assert img.dims == ("c", "z", "y", "x")
    assert img.data.numblocks == (2, 4, 1, 1)  # lazy: one task per subblock (plane)
    np.testing.assert_array_equal(img.values, data[0])
    if compression == "none":  # czifile 2019 decodes uncompressed subblocks only
        with czifile.CziFile(str(f)) as czi:
            np.testing.assert_array_equal(img.values, czi.asarray().reshape(data.shape[1:]))
    assert img.attrs["spacing"] == pytest.approx({"z": 5.0, "y": 1.1838, "x": 1.1838})
    assert tuple(str(c) for c in img.c.values) == ("vessel", "tumour")
    assert info.objective == "Plan-Apochromat 10x/0.45 M27"


def test_czi_scenes_need_scene_and_convert_through_the_cli(tmp_path) -> None:
    data = _stack(shape=(2, 1, 3, 16, 20))
    f = write_czi(tmp_path / "slide.czi", data, pixel_size_um=(0.325, 0.325, 2.0),
                  scene_names=("slice A", "slice B"), compression="zstd1")  # fmt: skip
    store = str(tmp_path / "M.ome.zarr")
    base = ["convert", "microscopy", str(f), store, "--image", "exvivo/slab03/DAPI"]
    r = runner.invoke(app, base)
    assert r.exit_code == 2
    assert "--scene" in r.output
    assert "slice B" in r.output
    assert not os.path.exists(store)
    r = runner.invoke(app, [*base, "--scene", "1"])
    assert r.exit_code == 0, r.output
    out = read_image(store, "exvivo/slab03/DAPI")
    np.testing.assert_array_equal(np.asarray(out.values).reshape(data[1].shape), data[1])
    meta = read_subject(store).images["exvivo/slab03/DAPI"]
    assert meta.acquisition.pixel_size_um == pytest.approx((2.0, 0.325, 0.325))
    assert meta.acquisition.extra["scenes"] == ["slice A", "slice B"]
    assert meta.provenance.parameters["scene"] == 1
    assert validate_store(store) == []


def test_czi_without_scaling_tiles_and_truncation_are_one_line(tmp_path) -> None:
    store = str(tmp_path / "M.ome.zarr")
    f = write_czi(tmp_path / "nocal.czi", _stack(), pixel_size_um=None)
    args = ["convert", "microscopy", str(f), store, "--image", "twophoton/d1/angiogram"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert "--pixel-size" in r.output
    r = runner.invoke(app, [*args, "--pixel-size", "1.1838um", "--z-step", "5um"])
    assert r.exit_code == 0, r.output
    assert read_image(store, "twophoton/d1/angiogram").attrs["spacing"]["x"] == pytest.approx(
        1.1838
    )
    tiles = write_czi(tmp_path / "tiles.czi", _stack(), pixel_size_um=(1.0, 1.0, 1.0), tiles=2)
    with pytest.raises(Exception, match="mosaic tiles"):
        read_czi(tiles)
    full = (tmp_path / "nocal.czi").read_bytes()
    (tmp_path / "cut.czi").write_bytes(full[: len(full) // 2])
    r = runner.invoke(app, ["convert", "microscopy", str(tmp_path / "cut.czi"), store,
                            "--image", "twophoton/d1/cut", "--pixel-size", "1um"])  # fmt: skip
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    assert "twophoton/d1/cut" not in read_subject(store).images


def test_lif_images_match_liffile_with_voxel_sizes_from_the_dimensions(tmp_path) -> None:
    a = _stack(shape=(2, 3, 12, 16))
    b = _stack(shape=(1, 5, 9, 7), dtype=np.uint8, seed=2)
    f = write_lif(tmp_path / "p.lif", [("Series001", a, (0.5, 0.6, 2.0)),
                                       ("Series002", b, (1.2, 1.2, 4.0))])  # fmt: skip
    img, info = read_lif(f, scene=1)
    with liffile.LifFile(str(f)) as lif:
        truth = lif.images[1].asarray()
        coords = lif.images[1].coords
    np.testing.assert_array_equal(np.asarray(img.values)[0], truth)
    assert img.attrs["spacing"]["x"] == pytest.approx(float(np.diff(coords["X"])[0]) * 1e6)
    assert img.attrs["spacing"]["z"] == pytest.approx(float(np.diff(coords["Z"])[0]) * 1e6)
    assert info.images == ("Series001", "Series002")
    img0, _ = read_lif(f, scene=0)
    np.testing.assert_array_equal(img0.values, a)
    assert tuple(str(c) for c in img0.c.values) == ("Green", "Red")  # LUT names
    store = str(tmp_path / "M.ome.zarr")
    base = ["convert", "microscopy", str(f), store, "--image", "twophoton/d1/angiogram"]
    r = runner.invoke(app, base)
    assert r.exit_code == 2
    assert "--series" in r.output
    r = runner.invoke(app, [*base, "--series", "0", "--channel-names", "vessel,tumour"])
    assert r.exit_code == 0, r.output
    assert read_subject(store).images["twophoton/d1/angiogram"].channel_names == (
        "vessel",
        "tumour",
    )
    np.testing.assert_array_equal(read_image(store, "twophoton/d1/angiogram").values, a)


def test_lif_without_voxel_size_and_truncated_are_refused(tmp_path) -> None:
    f = write_lif(tmp_path / "n.lif", [("S", _stack(shape=(1, 2, 8, 8)), None)])
    with pytest.raises(Exception, match="`pixel_size`"):
        read_lif(f)
    img, _ = read_lif(f, pixel_size_um=1.5, z_step_um=3.0)
    assert img.attrs["spacing"] == pytest.approx({"z": 3.0, "y": 1.5, "x": 1.5})
    full = f.read_bytes()
    (tmp_path / "cut.lif").write_bytes(full[:-40])
    with pytest.raises(Exception, match="truncated|complete"):
        convert_microscopy(tmp_path / "cut.lif", str(tmp_path / "x.ome.zarr"), "twophoton/d1/a",
                           pixel_size="1um", z_step="1um")  # fmt: skip
    assert not os.path.exists(tmp_path / "x.ome.zarr")
