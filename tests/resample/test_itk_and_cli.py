"""ITK export read back by SimpleITK, and `bridge resample` end to end on the phantom."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import zarr
from typer.testing import CliRunner

from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject
from bridge_xr.io.validate import validate_store
from bridge_xr.resampling.write import shard_blocks
from bridge_xr.scene.chains import model_from_record
from bridge_xr.testing.phantom import PhantomConfig
from bridge_xr.testing.study import write_phantom_study
from bridge_xr_cli.main import app

FIXED, MOVING = "invivo_mri/d060/T2w", "twophoton/d060/angiogram"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    st = write_phantom_study(root, PhantomConfig.tiny())
    q = np.random.default_rng(3).uniform([5, 20, 20], [55, 220, 220], size=(25, 3))
    p = st.phantom.truth.inverse(q)
    pd.DataFrame(
        {
            "name": [f"L{i}" for i in range(25)],
            "moving_x": q[:, 2],
            "moving_y": q[:, 1],
            "moving_z": q[:, 0],
            "fixed_x": p[:, 2],
            "fixed_y": p[:, 1],
            "fixed_z": p[:, 0],
        }
    ).to_csv(root / "exact.csv", index=False)
    run = CliRunner()
    for model in ("affine", "tps"):
        r = run.invoke(
            app,
            [
                "register",
                str(st.store),
                "--fixed",
                FIXED,
                "--moving",
                MOVING,
                "--landmarks",
                str(root / "exact.csv"),
                "--model",
                model,
                "--name",
                model,
            ],
        )
        assert r.exit_code == 0, r.output
    return st


@pytest.mark.parametrize(("name", "suffix"), [("affine", ".tfm"), ("tps", ".h5")])
def test_itk_export_maps_points_like_the_registration(study, tmp_path, name, suffix) -> None:
    out = tmp_path / f"t{suffix}"
    r = CliRunner().invoke(
        app, ["export", "transform", str(study.store), "--name", name, "--output", str(out)]
    )
    assert r.exit_code == 0, r.output
    tx = sitk.ReadTransform(str(out))
    rec = read_subject(str(study.store)).registrations[name]
    model = model_from_record(rec)
    pts = np.random.default_rng(1).uniform([10, 10, 10], [330, 330, 150], size=(100, 3))  # xyz µm
    ours = model.forward_points(pts)
    theirs = np.array([tx.TransformPoint(tuple(p)) for p in pts])
    tol = 1e-9 if name == "affine" else rec.certified_max_error_um + 1e-6
    assert np.abs(theirs - ours).max() <= tol


def test_resample_cli_writes_a_registered_image_onto_the_mri_grid(study) -> None:
    r = CliRunner().invoke(
        app,
        [
            "resample",
            str(study.store),
            "--moving",
            MOVING,
            "--onto",
            FIXED,
            "--image",
            "registered/d060/angiogram",
            "--via",
            "tps",  # the study holds an affine and a TPS registration of the pair
        ],
    )
    assert r.exit_code == 0, r.output
    out = read_image(str(study.store), "registered/d060/angiogram")
    mri = read_image(str(study.store), FIXED)
    assert out.shape == mri.shape
    np.testing.assert_allclose(out.z.values, mri.z.values)
    assert validate_store(str(study.store)) == []

    # the registered angiogram is bright where the MRI's true vessel fraction is high
    vf = study.phantom.vessel_fraction
    v = out.values.astype(float)
    covered = v > 0
    assert covered.sum() > 50
    assert np.corrcoef(vf[covered], v[covered])[0, 1] > 0.5
    r = CliRunner().invoke(
        app,
        [
            "resample",
            str(study.store),
            "--moving",
            MOVING,
            "--onto",
            FIXED,
            "--image",
            "registered/d060/x",
            "--via",
            "tps",
            "--spacing",
            "10 bananas",
        ],
    )
    assert r.exit_code == 2
    assert "unknown unit" in r.stderr


def test_resample_cli_stores_the_certified_error_of_every_block(tmp_path) -> None:
    from bridge_xr.register.registration import register

    st = write_phantom_study(tmp_path, PhantomConfig.tiny())
    q = np.random.default_rng(3).uniform([5, 20, 20], [55, 220, 220], size=(25, 3))
    p = st.phantom.truth.inverse(q)  # the phantom's smooth true deformation
    lm = pd.DataFrame({"name": [f"L{i}" for i in range(25)]})
    for i, a in enumerate("zyx"):
        lm[f"moving_{a}"], lm[f"fixed_{a}"] = q[:, i], p[:, i]
    register(st.store, fixed=FIXED, moving=MOVING, landmarks=lm, model="tps", name="tps_only")
    args = ["resample", str(st.store), "--moving", MOVING, "--onto", FIXED]
    r = CliRunner().invoke(app, [*args, "--image", "registered/a", "--spacing", "6um,6um,6um"])
    assert r.exit_code == 0, r.output
    errs = read_image(str(st.store), "qc/registered/a/block_error")
    prov = read_subject(str(st.store)).images["registered/a"].provenance
    assert prov.parameters["block_error_image"] == "qc/registered/a/block_error"
    assert 0 < float(errs.max()) <= 0.1 * 6.0
    assert prov.parameters["certified_max_error_um"] == pytest.approx(float(errs.max()))
    out = read_image(str(st.store), "registered/a")
    # one error per resample block, and the blocks tile the stored level-0 shards
    spacing = tuple(out.attrs["spacing"][d] for d in "zyx")
    blocks = shard_blocks(out.shape, spacing, out.dtype.itemsize)
    assert errs.shape == tuple(-(-n // c) for n, c in zip(out.shape, blocks, strict=True))
    arr = zarr.open_group(str(st.store), mode="r")["registered/a/s0"]
    assert all(s % b == 0 or b >= n for s, b, n in zip(arr.shards, blocks, out.shape, strict=True))
    assert validate_store(str(st.store)) == []


@pytest.mark.parametrize(
    ("shape", "itemsize", "n_c"),
    [((256, 1024, 1024), 2, 1), ((512, 4096, 4096), 2, 1), ((40, 200, 300), 4, 1),
     ((96, 700, 900), 2, 3), ((8, 64, 64), 1, 1), ((1, 5000, 5000), 8, 1)],
)  # fmt: skip
def test_resample_blocks_tile_the_shards_that_add_image_plans(shape, itemsize, n_c) -> None:
    from bridge_xr.io._plan import plan_storage
    from bridge_xr.resampling.write import BLOCK_BYTES_CAP

    spacing = (2.0, 1.2, 1.2)
    blocks = shard_blocks(shape, spacing, itemsize, n_c)
    # add_image -> write_multiscale plans level 0 so (default chunks and shards)
    lv = plan_storage(shape, "zyx", f"u{itemsize}", dict(zip("zyx", spacing, strict=False))).levels[
        0
    ]
    shard, chunk = lv.shards or lv.chunks, lv.chunks
    assert all(s % b == 0 for s, b in zip(shard, blocks, strict=True)), (shard, blocks)
    assert all(b % c == 0 for b, c in zip(blocks, chunk, strict=True)), (blocks, chunk)
    nbytes = int(np.prod(blocks)) * itemsize * n_c
    if int(np.prod(shard)) * itemsize * n_c <= BLOCK_BYTES_CAP:
        assert blocks == shard
    else:
        assert nbytes <= BLOCK_BYTES_CAP or blocks == chunk
        # halved no further than needed: doubling any axis within the shard exceeds the cap
        for d in range(3):
            if blocks[d] < shard[d]:
                assert nbytes * 2 > BLOCK_BYTES_CAP
