"""Scene transformations authored by other tools (OME-Zarr 0.6, RFC-5), followed by
`bridge transform-points`; expected points from the specification's formulas, by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import zarr
from typer.testing import CliRunner

from bridge_xr.errors import InvalidInputError
from bridge_xr.scene.graph import TransformGraph
from bridge_xr_cli.main import app

runner = CliRunner()


def _axes(names, unit="micrometer"):
    return [{"name": n, "type": "space" if n != "c" else "displacement", "unit": unit}
            for n in names]  # fmt: skip


def _image(root: zarr.Group, path: str, names=("z", "y", "x"), system="physical", extra=None):
    ms = {
        "coordinateSystems": [{"name": system, "axes": _axes(names)}, *(extra or [])],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0] * len(names), "input": {"path": "s0"},
             "output": {"name": system}}]}],
    }  # fmt: skip
    g = root.create_group(path, attributes={"ome": {"version": "0.6", "multiscales": [ms]}})
    g.create_array("s0", shape=(2,) * len(names), dtype="uint8", dimension_names=list(names))


def _scene(tmp_path, transforms, systems=None, *, ijk=True) -> str:
    path = str(tmp_path / "foreign.ome.zarr")
    root = zarr.open_group(path, mode="w")
    _image(root, "tileA")
    _image(root, "tileB")
    _image(root, "tileC", names=("x", "y", "z"))
    if ijk:
        _image(root, "tileD", names=("k", "j", "i"))
    root.attrs["ome"] = {
        "version": "0.6",
        "scene": {
            "coordinateSystems": systems or [{"name": "world", "axes": _axes("zyx")}],
            "coordinateTransformations": transforms,
        },
    }
    return path


def _tr(path, t, name=None, out="world"):
    return {**t, **({"name": name} if name else {}), "input": {"path": path, "name": "physical"},
            "output": {"name": out}}  # fmt: skip


STITCH = [
    _tr("tileA", {"type": "translation", "translation": [0.0, 0.0, 1000.0]}, "A_to_world"),
    _tr("tileB", {"type": "translation", "translation": [0.0, 50.0, 1800.0]}, "B_to_world"),
]


def _map(path, pts_xyz, src, dst, *extra):
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    pd.DataFrame(pts_xyz, columns=["x", "y", "z"]).to_csv(d / "p.csv", index=False)
    r = runner.invoke(app, ["transform-points", path, str(d / "p.csv"), "--from", src, "--to", dst,
                            "--output", str(d / "o.csv"), *extra])  # fmt: skip
    return r, (pd.read_csv(d / "o.csv")[["x", "y", "z"]].to_numpy() if r.exit_code == 0 else None)


def test_stitching_scene_maps_tile_to_tile_and_to_world(tmp_path) -> None:
    path = _scene(tmp_path, STITCH)
    p = np.array([[900.0, 10.0, 3.0], [1200.0, 80.0, 7.0]])  # x, y, z in tile A
    r, got = _map(path, p, "tileA", "tileB")
    assert r.exit_code == 0, r.output
    # world = A + tA; B = world - tB  (translations are zyx: tA = (0, 0, 1000), tB = (0, 50, 1800))
    np.testing.assert_allclose(got, p + [1000.0, 0.0, 0.0] - [1800.0, 50.0, 0.0])
    r, got = _map(path, p, "tileA", "world")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(got, p + [1000.0, 0.0, 0.0])
    assert "A_to_world" in r.output


def test_by_dimension_and_map_axis_onto_xyz_named_axes(tmp_path) -> None:
    # tileC's axes are (x, y, z): byDimension scales its x (input 0) into world x (output 2) and
    # translates y, z; a mapAxis edge from world to a permuted system "pyx" follows
    by_dim = {"type": "byDimension", "transformations": [
        {"transformation": {"type": "scale", "scale": [2.0]}, "inputAxes": [0], "outputAxes": [2]},
        {"transformation": {"type": "translation", "translation": [5.0, -7.0]},
         "inputAxes": [2, 1], "outputAxes": [0, 1]}]}  # fmt: skip
    systems = [{"name": "world", "axes": _axes("zyx")}, {"name": "xzy", "axes": _axes("xzy")}]
    tr = [
        *STITCH,
        _tr("tileC", by_dim, "C_to_world"),
        {
            "type": "mapAxis",
            "mapAxis": [2, 0, 1],
            "name": "to_xzy",
            "input": {"name": "world"},
            "output": {"name": "xzy"},
        },
    ]
    path = _scene(tmp_path, tr, systems)
    c = np.array([[3.0, 4.0, 6.0]])  # tileC x=3, y=4, z=6
    r, got = _map(path, c, "tileC", "world")
    assert r.exit_code == 0, r.output
    # world z = C z + 5, world y = C y - 7, world x = 2 * C x
    np.testing.assert_allclose(got, [[6.0, -3.0, 11.0]])
    r, got = _map(path, c, "tileC", "xzy")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(got, [[6.0, -3.0, 11.0]])  # same point, axes only renamed
    r, back = _map(path, np.array([[6.0, -3.0, 11.0]]), "xzy", "tileC")
    assert r.exit_code == 0, r.output  # walked backwards: mapAxis and byDimension invert
    np.testing.assert_allclose(back, c)
    graph = TransformGraph(path)
    assert {e.name for e in graph.edges} >= {"A_to_world", "C_to_world", "to_xzy"}


def test_axes_not_named_xyz_are_refused_with_one_line(tmp_path) -> None:
    tr = [*STITCH, _tr("tileD", {"type": "identity"}, "D_to_world")]
    path = _scene(tmp_path, tr)
    r, _ = _map(path, np.zeros((1, 3)), "tileD", "tileA")
    assert r.exit_code == 2
    assert "(k, j, i)" in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"type": "affine", "affine": [[1, 0, 0, 0], [0, 1, 0]]}, "malformed 'affine'"),
        ({"type": "scale", "scale": [0.0, 1.0, 1.0]}, "malformed 'scale'"),
        ({"type": "warp", "field": "x"}, "malformed 'warp'"),
        ({"type": "byDimension", "transformations": [{"transformation": {"type": "identity"}}]},
         "malformed 'byDimension'"),
    ],
)  # fmt: skip
def test_malformed_transform_is_one_line(tmp_path, bad, needle) -> None:
    path = _scene(tmp_path, [*STITCH, _tr("tileC", bad, "broken")], ijk=False)
    r, _ = _map(path, np.zeros((1, 3)), "tileA", "tileB")
    assert r.exit_code == 2
    assert needle in r.output
    assert "Traceback" not in r.output
    assert "validation error" not in r.output  # no pydantic dump
    r = runner.invoke(app, ["info", path])
    assert r.exit_code == 2
    assert needle in r.output


def test_two_routes_and_one_way_edges(tmp_path) -> None:
    direct = {"type": "translation", "translation": [0.0, 50.0, 800.0], "name": "A_to_B",
              "input": {"path": "tileA", "name": "physical"},
              "output": {"path": "tileB", "name": "physical"}}  # fmt: skip
    path = _scene(tmp_path, [*STITCH, direct])
    r, _ = _map(path, np.zeros((1, 3)), "tileA", "tileB")
    assert r.exit_code == 2
    assert "2 chains" in r.output
    r, got = _map(path, np.zeros((1, 3)), "tileA", "tileB", "--via", "A_to_B")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(got, [[800.0, 50.0, 0.0]])
    # a coordinate field has no inverse: the route against it does not exist
    field = {"type": "coordinates", "path": "coordinateTransformations/cfield", "name": "C_field"}
    path2 = str(tmp_path / "f2.ome.zarr")
    root = zarr.open_group(path2, mode="w")
    _image(root, "tileA")
    _image(root, "tileB")
    _image(root, "coordinateTransformations/cfield", names=("c", "z", "y", "x"))
    root.attrs["ome"] = {"version": "0.6", "scene": {
        "coordinateSystems": [{"name": "world", "axes": _axes("zyx")}],
        "coordinateTransformations": [STITCH[0], _tr("tileB", field, out="world")]}}  # fmt: skip
    with pytest.raises(InvalidInputError, match="C_field cannot be walked backwards"):
        TransformGraph(path2).path("tileA", "tileB")


def test_foreign_scene_json_written_by_hand_round_trips_through_info(tmp_path) -> None:
    path = _scene(tmp_path, STITCH, ijk=False)
    r = runner.invoke(app, ["info", path, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert [t.get("name") for t in d["scene_transforms"]] == ["A_to_world", "B_to_world"]
    # tileC is stored x, y, z: read as z, y, x (the same voxels, transposed by axis name)
    assert d["images"]["tileC"]["dims"] == ["z", "y", "x"]
