"""The steps of the demo pipeline (:func:`bridge_xr.testing.demo.run_demo`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _registration(study: Any, report: Path) -> dict[str, Any]:
    from bridge_xr.model.pointmaps import fit
    from bridge_xr.register.accuracy import grid_points, inter_rater_rmse_um
    from bridge_xr.register.landmarks import arrays, read_csv
    from bridge_xr.register.registration import register
    from bridge_xr.report.compare import compare_models, plot_comparison
    from bridge_xr.scene.mapping import map_points

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
    from bridge_xr.report.qc import registration_qc
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
    # long by design: one demo step: masks, z-score, tables, tests, report, in order
    from bridge_xr.extract.masks import analysis_mask, zscore_normalize
    from bridge_xr.extract.study import extract_study
    from bridge_xr.extract.tables import read_tables
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
    from bridge_xr.stats.dispatch import run_test

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


def _tiles(out_dir: Path, seed: int) -> dict[str, Any]:
    """Demo step: a 2x3 tile scan with known sub-voxel offsets, stitched and fused."""
    import zarr

    from bridge_xr.testing.tiles import synthetic_scan
    from bridge_xr.tiles.convert import convert_tiles
    from bridge_xr.tiles.fusion import fuse
    from bridge_xr.tiles.stitching import stitch

    root = out_dir / "tiles"
    s = synthetic_scan(grid=(2, 3), subpixel=True, vignetting=0.3, seed=seed)
    paths = s.write_tiffs(root / "tiffs")
    store = root / "M001.ome.zarr"
    scan = "twophoton/d060/angiogram"
    report = out_dir / "report" / "tiles"
    report.mkdir(parents=True, exist_ok=True)
    convert_tiles(paths, store, scan, positions=root / "tiffs" / "positions.csv",
                  layout=report / "stage_layout.png")  # fmt: skip
    res = stitch(store, scan, flatfield=True, report=report)
    reg = np.array([t.registered_um for t in res.scan.tiles]) / np.array(s.spacing_um)
    err = reg - s.true_origin_px
    err -= err.mean(axis=0)
    fused = fuse(store, scan, f"{scan}_fused")
    out = zarr.open_array(store, path=f"{scan}_fused/s0")
    return {
        "tiles": len(paths),
        "links_used": res.summary["links_used"],
        "offset_rms_px": float(np.sqrt((err**2).sum(axis=1).mean())),
        "fused_shape": list(out.shape),
        "fused_shards": fused.shards_total,
        "report": str(report),
    }


def _exvivo(out_dir: Path, seed: int) -> dict[str, Any]:
    """Demo step: three sections registered slice by slice, chained to the in vivo MRI."""
    from bridge_xr.extract.densities import density
    from bridge_xr.register.registration import register
    from bridge_xr.report.slices_run import register_slices_with_report
    from bridge_xr.scene.mapping import map_points
    from bridge_xr.testing.exvivo import (
        invivo_landmarks,
        invivo_tumour_fraction,
        slice_scene,
        slice_truth,
    )

    store = out_dir / "exvivo" / "M002.ome.zarr"
    scene, lms = slice_scene(3, nonlinear=True, noise_um=1.0, invivo=True, where=store, seed=seed)
    truth = slice_truth(3, nonlinear=True, seed=seed)
    report = out_dir / "report" / "exvivo" / "slices.json"
    _, rep = register_slices_with_report(
        scene, fixed="exvivo_mri/T2w", moving="exvivo/slab03", landmarks=lms, model="tps",
        report=report, channel="DAPI",
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    xy = rng.uniform(150, 650, size=(300, 2))
    k = rng.integers(0, 3, 300)
    got = map_points(scene, np.column_stack([(k + 0.5) * 100.0, xy[:, 1], xy[:, 0]]),
                     "exvivo_mri/T2w", "exvivo/slab03")  # fmt: skip
    want = np.concatenate([truth.to_moving(int(kk), xy[i : i + 1]) for i, kk in enumerate(k)])
    err = np.linalg.norm(got[:, [2, 1]] - want, axis=1)
    register(scene, fixed="exvivo_mri/T2w", moving="invivo_mri/d060/T2w",
             landmarks=invivo_landmarks(truth), model="tps", name="invivo_to_exvivo")  # fmt: skip
    ds = density(scene, microscopy="exvivo/slab03", mri="invivo_mri/d060/T2w", channel="tumour",
                 threshold=0.5, method="resliced")  # fmt: skip
    fr, cov = ds["fraction"].values, ds["coverage"].values
    t = invivo_tumour_fraction(truth, fr.shape, sub=6)
    full = cov > 0.999
    chain = ds.attrs["density"]["chain_error"]
    return {
        "sections": len(rep["per_slice"]),
        "loo_tre_rms_um": rep["loo_tre_rms_um"],
        "truth_rms_um": float(np.sqrt(np.mean(err**2))),
        "chain_voxels": int(full.sum()),
        "chain_density_mean_abs_error": float(np.abs(fr[full] - t[full]).mean()),
        "chain_accumulated_error_um": chain["accumulated_um"],
        "report": str(report),
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
