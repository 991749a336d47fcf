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

from bridge_xr.testing.demo_steps import (
    _correlation,
    _exvivo,
    _figure,
    _learning,
    _learning_sentence,
    _longitudinal,
    _registration,
    _resample,
    _tiles,
)

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
            + f"Tile scan: {steps['tiles']['tiles']} tiles stitched to "
            f"{steps['tiles']['offset_rms_px']:.2f} voxels RMS of the known offsets and fused "
            f"({steps['tiles']['fused_shards']} shards). "
            + f"Ex vivo: {steps['exvivo']['sections']} sections registered one by one (2D TPS, "
            f"LOO TRE RMS {steps['exvivo']['loo_tre_rms_um']:.1f} µm; "
            f"{steps['exvivo']['truth_rms_um']:.1f} µm RMS from the known maps) and chained "
            f"through the ex vivo MRI to the in vivo MRI: tumour fraction in "
            f"{steps['exvivo']['chain_voxels']} in vivo voxels within "
            f"{steps['exvivo']['chain_density_mean_abs_error']:.3f} (mean) of the phantom, "
            f"accumulated landmark error {steps['exvivo']['chain_accumulated_error_um']:.1f} µm. "
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
    # long by design: the demo's ten steps, each one call, in order
    console_status: Status = status or (lambda text: contextlib.nullcontext())
    from bridge_xr.io.export import export_nifti, export_ome_zarr_05
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
    with console_status("1/11 phantom: vessel tree, glioma, 2P and MRI volumes, landmarks"):
        study = write_phantom_study(out_dir, cfg)
    steps["phantom"] = phantom_summary(study.phantom)
    with console_status("2/11 describing the subject store"):
        info = describe(study.store)
        (out_dir / "report").mkdir()
        (out_dir / "report" / "info.json").write_text(json.dumps(info, indent=2))
    with console_status("3/11 NIfTI round trip and OME-Zarr 0.5 export"):
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
    with console_status("4/11 registration: TPS from rater 1, model comparison, inter-rater"):
        steps["registration"] = _registration(study, out_dir / "report")
    with console_status("5/11 resampling 2P channels onto the MRI grid, QC figure"):
        steps["resample"] = _resample(study, out_dir / "report")
    with console_status(
        "6/11 voxel correlation: masks, NAGM z-score, exact densities, stats, report"
    ):
        steps["correlation"] = _correlation(study, out_dir, compare_exact=size == "tiny")
    with console_status("7/11 longitudinal: two sessions, rigid session registration, growth"):
        steps["longitudinal"] = _longitudinal(out_dir, seed)
    with console_status(
        "8/11 tile scan: stage layout, stitch (phase correlation), flat field, fuse"
    ):
        steps["tiles"] = _tiles(out_dir, seed)
    with console_status("9/11 ex vivo: sections registered slice by slice, chained to in vivo MRI"):
        steps["exvivo"] = _exvivo(out_dir, seed)
    with console_status("10/11 learning: nnU-Net 2d on MRI with 2P truth (export, train, predict)"):
        steps["learning"] = _learning(out_dir, seed, short=size == "tiny")
    with console_status("11/11 validating the whole store with ngff-zarr and ome-zarr-models"):
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
