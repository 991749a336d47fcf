"""The README's worked examples, done in Python through the public API (as in a notebook).

Ground truth: the phantom's known 2P <-> MRI transform and its true vessel fraction per voxel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from zarr.storage import LocalStore, WrapperStore

import bridge_xr as bx
from bridge_xr.testing.phantom import PhantomConfig
from bridge_xr.testing.study import PhantomStudy, exact_landmarks, write_phantom_study

MRI, TWOP, GLIOMA = "invivo_mri/d060/T2w", "twophoton/d060/angiogram", "twophoton/d060/glioma"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> PhantomStudy:
    return write_phantom_study(tmp_path_factory.mktemp("api"), PhantomConfig.tiny())


def test_a_scene_shows_its_images_with_physical_coordinates(study: PhantomStudy) -> None:
    scene = bx.open_scene(study.store)
    assert set(scene) == {MRI, "invivo_mri/d060/T2star", TWOP, GLIOMA}
    t2w = scene[MRI]
    assert isinstance(t2w, xr.DataArray)
    assert t2w.chunks is not None
    sp = t2w.attrs["spacing"]
    np.testing.assert_allclose(np.diff(t2w.x.values), sp["x"])  # coordinates are physical
    text = repr(scene)
    assert MRI in text
    assert "registrations" in text
    assert "<table>" in scene._repr_html_()
    with pytest.raises(KeyError, match="no image 'nope'"):
        scene["nope"]
    with pytest.raises(bx.errors.InvalidInputError, match="not a subject store"):
        bx.open_scene(study.root / "missing.ome.zarr")


def test_register_map_points_and_resample_in_python(study: PhantomStudy) -> None:
    scene = bx.open_scene(study.store)
    lm = exact_landmarks(study.phantom)
    reg = bx.register.fit("tps", lm)
    rec = scene.add_registration(
        reg, fixed=MRI, moving=TWOP, name="2p_to_mri", landmarks=None, overwrite=True
    )
    assert rec.model == "tps"
    assert rec.certified_max_error_um is not None
    # the same as the one-call verb, which also keeps landmarks and an accuracy report
    rec2, report = bx.register.register(
        scene, fixed=MRI, moving=GLIOMA, landmarks=lm, model="tps", name="glioma_to_mri",
        overwrite=True,
    )  # fmt: skip
    assert report["n_landmarks"] == len(lm)
    assert [e.name for e, _ in scene.graph.path(TWOP, MRI, via=["2p_to_mri"])] == ["2p_to_mri"]
    # points from the 2P into the MRI, against the phantom's exact transform
    fov = np.asarray(study.phantom.config.twop_fov_um)
    q = np.random.default_rng(1).uniform(0.2 * fov, 0.8 * fov, size=(50, 3))  # zyx µm
    df = pd.DataFrame({"cell": range(50), "x": q[:, 2], "y": q[:, 1], "z": q[:, 0]})
    got = scene.map_points(df, src=TWOP, dst=MRI)
    assert list(got["cell"]) == list(range(50))  # other columns kept
    truth = study.phantom.truth.inverse(q)
    err = np.linalg.norm(got[["z", "y", "x"]].to_numpy() - truth, axis=1)
    assert err.max() < 5.0  # exact landmarks: the TPS reproduces the truth closely
    np.testing.assert_allclose(scene.map_points(q, src=TWOP, dst=MRI), got[["z", "y", "x"]])
    # resampling: lazy DataArray on the MRI grid, written back through the scene
    out = bx.resample(scene, moving=TWOP, onto=MRI, via=["2p_to_mri"])
    assert out.shape == scene[MRI].shape
    assert out.chunks is not None
    assert out.attrs["resample"]["chain"] == ["2p_to_mri"]
    meta = scene.write_image(out, "registered/d060/angiogram", overwrite=True)
    assert meta.provenance.parameters["chain"] == ["2p_to_mri"]
    np.testing.assert_array_equal(scene["registered/d060/angiogram"].values, out.values)
    # what `bridge resample` does: the image, its provenance and the TPS block-error QC image
    meta = bx.resample_into(
        scene, moving=TWOP, onto=MRI, image="registered/d060/angiogram_qc", via="2p_to_mri"
    )
    qc = meta.provenance.parameters["block_error_image"]
    assert qc in scene
    assert float(scene[qc].max()) == pytest.approx(
        meta.provenance.parameters["certified_max_error_um"]
    )


def test_voxel_correlation_in_python(study: PhantomStudy) -> None:
    scene = bx.open_scene(study.store)
    if "2p_to_mri" not in scene.registrations:
        bx.register.register(scene, fixed=MRI, moving=TWOP, landmarks=exact_landmarks(
            study.phantom), model="tps", name="2p_to_mri", overwrite=True)  # fmt: skip
    dens = bx.extract.density(scene, microscopy=TWOP, mri=MRI, threshold=1000, method="resliced")
    frac = dens["fraction"].values
    vf = study.phantom.vessel_fraction
    ok = np.isfinite(frac) & (dens["coverage"].values > 0.99)
    assert np.corrcoef(frac[ok], vf[ok])[0, 1] > 0.8  # against the phantom's true fraction
    table = bx.extract.table(scene, mri=MRI, microscopy=[TWOP], thresholds={"*": 1000},
                             method="resliced", via=["2p_to_mri"])  # fmt: skip
    assert isinstance(table, dd.DataFrame)
    df = table.compute()
    assert {"mri", "fraction_angiogram", "coverage_angiogram"} <= set(df.columns)
    omnibus, _ = bx.stats.run_test(df.dropna(subset=["fraction_angiogram"]), response="mri",
                                   by="fraction_angiogram", test="spearman")  # fmt: skip
    assert "p" in omnibus.columns


class _Counting(WrapperStore[Any]):
    """Counts reads of each key (to prove a scene reads its metadata once)."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.reads: dict[str, int] = {}

    async def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
        self.reads[key] = self.reads.get(key, 0) + 1
        return await self._store.get(key, *args, **kwargs)


def test_a_scene_reads_its_metadata_once(study: PhantomStudy, tmp_path: Path) -> None:
    store = _Counting(LocalStore(study.store, read_only=True))
    scene = bx.open_scene(store)
    for _ in range(3):
        _ = scene[MRI], scene[TWOP], scene.subject, scene.graph.path(TWOP, MRI, via="2p_to_mri")
        bx.resample(scene, moving=TWOP, onto=MRI, via="2p_to_mri")
        bx.scene.map_points(scene, np.zeros((1, 3)), TWOP, MRI, via="2p_to_mri")
    assert store.reads["zarr.json"] == 1, store.reads
    assert store.reads[f"{MRI}/zarr.json"] == 1, store.reads
    # a path given instead of a scene is read afresh every time (no stale cache)
    plain = _Counting(LocalStore(study.store, read_only=True))
    for _ in range(2):
        bx.io.read_subject(plain)
    assert plain.reads["zarr.json"] == 2


PACKAGES = ["bridge_xr"] + [
    f"bridge_xr.{p}"
    for p in ("model", "io", "scene", "register", "resampling", "extract", "stats", "learn",
              "report", "testing")
]  # fmt: skip


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_function_has_parameters_and_a_runnable_example(package: str) -> None:
    import importlib
    import inspect

    mod = importlib.import_module(package)
    # a submodule named like a function would replace it once imported: none may be
    folder = Path(mod.__file__ or "").parent
    modules = {p.stem for p in folder.glob("*.py")} | {
        p.name for p in folder.iterdir() if p.is_dir()
    }
    assert not (set(mod.__all__) & modules) - {"errors"} or package == "bridge_xr"
    missing = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if package == "bridge_xr" and inspect.ismodule(obj):
            continue
        assert not inspect.ismodule(obj), f"{package}.{name} resolves to a module"
        if not inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{package}.{name} has no docstring"
            continue
        doc = inspect.getdoc(obj) or ""
        need = ["Examples"] + (["Parameters"] if inspect.signature(obj).parameters else [])
        missing += [f"{name}: {k}" for k in need if f"{k}\n--" not in doc]
    assert not missing, missing
