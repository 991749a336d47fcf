"""Landmark files written by hand from the documented 3D Slicer and BigWarp formats."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bridge_xr.errors import InvalidInputError
from bridge_xr.register.landmarks import export_landmarks, import_landmarks, read_csv, write_csv

# the same three landmarks in every format: moving (2P) and fixed (MRI), RAS micrometres
MOVING = {"F-1": (100.0, 200.0, 30.0), "F-2": (400.0, 250.0, 60.0), "F-3": (150.0, 500.0, 90.0)}
FIXED = {
    "F-1": (1100.0, -2200.0, 530.0),
    "F-2": (1400.0, -2250.0, 560.0),
    "F-3": (1150.0, -2500.0, 590.0),
}


def _lps_mm(p):
    return (-p[0] / 1000, -p[1] / 1000, p[2] / 1000)


def _fcsv(points, *, slicer5=False, old_ras=False):
    head = [
        "# Markups fiducial file version = 4.11"
        if not old_ras
        else "# Markups fiducial file version = 4.6",
        "# CoordinateSystem = 0" if old_ras else "# CoordinateSystem = LPS",
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID",
    ]
    rows = []
    for i, (lab, p) in enumerate(points.items()):
        x, y, z = (p[0] / 1000, p[1] / 1000, p[2] / 1000) if old_ras else _lps_mm(p)
        extra = ",2,0" if slicer5 else ""
        rows.append(f"vtkMRMLMarkupsFiducialNode_{i},{x},{y},{z},0,0,0,1,1,1,0,{lab},,{extra}")
    return "\n".join(head + rows) + "\n"


def _mrk_json(points):
    cps = [
        {"id": str(i), "label": lab, "position": list(_lps_mm(p)), "positionStatus": "defined"}
        for i, (lab, p) in enumerate(points.items())
    ]
    cps.append({"id": "99", "label": "F-99", "position": [0, 0, 0], "positionStatus": "undefined"})
    return json.dumps(
        {
            "@schema": "markups-schema-v1.0.3.json",
            "markups": [
                {
                    "type": "Fiducial",
                    "coordinateSystem": "LPS",
                    "coordinateUnits": "mm",
                    "controlPoints": cps,
                }
            ],
        }
    )


def _expected() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": list(MOVING),
            "moving_x": [MOVING[k][0] for k in MOVING],
            "moving_y": [MOVING[k][1] for k in MOVING],
            "moving_z": [MOVING[k][2] for k in MOVING],
            "fixed_x": [FIXED[k][0] for k in MOVING],
            "fixed_y": [FIXED[k][1] for k in MOVING],
            "fixed_z": [FIXED[k][2] for k in MOVING],
            "active": [True] * 3,
        }
    )


def _same(df: pd.DataFrame) -> None:
    exp = _expected()
    assert df["name"].tolist() == exp["name"].tolist()
    np.testing.assert_allclose(
        df.iloc[:, 1:7].to_numpy(float), exp.iloc[:, 1:7].to_numpy(float), atol=1e-9
    )


@pytest.mark.parametrize("variant", ["v411", "slicer5", "old_ras"])
def test_slicer_fcsv_variants(tmp_path, variant) -> None:
    kw = {"slicer5": variant == "slicer5", "old_ras": variant == "old_ras"}
    (tmp_path / "m.fcsv").write_text(_fcsv(MOVING, **kw))
    fixed = dict(FIXED)
    fixed["only-in-fixed"] = (0.0, 0.0, 0.0)  # dropped when pairing by label, as Slicer does
    (tmp_path / "f.fcsv").write_text(_fcsv(fixed, **kw))
    _same(import_landmarks([tmp_path / "m.fcsv", tmp_path / "f.fcsv"]))


def test_slicer_mrk_json(tmp_path) -> None:
    (tmp_path / "m.mrk.json").write_text(_mrk_json(MOVING))
    (tmp_path / "f.mrk.json").write_text(_mrk_json(FIXED))
    _same(import_landmarks([tmp_path / "m.mrk.json", tmp_path / "f.mrk.json"]))


def test_bigwarp_csv_with_unpaired_and_inactive(tmp_path) -> None:
    rows = [
        f'"{k}","true","{MOVING[k][0]}","{MOVING[k][1]}","{MOVING[k][2]}","{FIXED[k][0]}","{FIXED[k][1]}","{FIXED[k][2]}"'
        for k in MOVING
    ]
    rows.append('"Pt-9","true","1.0","2.0","3.0","Infinity","Infinity","Infinity"')
    rows.append('"Pt-10","false","5.0","6.0","7.0","8.0","9.0","10.0"')
    (tmp_path / "bw.csv").write_text("\n".join(rows) + "\n")
    df = import_landmarks([tmp_path / "bw.csv"])
    assert "Pt-9" not in df["name"].tolist()  # unpaired
    assert df.loc[df["name"] == "Pt-10", "active"].item() is False
    _same(df[df["active"]])


@pytest.mark.parametrize("embedded", [False, True])
def test_bigwarp_json(tmp_path, embedded) -> None:
    doc = {
        "type": "BigWarpLandmarks",
        "numDimensions": 3,
        "movingPoints": [list(MOVING[k]) for k in MOVING],
        "fixedPoints": [list(FIXED[k]) for k in MOVING],
        "active": [True] * 3,
        "names": list(MOVING),
    }
    if embedded:
        doc = {"Sources": {}, "Transform": {"type": "Thin Plate Spline", "landmarks": doc}}
    (tmp_path / "bw.json").write_text(json.dumps(doc))
    _same(import_landmarks([tmp_path / "bw.json"]))


@pytest.mark.parametrize("fmt", ["bigwarp-csv", "bigwarp-json", "slicer-fcsv", "slicer-json"])
def test_export_then_import_is_the_identity(tmp_path, fmt) -> None:
    df = _expected()
    ext = {
        "bigwarp-csv": ".csv",
        "bigwarp-json": ".json",
        "slicer-fcsv": ".fcsv",
        "slicer-json": ".mrk.json",
    }[fmt]
    files = export_landmarks(df, fmt, tmp_path / f"lm{ext}")
    back = import_landmarks(files)
    _same(back)
    write_csv(back, tmp_path / "canon.csv")
    _same(read_csv(tmp_path / "canon.csv"))


def test_bad_landmark_files(tmp_path) -> None:
    (tmp_path / "a.csv").write_text("name,moving_x,moving_y\nA,1,2\n")
    with pytest.raises(InvalidInputError, match="missing landmark columns"):
        read_csv(tmp_path / "a.csv")
    df = _expected()
    df.loc[1, "name"] = "F-1"
    with pytest.raises(InvalidInputError, match="duplicate landmark names"):
        write_csv(df, tmp_path / "b.csv")
    df = _expected()
    df.loc[0, "fixed_x"] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        write_csv(df, tmp_path / "c.csv")
    (tmp_path / "m.fcsv").write_text(_fcsv(MOVING))
    with pytest.raises(InvalidInputError, match="two files"):
        import_landmarks([tmp_path / "m.fcsv"])
    with pytest.raises(InvalidInputError, match="no such landmark file"):
        import_landmarks([tmp_path / "missing.csv"])


def test_slicer_world_points_map_to_intrinsic_through_the_scanner_affine(tmp_path) -> None:
    import nibabel as nib
    from typer.testing import CliRunner

    from bridge_xr.io.convert import convert_mri
    from bridge_xr_cli.main import app

    aff = np.eye(4)
    c, s_ = np.cos(0.3), np.sin(0.3)
    aff[:3, :3] = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]]) @ np.diag([0.05, 0.05, 0.1])
    aff[:3, 3] = (2.0, -3.0, 1.5)
    nii = nib.Nifti1Image(np.zeros((20, 20, 10), np.float32), aff)
    nii.header.set_xyzt_units("mm")
    nib.save(nii, str(tmp_path / "t2.nii.gz"))
    store = str(tmp_path / "s.ome.zarr")
    convert_mri(tmp_path / "t2.nii.gz", store, "mri/T2w")
    intrinsic = np.array(
        [[100.0, 200.0, 300.0], [400.0, 50.0, 100.0], [250.0, 600.0, 800.0]]
    )  # xyz µm
    vox = intrinsic / np.array([50.0, 50.0, 100.0])  # i, j, k
    world_ras_mm = (np.c_[vox, np.ones(3)] @ aff.T)[:, :3]
    names = ["A", "B", "C"]
    (tmp_path / "f.fcsv").write_text(
        _fcsv({n: tuple(p * 1000) for n, p in zip(names, world_ras_mm, strict=True)})
    )
    (tmp_path / "m.fcsv").write_text(_fcsv({n: (1.0, 2.0, float(i)) for i, n in enumerate(names)}))
    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance

    add_image(
        store,
        make_image(np.zeros((4, 8, 8), np.uint8), dims="zyx", spacing=(1, 1, 1), unit="um"),
        ImageMetadata(path="twop/a", modality="twophoton", provenance=Provenance.now("t")),
    )
    r = CliRunner().invoke(
        app,
        [
            "landmarks",
            "import",
            str(tmp_path / "m.fcsv"),
            str(tmp_path / "f.fcsv"),
            "--to",
            str(tmp_path / "lm.csv"),
            "--store",
            store,
            "--fixed-image",
            "mri/T2w",
            "--moving-image",
            "twop/a",
        ],
    )
    assert r.exit_code == 0, r.output
    got = read_csv(tmp_path / "lm.csv")
    np.testing.assert_allclose(
        got[["fixed_x", "fixed_y", "fixed_z"]].to_numpy(), intrinsic, atol=1e-6
    )
    np.testing.assert_allclose(
        got["moving_z"].to_numpy(), [0.0, 1.0, 2.0], atol=1e-9
    )  # µm, no affine


def _fcsv_rows_ras_mm(points, *, label_first=False) -> list[str]:
    rows = []
    for i, (lab, p) in enumerate(points.items()):
        x, y, z = (p[0] / 1000, p[1] / 1000, p[2] / 1000)
        rows.append(
            f"{lab},{x},{y},{z},1,1" if label_first else f"id{i},{x},{y},{z},0,0,0,1,1,1,0,{lab}"
        )
    return rows


@pytest.mark.parametrize("variant", ["no_system_line", "no_header_at_all", "slicer3"])
def test_old_slicer_fcsv_without_coordinate_system_is_ras(tmp_path, variant) -> None:
    # Slicer reads a list without "# CoordinateSystem" as RAS (files before 4.11, Slicer 3)
    for name, pts in (("m", MOVING), ("f", FIXED)):
        if variant == "slicer3":
            head = ["# Fiducial List file m.fcsv", "# name = m", "# numPoints = 3",
                    "# symbolScale = 5", "# visibility = 1"]  # fmt: skip
            rows = _fcsv_rows_ras_mm(pts, label_first=True)
        elif variant == "no_system_line":
            head = ["# Markups fiducial file version = 4.4",
                    "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label"]  # fmt: skip
            rows = _fcsv_rows_ras_mm(pts)
        else:
            head, rows = [], _fcsv_rows_ras_mm(pts)
        (tmp_path / f"{name}.fcsv").write_text("\n".join(head + rows) + "\n")
    _same(import_landmarks([tmp_path / "m.fcsv", tmp_path / "f.fcsv"]))


def test_slicer_markups_json_recognised_by_content(tmp_path) -> None:
    # a plain .json (no .mrk) is still a Slicer list when its content says so
    (tmp_path / "moving.json").write_text(_mrk_json(MOVING))
    (tmp_path / "fixed.json").write_text(_mrk_json(FIXED))
    _same(import_landmarks([tmp_path / "moving.json", tmp_path / "fixed.json"]))
    ras = json.loads(_mrk_json(MOVING))
    ras["markups"][0]["coordinateSystem"] = "RAS"
    for cp in ras["markups"][0]["controlPoints"][:3]:
        cp["position"] = [v / 1000 for v in MOVING[cp["label"]]]
    (tmp_path / "moving_ras.json").write_text(json.dumps(ras))
    _same(import_landmarks([tmp_path / "moving_ras.json", tmp_path / "fixed.json"]))


def test_bigwarp_json_with_leading_comment(tmp_path) -> None:
    doc = {
        "type": "BigWarpLandmarks",
        "numDimensions": 3,
        "movingPoints": [list(MOVING[k]) for k in MOVING],
        "fixedPoints": [list(FIXED[k]) for k in MOVING],
        "active": [True] * 3,
        "names": list(MOVING),
    }
    text = '/* BigWarp settings\n   written by Fiji, "quoted" */\n' + json.dumps(
        {"Transform": {"landmarks": doc, "note": "a /* not a comment */ string"}}
    )
    (tmp_path / "settings.bigwarp.json").write_text(text)
    _same(import_landmarks([tmp_path / "settings.bigwarp.json"]))
