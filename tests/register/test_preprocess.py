"""Reslicing to a plane and grouping z-slices, checked against analytic expectations."""

from __future__ import annotations

import numpy as np
import pandas as pd
from typer.testing import CliRunner
from zarr.storage import LocalStore

from bridge_xr.io.read import read_image
from bridge_xr.io.subject import add_image
from bridge_xr.io.validate import validate_store
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.resampling.slicing import plane_frame
from bridge_xr.scene.mapping import map_points
from bridge_xr_cli.main import app


def _store(tmp_path, data, spacing):
    path = tmp_path / "s.ome.zarr"
    img = make_image(data, dims="zyx", spacing=spacing, unit="um")
    add_image(
        str(path),
        img,
        ImageMetadata(path="twop/img", modality="twophoton", provenance=Provenance.now("t")),
    )
    return path


def test_plane_frame_recovers_a_tilted_plane() -> None:
    n = np.array([0.1, -0.2, 1.0])
    n /= np.linalg.norm(n)
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 500, size=(10, 3))
    pts -= np.outer((pts - 100) @ n, n)  # project onto the plane through (100,100,100)
    rot, c, rms = plane_frame(pts)
    np.testing.assert_allclose(rot[:, 2], n, atol=1e-9)
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert rms < 1e-9


def test_reslice_makes_a_tilted_layer_flat(tmp_path) -> None:
    # a bright layer on a tilted plane z = 20 + 0.1 x (µm); after reslicing it sits in one z-plane
    shape, sp = (40, 48, 64), (1.0, 2.0, 2.0)
    zz, yy, xx = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, sp, strict=True)], indexing="ij"
    )
    data = (np.abs(zz - (20 + 0.1 * xx)) < 1.5).astype(np.float32) * 1000
    store = _store(tmp_path, data, sp)
    plane = pd.DataFrame({"x": [0.0, 120.0, 0.0, 120.0], "y": [0.0, 0.0, 90.0, 90.0]})
    plane["z"] = 20 + 0.1 * plane["x"]
    plane.to_csv(tmp_path / "plane.csv", index=False)
    r = CliRunner().invoke(
        app,
        [
            "reslice",
            str(store),
            "--image",
            "twop/img",
            "--plane",
            str(tmp_path / "plane.csv"),
            "--image-out",
            "twop/resliced",
            "--spacing",
            "2um,2um,1um",
        ],
    )
    assert r.exit_code == 0, r.output
    out = read_image(str(store), "twop/resliced").values
    profile = out.reshape(out.shape[0], -1).mean(axis=1)
    peak = int(np.argmax(profile))
    assert profile[peak] > 10 * np.median(profile)  # the layer is concentrated in one plane
    assert (out[peak] > 0).mean() > 0.5  # and covers it
    # points map between the resliced and the original image exactly (rigid edge in the graph)
    p = np.array([[60.0, 40.0, 26.0]])
    back = map_points(
        str(store),
        map_points(str(store), p, "twop/img", "twop/resliced"),
        "twop/resliced",
        "twop/img",
    )
    np.testing.assert_allclose(back, p, atol=1e-9)
    assert validate_store(str(store)) == []


def test_group_slices_averages_to_the_mri_thickness(tmp_path) -> None:
    data = np.arange(20 * 4 * 4, dtype=np.uint16).reshape(20, 4, 4)
    store = _store(tmp_path, data, (5.0, 1.0, 1.0))
    r = CliRunner().invoke(
        app,
        [
            "group-slices",
            str(store),
            "--image",
            "twop/img",
            "--thickness",
            "0.02mm",
            "--image-out",
            "twop/grouped",
        ],
    )
    assert r.exit_code == 0, r.output
    out = read_image(LocalStore(store), "twop/grouped")
    assert out.shape == (5, 4, 4)
    assert out.attrs["spacing"]["z"] == 20.0
    assert out.attrs["origin"]["z"] == 7.5  # centre of the first 4 slices (0, 5, 10, 15 µm)
    expected = np.floor(data.reshape(5, 4, 4, 4).mean(axis=1) + 0.5).astype(np.uint16)
    np.testing.assert_array_equal(out.values, expected)
    r = CliRunner().invoke(
        app,
        [
            "group-slices",
            str(store),
            "--image",
            "twop/img",
            "--thickness",
            "1um",
            "--image-out",
            "twop/g2",
        ],
    )
    assert r.exit_code == 2
    assert "below the z step" in r.stderr
