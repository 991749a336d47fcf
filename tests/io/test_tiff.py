"""TIFF / OME-TIFF / ImageJ stacks: calibration from metadata or options, channels, laziness."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile

from bridge_xr.errors import InvalidInputError
from bridge_xr.io.convert import convert_microscopy
from bridge_xr.io.read import read_image
from bridge_xr.io.tiff import read_tiff
from bridge_xr.io.validate import validate_store

rng = np.random.default_rng(5)
STACK = rng.integers(0, 4000, size=(6, 40, 50), dtype=np.uint16)


def test_ome_tiff_calibration_is_read(tmp_path) -> None:
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(
        path,
        STACK,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 1.1838,
            "PhysicalSizeY": 1.1838,
            "PhysicalSizeZ": 0.005,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZUnit": "mm",
        },
    )
    img, cal = read_tiff(path)
    assert cal.source == "ome"
    assert img.attrs["spacing"] == pytest.approx({"z": 5.0, "y": 1.1838, "x": 1.1838})
    np.testing.assert_array_equal(img.values, STACK)


def test_imagej_calibration_is_read(tmp_path) -> None:
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        STACK,
        imagej=True,
        resolution=(1 / 1.2, 1 / 1.2),
        metadata={"spacing": 3.0, "unit": "micron", "axes": "ZYX"},
    )
    img, cal = read_tiff(path)
    assert cal.source == "imagej"
    assert img.attrs["spacing"] == pytest.approx({"z": 3.0, "y": 1.2, "x": 1.2})


def test_uncalibrated_stack_is_refused_unless_options_given(tmp_path) -> None:
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, STACK)
    with pytest.raises(InvalidInputError, match="`pixel_size`"):
        read_tiff(path)
    with pytest.raises(InvalidInputError, match="`z_step`"):
        read_tiff(path, pixel_size_um=1.2)
    store = tmp_path / "s.ome.zarr"
    meta = convert_microscopy(
        path, str(store), "twophoton/d060/angiogram", pixel_size="0.0011838mm", z_step="5 micron"
    )
    assert meta.acquisition.pixel_size_um == pytest.approx((5.0, 1.1838, 1.1838))
    img = read_image(str(store), "twophoton/d060/angiogram")
    np.testing.assert_array_equal(img.values, STACK)
    assert img.attrs["unit"] == "micrometer"
    assert validate_store(str(store)) == []


def test_multichannel_stack_with_names_and_lazy_reading(tmp_path) -> None:
    data = rng.integers(0, 4000, size=(6, 2, 64, 64), dtype=np.uint16)  # Z C Y X (ImageJ order)
    path = tmp_path / "mc.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 1.2, 1 / 1.2),
        metadata={"spacing": 3.0, "unit": "um", "axes": "ZCYX"},
    )
    img, _ = read_tiff(path, channel_names=("vessel", "tumour"), chunks={"z": 2, "y": 32, "x": 32})
    assert img.dims == ("c", "z", "y", "x")
    assert img.data.npartitions == 2 * 3 * 2 * 2  # one task per region: nothing read yet
    pickle.dumps(img.data)  # the graph ships to distributed workers
    np.testing.assert_array_equal(img.sel(c="tumour").values, data[:, 1])
    with pytest.raises(InvalidInputError, match="channel names"):
        read_tiff(path, channel_names=("only-one",))


def test_truncated_tiff_is_refused(tmp_path) -> None:
    path = tmp_path / "t.tif"
    tifffile.imwrite(
        path, STACK, imagej=True, resolution=(1, 1), metadata={"unit": "um", "spacing": 1}
    )
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InvalidInputError, match="(truncated|cannot read)"):
        read_tiff(path)
