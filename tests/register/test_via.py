"""Which registration is used: ambiguous chains are refused, --via / --current choose, and the
choice is recorded. Checked against each model's own mapping computed with numpy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bridge_xr.errors import InvalidInputError
from bridge_xr.io.subject import add_image, read_subject
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.register.registration import register
from bridge_xr.scene.info import describe
from bridge_xr.scene.mapping import map_points, path_between
from bridge_xr_cli.main import app

runner = CliRunner()
MRI, TWOP, OTHER = "invivo_mri/d1/T2w", "twophoton/d1/angiogram", "twophoton/d1/other"


def _image(store: str, path: str, modality: str, shape, spacing) -> None:
    rng = np.random.default_rng(len(path))
    img = make_image(rng.random(shape).astype(np.float32), dims="zyx", spacing=spacing,
                     unit="micrometer")  # fmt: skip
    meta = ImageMetadata(path=path, modality=modality, session="d1",  # type: ignore[arg-type]
                         provenance=Provenance.now("test"))  # fmt: skip
    add_image(store, img, meta)


def _landmarks(shift) -> pd.DataFrame:
    q = np.random.default_rng(0).uniform(0, 200, size=(8, 3))  # moving (2P) x, y, z µm
    p = q - np.asarray(shift)  # fixed = moving - shift: the fixed -> moving map adds the shift
    return pd.DataFrame({"name": [f"L{i}" for i in range(8)],
                         "moving_x": q[:, 0], "moving_y": q[:, 1], "moving_z": q[:, 2],
                         "fixed_x": p[:, 0], "fixed_y": p[:, 1], "fixed_z": p[:, 2]})  # fmt: skip


SHIFT_A, SHIFT_B = (10.0, -4.0, 2.0), (25.0, 3.0, -6.0)


@pytest.fixture
def store(tmp_path) -> str:
    s = str(tmp_path / "M1.ome.zarr")
    _image(s, MRI, "mri", (4, 16, 16), (100.0, 25.0, 25.0))
    _image(s, TWOP, "twophoton", (8, 64, 64), (5.0, 4.0, 4.0))
    register(s, fixed=MRI, moving=TWOP, landmarks=_landmarks(SHIFT_A), model="rigid", name="reg_a")
    register(s, fixed=MRI, moving=TWOP, landmarks=_landmarks(SHIFT_B), model="rigid", name="reg_b")
    return s


def bridge(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_two_registrations_of_one_pair_are_refused_and_chosen_by_via(store) -> None:
    with pytest.raises(InvalidInputError, match=r"2 chains.*\[reg_a\].*\[reg_b\].*`via`"):
        path_between(store, TWOP, MRI)
    pts = np.array([[50.0, 60.0, 20.0], [120.0, 10.0, 30.0]])
    for name, shift in (("reg_a", SHIFT_A), ("reg_b", SHIFT_B)):
        # points are z, y, x in the library; the shifts are landmark (x, y, z) shifts
        got = map_points(store, pts[:, ::-1], TWOP, MRI, via=name)[:, ::-1]  # moving -> fixed
        np.testing.assert_allclose(got, pts - np.asarray(shift), atol=1e-6)
    with pytest.raises(InvalidInputError, match="unknown registration"):
        path_between(store, TWOP, MRI, via="reg_c")


def test_transform_points_cli_via_transform_alias_and_refusal(store, tmp_path) -> None:
    pd.DataFrame({"x": [50.0], "y": [60.0], "z": [20.0], "id": [7]}).to_csv(tmp_path / "p.csv")
    base = ("transform-points", store, tmp_path / "p.csv", "--from", TWOP, "--to", MRI)
    r = bridge(*base, "--output", tmp_path / "o.csv")
    assert r.exit_code == 2
    assert "reg_a" in r.output
    assert "reg_b" in r.output
    assert not (tmp_path / "o.csv").exists()
    for flag, name, shift in (("--via", "reg_a", SHIFT_A), ("--transform", "reg_b", SHIFT_B)):
        r = bridge(*base, "--output", tmp_path / f"{name}.csv", flag, name)
        assert r.exit_code == 0, r.output
        got = pd.read_csv(tmp_path / f"{name}.csv")[["x", "y", "z"]].to_numpy()[0]
        np.testing.assert_allclose(got, np.array([50.0, 60.0, 20.0]) - shift, atol=1e-6)


def test_current_registration_is_used_shown_and_switched(store) -> None:
    d = describe(store)
    (pair,) = d["registrations"]
    assert sorted(pair["chains"]) == [["reg_a"], ["reg_b"]]
    assert pair["used"] is None  # ambiguous
    r = bridge("set-current", store, "reg_b")
    assert r.exit_code == 0, r.output
    assert [r.name for r, _ in path_between(store, TWOP, MRI)] == ["reg_b"]
    (pair,) = describe(store)["registrations"]
    assert pair["used"] == ["reg_b"]
    assert pair["current"] == ["reg_b"]
    r = bridge("info", store)
    assert r.exit_code == 0
    assert "reg_b*" in r.output
    # a new registration marked --current takes over; the pair's old mark is dropped
    register(store, fixed=MRI, moving=TWOP, landmarks=_landmarks(SHIFT_A), model="rigid",
             name="reg_c", current=True)  # fmt: skip
    assert read_subject(store).current_registrations == ("reg_c",)
    got = map_points(store, np.array([[0.0, 0.0, 0.0]]), TWOP, MRI)[:, ::-1]
    np.testing.assert_allclose(got[0], -np.asarray(SHIFT_A), atol=1e-6)
    # --via still overrides the current mark
    got = map_points(store, np.array([[0.0, 0.0, 0.0]]), TWOP, MRI, via=["reg_b"])[:, ::-1]
    np.testing.assert_allclose(got[0], -np.asarray(SHIFT_B), atol=1e-6)


def test_two_routes_through_other_images_are_refused(store) -> None:
    _image(store, OTHER, "twophoton", (8, 64, 64), (5.0, 4.0, 4.0))
    register(store, fixed=MRI, moving=OTHER, landmarks=_landmarks(SHIFT_A), model="rigid",
             name="mri_other")  # fmt: skip
    register(store, fixed=OTHER, moving=TWOP, landmarks=_landmarks((0, 0, 0)), model="rigid",
             name="other_twop")  # fmt: skip
    with pytest.raises(InvalidInputError, match="3 chains"):
        path_between(store, TWOP, MRI)
    hops = path_between(store, TWOP, MRI, via="other_twop,mri_other")
    assert [(r.name, fwd) for r, fwd in hops] == [("other_twop", False), ("mri_other", False)]
    with pytest.raises(InvalidInputError, match="in that order"):
        path_between(store, TWOP, MRI, via="mri_other,other_twop")


def test_resample_and_extract_record_the_registrations_used(store, tmp_path) -> None:
    args = ("resample", store, "--moving", TWOP, "--onto", MRI, "--image", "registered/angio")
    r = bridge(*args)
    assert r.exit_code == 2
    assert "--via" in r.output
    assert "registered/angio" not in read_subject(store).images  # nothing written
    r = bridge(*args, "--via", "reg_b")
    assert r.exit_code == 0, r.output
    prov = read_subject(store).images["registered/angio"].provenance
    assert prov.parameters["chain"] == ["reg_b"]
    out = tmp_path / "tables"
    r = bridge("extract", store, "--mri", MRI, "--microscopy", TWOP, "--output", out,
               "--threshold", "0.5", "--via", "reg_a")  # fmt: skip
    assert r.exit_code == 0, r.output
    (prov_file,) = out.glob("subject=*/session=*/_provenance.json")
    assert json.loads(prov_file.read_text())["parameters"]["registrations"] == ["reg_a"]
    assert len(pd.read_parquet(out)) > 0  # the sidecar does not disturb Parquet readers


def test_mask_needs_via_and_records_it(store) -> None:
    args = ("mask", store, "--mri", MRI, "--vessels", TWOP, "--vessel-threshold", "0.5",
            "--vessel-max", "1.0", "--min-coverage", "0", "--output", "masks/d1/analysis")  # fmt: skip
    r = bridge(*args)
    assert r.exit_code == 2
    assert "--via" in r.output
    assert "masks/d1/analysis" not in read_subject(store).images
    r = bridge(*args, "--via", "reg_b")
    assert r.exit_code == 0, r.output
    prov = read_subject(store).images["masks/d1/analysis"].provenance
    assert prov.parameters["registrations"] == ["reg_b"]
