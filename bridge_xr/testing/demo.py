"""The demo study: a phantom through the whole pipeline, ending with a report (``bridge demo``).

:func:`run_demo` builds a synthetic subject with known ground truth, converts, registers,
resamples, extracts, tests, follows it over two sessions and trains a tiny nnU-Net, writing a
report folder; :class:`DemoSummary` says in one paragraph what was measured.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

__all__ = ["DemoSummary", "run_demo"]

Status = Callable[[str], AbstractContextManager[Any]]


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`run_demo` measured (``steps``, also in ``report/summary.json``)."""

    out_dir: Path
    store: Path
    n_images: int
    steps: dict[str, Any]
    mri_spacing_um: float
    twop_inplane_um: float
    elapsed_s: float

    @property
    def passed(self) -> bool:
        """Whether the store validated (or the validators are not installed)."""
        v = self.steps["validation"]
        return v == "passed" or str(v).startswith("skipped")

    def sentence(self) -> str:
        """The summary paragraph ``bridge demo`` prints."""
        steps, out_dir = self.steps, self.out_dir
        elapsed = self.elapsed_s
        ph = steps["phantom"]
        return (
            f"Demo study in {out_dir}: one subject store ({self.store.name}) with {self.n_images} "
            f"converted images — in vivo T2w and T2*w MRI at {self.mri_spacing_um:g} µm "
            f"({'×'.join(map(str, ph['mri_shape']))} voxels, exact scanner affine) and a 2P angiogram "
            f"and glioma channel at {self.twop_inplane_um:g} µm in-plane "
            f"({'×'.join(map(str, ph['twophoton_shape'][1:]))} voxels), each a sharded OME-Zarr 0.6 "
            f"multiscale in one scene. The phantom's vessel tree has {ph['segments']} segments, "
            f"{ph['diameter_range_um'][0]:.0f}–{ph['diameter_range_um'][1]:.0f} µm in diameter, and "
            f"{ph['landmarks']} bifurcation landmarks per rater. NIfTI round trip: data identical "
            f"{steps['nifti_roundtrip']['data_identical']}, affine error "
            f"{steps['nifti_roundtrip']['affine_max_abs_diff']:.1e} mm. Validation: "
            f"{steps['validation'] if isinstance(steps['validation'], str) else 'FAILED'}. "
            f"Registration (TPS, U(r)=r, rater 1): LOO TRE RMS {steps['registration']['loo_tre_rms_um']:.1f} µm, "
            f"error against the known transform {steps['registration']['truth_rms_um']:.1f} µm RMS; "
            f"inter-rater RMSE {steps['registration']['inter_rater_rmse_um']:.1f} µm; best model by LOO TRE: "
            f"{steps['registration']['best_model']}. The 2P channels were resampled onto the MRI grid "
            f"(correlation of registered angiogram with true vessel fraction r = "
            f"{steps['resample']['r_vessel_fraction']:.2f}). "
            f"Voxel correlation ({steps['correlation']['voxels']} MRI voxels; densities by nearest "
            f"reslicing through the TPS + exact integration"
            + (
                f", within {steps['correlation']['exact_vs_resliced']['mean_abs']:.3f} (mean) of the "
                "exact footprint integration"
                if steps["correlation"]["exact_vs_resliced"]
                else ""
            )
            + f"): vessel fraction vs truth r = {steps['correlation']['r_vessel_truth']:.2f}; "
            f"T2w z-score vs vessel density: Spearman rho "
            f"{steps['correlation']['vessel_rho']:.2f} (Kruskal-Wallis p = "
            f"{steps['correlation']['vessel_kw_p']:.1e}); vs glioma density in voxels with < 5 % "
            f"vessel: rho {steps['correlation']['glioma_rho']:.2f} "
            f"(p = {steps['correlation']['glioma_kw_p']:.1e}). "
            f"Longitudinal: session motion recovered to {steps['longitudinal']['motion_error_um']:.1f} µm, "
            f"glioma density +{steps['longitudinal']['mean_growth_percent_per_day']:.2f} %/day in "
            f"{steps['longitudinal']['voxels']} voxels. "
            + _learning_sentence(steps["learning"])
            + f"Report: {out_dir / 'report'} (study report: {steps['correlation']['report']}; "
            f"{elapsed:.1f} s)."
        )


def run_demo(
    out_dir: Path,
    *,
    size: Literal["tiny", "default"] = "default",
    seed: int = 0,
    status: Status | None = None,
) -> DemoSummary:
    """Build a synthetic study (phantom) in ``out_dir``, run the whole pipeline, summarise.

    Parameters
    ----------
    out_dir : Path
        Folder for the study and ``report/`` (emptied first).
    size : {'tiny', 'default'}
        Phantom size: tiny runs in about a minute.
    seed : int
        Phantom random seed.
    status : callable, optional
        ``status(text)`` returning a context manager, entered around each step (a spinner).

    Returns
    -------
    DemoSummary

    Examples
    --------
    >>> summary = run_demo(Path("demo-out"), size="tiny")  # doctest: +SKIP
    >>> summary.passed  # doctest: +SKIP
    True
    """
    console_status: Status = status or (lambda text: contextlib.nullcontext())
    from bridge_xr.io.convert import export_nifti, export_ome_zarr_05
    from bridge_xr.scene.info import describe
    from bridge_xr.testing.phantom import PhantomConfig, phantom_summary
    from bridge_xr.testing.study import write_phantom_study

    if size not in {"tiny", "default"}:
        from bridge_xr.errors import InvalidInputError

        raise InvalidInputError(f"`size` is 'tiny' or 'default'; got {size!r}")
    cfg = PhantomConfig.tiny(seed) if size == "tiny" else PhantomConfig(seed=seed)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    steps: dict[str, Any] = {}
    with console_status("1/9 phantom: vessel tree, glioma, 2P and MRI volumes, landmarks"):
        study = write_phantom_study(out_dir, cfg)
    steps["phantom"] = phantom_summary(study.phantom)
    with console_status("2/9 describing the subject store"):
        info = describe(study.store)
        (out_dir / "report").mkdir()
        (out_dir / "report" / "info.json").write_text(json.dumps(info, indent=2))
    with console_status("3/9 NIfTI round trip and OME-Zarr 0.5 export"):
        rt = export_nifti(
            study.store, "invivo_mri/d060/T2w", out_dir / "report" / "T2w_roundtrip.nii.gz"
        )
        a: Any = nib.load(str(study.raw / "T2w.nii.gz"))
        b: Any = nib.load(str(rt))
        steps["nifti_roundtrip"] = {
            "data_identical": bool(np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))),
            "affine_max_abs_diff": float(np.abs(a.affine - b.affine).max()),
        }
        export_ome_zarr_05(
            study.store,
            "twophoton/d060/angiogram",
            str(out_dir / "report" / "angiogram_v05.ome.zarr"),
        )
    with console_status("4/9 registration: TPS from rater 1, model comparison, inter-rater"):
        steps["registration"] = _registration(study, out_dir / "report")
    with console_status("5/9 resampling 2P channels onto the MRI grid, QC figure"):
        steps["resample"] = _resample(study, out_dir / "report")
    with console_status(
        "6/9 voxel correlation: masks, NAGM z-score, exact densities, stats, report"
    ):
        steps["correlation"] = _correlation(study, out_dir, compare_exact=size == "tiny")
    with console_status("7/9 longitudinal: two sessions, rigid session registration, growth"):
        steps["longitudinal"] = _longitudinal(out_dir, seed)
    with console_status("8/9 learning: nnU-Net 2d on MRI with 2P truth (export, train, predict)"):
        steps["learning"] = _learning(out_dir, seed, short=size == "tiny")
    with console_status("9/9 validating the whole store with ngff-zarr and ome-zarr-models"):
        try:
            from bridge_xr.io.validate import validate_store

            problems = validate_store(study.store)
            steps["validation"] = problems if problems else "passed"
        except Exception as exc:
            steps["validation"] = f"skipped: {exc}"
    _figure(study, out_dir / "report" / "overview.png")
    elapsed = time.perf_counter() - t0
    (out_dir / "report" / "summary.json").write_text(json.dumps(steps, indent=2, default=str))
    return DemoSummary(
        out_dir=out_dir,
        store=study.store,
        n_images=len(info["images"]),
        steps=steps,
        mri_spacing_um=cfg.mri_spacing_um,
        twop_inplane_um=cfg.twop_spacing_um[1],
        elapsed_s=elapsed,
    )


def _registration(study: Any, report: Path) -> dict[str, Any]:
    from bridge_xr.model.pointmaps import fit
    from bridge_xr.register.accuracy import grid_points, inter_rater_rmse_um
    from bridge_xr.register.landmarks import arrays, read_csv
    from bridge_xr.register.registration import register
    from bridge_xr.report.compare import compare_models, plot_comparison
    from bridge_xr.scene.graph import map_points

    fixed, moving = "invivo_mri/d060/T2w", "twophoton/d060/angiogram"
    raters = [read_csv(p) for p in study.landmark_csvs]
    _, rep = register(
        study.store,
        fixed=fixed,
        moving=moving,
        landmarks=raters[0],
        model="tps",
        name="2p_to_mri",
        tre_map=True,
    )
    # the glioma channel shares the angiogram's space: the same landmarks register it (as in the paper)
    register(
        study.store,
        fixed=fixed,
        moving="twophoton/d060/glioma",
        landmarks=raters[0],
        model="tps",
        name="2p_glioma_to_mri",
    )
    (report / "registration.json").write_text(json.dumps(rep, indent=2))
    per_lm, per_ds, _omni, _pairs = compare_models(
        {f"rater{i + 1}": r for i, r in enumerate(raters)}
    )
    per_ds.to_csv(report / "model_comparison.csv", index=False)
    plot_comparison(per_lm, per_ds, report / "model_comparison.png")
    models = []
    for r in raters:
        _, f, m = arrays(r)
        models.append(fit("tps", f, m))
    fov = np.asarray(study.phantom.config.twop_fov_um)
    irr = inter_rater_rmse_um(
        models[0], models[1], grid_points(np.array([[0, fov[2]], [0, fov[1]], [0, fov[0]]]), 50)
    )
    q = np.random.default_rng(0).uniform(0.15 * fov, 0.85 * fov, size=(500, 3))  # 2P zyx µm
    truth_fixed = study.phantom.truth.inverse(q)  # exact MRI positions of 2P points
    mapped = map_points(study.store, truth_fixed, fixed, moving)  # TPS forward
    truth = q
    best = per_ds.groupby("model")["loo_tre_rms_um"].mean().idxmin()
    return {
        "rmse_um": rep["rmse_um"],
        "loo_tre_rms_um": rep["loo_tre_rms_um"],
        "certified_field_error_um": rep["certified_max_error_um"],
        "truth_rms_um": float(np.sqrt(np.mean(np.sum((mapped - truth) ** 2, axis=1)))),
        "inter_rater_rmse_um": irr["rmse_um"],
        "best_model": str(best),
    }


def _resample(study: Any, report: Path) -> dict[str, Any]:
    from bridge_xr.io.read import read_image
    from bridge_xr.io.subject import add_image
    from bridge_xr.model.metadata import ImageMetadata, Provenance
    from bridge_xr.report.registration_qc import registration_qc
    from bridge_xr.resampling.blockwise import resample

    fixed = "invivo_mri/d060/T2w"
    for ch in ("angiogram", "glioma"):
        img = resample(study.store, moving=f"twophoton/d060/{ch}", onto=fixed)
        meta = ImageMetadata(
            path=f"registered/d060/{ch}",
            modality="derived",
            session="d060",
            source=f"twophoton/d060/{ch} resampled onto {fixed}",
            provenance=Provenance.now("resample", **img.attrs["resample"]),
        )
        add_image(study.store, img, meta)
    vessel = read_image(study.store, "registered/d060/angiogram").values.astype(float)
    vf = study.phantom.vessel_fraction
    covered = vessel > 0
    # QC: checkerboard/overlay at the MRI grid with leave-one-out residual arrows, the same slice
    # with the MRI upsampled in-plane, and the bootstrap TRE map (report/registration_*.png)
    registration_qc(study.store, "2p_to_mri", report / "registration")
    return {"r_vessel_fraction": float(np.corrcoef(vf[covered], vessel[covered])[0, 1])}


def _correlation(study: Any, out_dir: Path, *, compare_exact: bool) -> dict[str, Any]:
    """Demo step 6: voxel correlation.

    Masks, NAGM z-score and tables with the fast ``resliced`` densities (nearest reslice of the
    2P through the TPS, then exact integration); on the tiny phantom also the ``exact`` footprint
    integration of the angiogram, to show how close the two are.
    """
    from bridge_xr.extract.study import extract_study
    from bridge_xr.extract.tables import analysis_mask, read_tables, zscore_normalize
    from bridge_xr.report.study import write_report
    from bridge_xr.stats.categories import DENSITY_BINS

    mri = "invivo_mri/d060/T2w"
    thresholds = {"angiogram": 1000.0, "glioma": 900.0}
    counts = analysis_mask(
        study.store,
        mri=mri,
        output="masks/d060/analysis",
        vessels="twophoton/d060/angiogram",
        vessel_threshold=thresholds["angiogram"],
        vessel_max=1.0,
        tumour="twophoton/d060/glioma",
        tumour_threshold=thresholds["glioma"],
        nagm_output="masks/d060/nagm",
        method="resliced",
    )
    zscore_normalize(study.store, image=mri, reference_mask="masks/d060/nagm", image_out=f"{mri}_z")
    tables = study.store.parent / "tables"
    extract_study(
        study.store.parent, tables, thresholds=thresholds, method="resliced", overwrite=True
    )
    report = write_report(study.store.parent, out_dir / "report" / "study")
    summary = json.loads((report.parent / "summary.json").read_text())
    df = read_tables(tables)
    full = df[df["coverage_angiogram"] > 0.999]
    truth = study.phantom.vessel_fraction[full.z, full.y, full.x]
    from bridge_xr.stats.group_tests import run_test

    ch = summary["channels"]
    # glioma against T2w where vessels do not confound it (< 5 % vessel volume), as the paper's
    # masks excluded vessels
    low = df[df["fraction_angiogram"] < 0.05]
    g_om, _ = run_test(
        low, response="mri_z", by="fraction_glioma", test="kruskal-dunn", bins=DENSITY_BINS
    )
    g_rho, _ = run_test(low, response="mri_z", by="fraction_glioma", test="spearman")
    exact_vs_resliced = None
    if compare_exact:
        from bridge_xr.extract.densities import density

        kw = {"microscopy": "twophoton/d060/angiogram", "mri": mri, "threshold": 1000.0}
        ex = density(study.store, method="exact", **kw)  # type: ignore[arg-type]
        rs = density(study.store, method="resliced", **kw)  # type: ignore[arg-type]
        ok = ex["coverage"].values > 0.999
        d = np.abs(ex["fraction"].values[ok] - rs["fraction"].values[ok])
        exact_vs_resliced = {"mean_abs": float(d.mean()), "max_abs": float(d.max())}
    return {
        "mask": counts,
        "exact_vs_resliced": exact_vs_resliced,
        "voxels": len(df),
        "r_vessel_truth": float(np.corrcoef(full["fraction_angiogram"], truth)[0, 1]),
        "vessel_rho": ch["angiogram"]["spearman_rho"],
        "vessel_kw_p": ch["angiogram"]["kruskal_p"],
        "glioma_rho": float(g_rho["statistic"].iloc[0]),
        "glioma_kw_p": float(g_om["p"].iloc[0]),
        "glioma_voxels": len(low),
        "glioma_medians": g_om.attrs["summary"].set_index("group")["median"].to_dict(),
        "report": str(report),
    }


def _longitudinal(out_dir: Path, seed: int) -> dict[str, Any]:
    from bridge_xr.extract.longitudinal import run_longitudinal
    from bridge_xr.io.subject import read_subject
    from bridge_xr.scene.chains import model_from_record
    from bridge_xr.testing.phantom import PhantomConfig
    from bridge_xr.testing.study import write_longitudinal_study

    root = out_dir / "longitudinal"
    ls = write_longitudinal_study(root, config=PhantomConfig.small(seed))
    df, regs, _ = run_longitudinal(
        ls.store, root / "study" / "tables", thresholds={"angiogram": 1000.0, "glioma": 900.0}
    )
    rec = read_subject(str(ls.store)).registrations[regs[0]["name"]]
    rot, t = ls.motions[1]
    p = np.random.default_rng(0).uniform([0, 0, 0], [180, 380, 380], size=(500, 3))
    got = model_from_record(rec).transform_points(p)
    err = np.linalg.norm(got - (p - t) @ rot, axis=1)
    later = df[df["session"] == ls.sessions[1]]
    return {
        "registration": regs[0],
        "motion_error_um": float(err.max()),
        "voxels": len(later),
        "mean_growth_percent_per_day": float(later["d_fraction_glioma_per_day"].mean() * 100),
        "growth_categories": {
            str(k): int(v) for k, v in later["growth_glioma"].value_counts().items()
        },
    }


def _learning(out_dir: Path, seed: int, *, short: bool) -> dict[str, Any]:
    """Demo step 8: learning vessels in MRI.

    Three phantom subjects with a coil bias in their MRI: export crops with 2P vessel truth,
    train nnU-Net's 2d configuration (fold 0, a short CPU schedule), evaluate against thresholded
    T2w, and predict vessels back into one subject store.
    """
    import time as _time

    from bridge_xr.learn import nnunet
    from bridge_xr.learn.dataset import export_dataset
    from bridge_xr.testing.phantom import PhantomConfig
    from bridge_xr.testing.study import write_analysis_study

    root = out_dir / "learning"
    subjects = ("L001", "L002", "L003")
    cfg = PhantomConfig.learning(seed)
    write_analysis_study(root, subjects, cfg)
    ds = export_dataset(
        root / "study", root / "nnunet_raw", spacing_um=(25.0, 25.0, 25.0),
        truth_threshold=1000.0, crop_yx=24, min_vessel=10, n_folds=3,
    )  # fmt: skip
    work = root / "nnunet_work"
    nnunet.plan(ds, work)  # runs nnU-Net's integrity check too
    epochs, iterations = (3, 5) if short else (20, 20)
    t0 = _time.perf_counter()
    nnunet.train(ds, work, 0, device="cpu", epochs=epochs, iterations=iterations)
    train_s = _time.perf_counter() - t0
    model = nnunet.model_folder(ds, work)
    cv = nnunet.write_fold_table(model, ds, out_dir / "report" / "learning_cv.json")
    return {
        "cases": len(list((ds / "labelsTr").glob("*.nii.gz"))),
        "schedule": {"epochs": epochs, "iterations": iterations, "train_s": train_s},
        "summary": cv["summary"],
        # vessel-wise (Figure 2J-K): calibre segments by 2P diameter, share found per category
        "visibility_by_diameter": cv.get("visibility", {}).get("by_diameter", []),
    }


def _learning_sentence(learning: dict[str, Any]) -> str:
    s = learning["summary"]
    if not s.get("cases"):
        return "Learning: no validation case. "
    med = {k: s.get(k, {}).get("median", float("nan")) for k in s if k != "cases"}
    return (
        f"nnU-Net (2d, fold 0, {learning['schedule']['epochs']}x"
        f"{learning['schedule']['iterations']} iterations on CPU, "
        f"{learning['schedule']['train_s']:.0f} s) on {learning['cases']} exported crops: "
        f"validation dilated Dice {med.get('dilated_dice', float('nan')):.3f} and MASD "
        f"{med.get('masd_um', float('nan')):.1f} µm vs thresholded T2w "
        f"{med.get('threshold_dilated_dice', float('nan')):.3f} / "
        f"{med.get('threshold_masd_um', float('nan')):.1f} µm. "
    )


def _figure(study: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ph = study.phantom
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    mid = ph.mri["T2w"].shape[0] // 2
    axes[0].imshow(ph.twophoton.values[0].max(axis=0), cmap="gray")
    axes[0].set_title("2P angiogram (MIP)")
    axes[1].imshow(ph.twophoton.values[1].max(axis=0), cmap="magma")
    axes[1].set_title("2P glioma (MIP)")
    axes[2].imshow(ph.mri["T2w"].values[mid], cmap="gray")
    axes[2].set_title(f"T2w MRI, slice {mid}")
    axes[3].imshow(ph.vessel_fraction[mid], cmap="viridis", vmin=0, vmax=1)
    axes[3].set_title("true vessel fraction per MRI voxel")
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
