"""Longitudinal voxel tables: every session of a subject onto its first session.

Each later session's MRI is registered to the first session's MRI (rigid, intensity-based with
SimpleITK, stored as an ordinary scene edge so everything else reuses it). Then, on the first
session's grid, every session contributes its MRI (resampled through the edge), its microscopy
density (integrated exactly through the chain microscopy -> its MRI -> first MRI) and its
analysis mask (nearest); the voxels kept are those inside every session's mask (the paper's
"overlapping the masks of every timepoint"). Changes per day are taken against the first session,
and the glioma growth rate is binned as in Figure 4P-Q.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import SimpleITK as sitk

from bridge_xr._dask import scheduler
from bridge_xr.errors import InvalidInputError
from bridge_xr.extract.densities import density
from bridge_xr.extract.study import SessionPlan, plan_subject
from bridge_xr.extract.tables import channel_name
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject
from bridge_xr.model.pointmaps import LinearModel
from bridge_xr.model.units import conversion_factor
from bridge_xr.register.registration import register
from bridge_xr.scene.chains import Via, using
from bridge_xr.stats.categories import density_category

#: growth-rate categories of Figure 4P-Q, in percentage points of glioma density per day
GROWTH_BINS = (-2.0, 1.0, 4.0, 7.0)


def session_day(session: str, days: Mapping[str, float] | None = None) -> float:
    """``d060`` -> 60 (or the day given in ``days``)."""
    if days and session in days:
        return float(days[session])
    m = re.search(r"(\d+(?:\.\d+)?)", session)
    if not m:
        raise InvalidInputError(
            f"cannot read a day from session {session!r}; pass `days` ({session}=N)"
        )
    return float(m.group(1))


def _sitk(img: Any) -> sitk.Image:
    fac = conversion_factor(img.attrs["unit"], "micrometer")
    out = sitk.GetImageFromArray(np.asarray(img.values, dtype=np.float32))
    out.SetSpacing(tuple(float(img.attrs["spacing"][d]) * fac for d in "xyz"))
    out.SetOrigin(tuple(float(img.attrs["origin"][d]) * fac for d in "xyz"))
    return out


def rigid_register(
    store: StoreLike, *, fixed: str, moving: str, metric: str = "mi", seed: int = 0
) -> tuple[LinearModel, dict[str, Any]]:
    """Rigid fixed -> moving (µm xyz) by SimpleITK (Mattes MI or mean squares), centred start."""
    st = resolve_store(store)
    f = _sitk(read_image(st, fixed))
    m = _sitk(read_image(st, moving))
    init = sitk.CenteredTransformInitializer(
        f, m, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    reg = sitk.ImageRegistrationMethod()
    if metric == "mi":
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    elif metric == "ms":
        reg.SetMetricAsMeanSquares()
    elif metric == "cc":
        reg.SetMetricAsCorrelation()
    else:
        raise InvalidInputError(f"`metric` is mi, ms or cc; got {metric!r}")
    reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=300, relaxationFactor=0.6
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1, 0])
    reg.SetInitialTransform(init, inPlace=False)
    out = reg.Execute(f, m)
    tx = (
        sitk.CompositeTransform(out).GetNthTransform(0)
        if out.GetName() == "CompositeTransform"
        else out
    )
    euler = sitk.Euler3DTransform(tx)
    rot = np.asarray(euler.GetMatrix()).reshape(3, 3)
    centre = np.asarray(euler.GetCenter())
    trans = np.asarray(euler.GetTranslation())
    model = LinearModel("rigid", rot, centre + trans - rot @ centre)
    report = {
        "model": "rigid",
        "method": f"SimpleITK {metric} rigid, 2 levels",
        "metric_value": float(reg.GetMetricValue()),
        "iterations": int(reg.GetOptimizerIteration()),
        "stop": reg.GetOptimizerStopConditionDescription(),
        "rotation_deg": float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1)))),
        "translation_um": [float(v) for v in model.translation],
    }
    return model, report


def _anchor_landmarks(model: LinearModel, img: Any) -> pd.DataFrame:
    """Four points at the fixed image's corners and where the model puts them (record keeping)."""
    fac = conversion_factor(img.attrs["unit"], "micrometer")
    ext = np.array([[img.attrs["origin"][d] * fac for d in "xyz"],
                    [(img.attrs["origin"][d] + img.attrs["spacing"][d] * (img.sizes[d] - 1)) * fac
                     for d in "xyz"]])  # fmt: skip
    pts = np.array([ext[0], [ext[1, 0], ext[0, 1], ext[0, 2]], [ext[0, 0], ext[1, 1], ext[0, 2]],
                    [ext[0, 0], ext[0, 1], ext[1, 2]]])  # fmt: skip
    mov = model.forward_points(pts)
    return pd.DataFrame(
        {
            "name": [f"corner{i}" for i in range(4)],
            **{f"moving_{a}": mov[:, i] for i, a in enumerate("xyz")},
            **{f"fixed_{a}": pts[:, i] for i, a in enumerate("xyz")},
        }
    )


def register_sessions(
    store: StoreLike, plans: Sequence[SessionPlan], *, metric: str = "mi", overwrite: bool = False
) -> list[dict[str, Any]]:
    """Register every later session's MRI onto the first's (an edge ``long_<s>_to_<first>``)."""
    st = resolve_store(store)
    first = plans[0]
    existing = read_subject(st).registrations
    out = []
    for p in plans[1:]:
        name = f"long_{p.session}_to_{first.session}"
        if name in existing and not overwrite:
            out.append({"name": name, **existing[name].report, "reused": True})
            continue
        model, report = rigid_register(st, fixed=first.mri, moving=p.mri, metric=metric)
        lm = _anchor_landmarks(model, read_image(st, first.mri))
        register(st, fixed=first.mri, moving=p.mri, landmarks=lm, model="rigid", name=name,
                 precomputed=(model, report), overwrite=True)  # fmt: skip
        out.append({"name": name, **report})
    return out


def longitudinal_table(
    store: StoreLike,
    plans: Sequence[SessionPlan],
    *,
    days: Mapping[str, float] | None = None,
    thresholds: Mapping[str, float] | None = None,
    growth_channel: str = "glioma",
    growth_bins: Sequence[float] = GROWTH_BINS,
) -> pd.DataFrame:
    """Per-voxel values of every session on the first session's grid, with changes per day."""
    # long by design: sessions are resampled onto the first grid column by column, in table order
    from bridge_xr.resampling.blockwise import resample

    st = resolve_store(store)
    thresholds = dict(thresholds or {})
    first = plans[0]
    ref = read_image(st, first.mri)
    shape = ref.shape
    keep = da.ones(shape, dtype=bool, chunks=ref.data.chunks)
    per_session: list[dict[str, Any]] = []
    for p in plans:
        cols: dict[str, Any] = {}
        if p.session == first.session:
            cols["mri"] = ref.data.astype(np.float64)
            if p.mri_z:
                cols["mri_z"] = read_image(st, p.mri_z).data.astype(np.float64)
        else:
            cols["mri"] = resample(st, moving=p.mri, onto=first.mri, order=1).data
            if p.mri_z:
                cols["mri_z"] = resample(st, moving=p.mri_z, onto=first.mri, order=1).data
        for mic in p.microscopy:
            ch = channel_name(mic)
            thr = thresholds.get(ch, thresholds.get("*"))
            ds = density(st, microscopy=mic, mri=first.mri, threshold=thr)
            cols[f"fraction_{ch}"] = ds["fraction"].data
            cols[f"coverage_{ch}"] = ds["coverage"].data
            keep &= ds["coverage"].data >= 0.999
        if p.mask:
            if p.session == first.session:
                m = read_image(st, p.mask).data
            else:
                m = resample(st, moving=p.mask, onto=first.mri, labels=True).data
            keep &= m > 0
        per_session.append(cols)
    import dask

    names = [(i, n) for i, cols in enumerate(per_session) for n in cols]
    computed = dask.compute(keep, *[per_session[i][n] for i, n in names], scheduler=scheduler())
    keep_np = computed[0]
    for (i, n), value in zip(names, computed[1:], strict=True):
        per_session[i][n] = value
    if not keep_np.any():
        raise InvalidInputError("no voxel is inside every session's mask and microscopy")
    idx = np.nonzero(keep_np)
    frames = []
    for p, cols in zip(plans, per_session, strict=True):
        frame: dict[str, Any] = {
            "session": p.session,
            "day": session_day(p.session, days),
            "z": idx[0].astype(np.int32),
            "y": idx[1].astype(np.int32),
            "x": idx[2].astype(np.int32),
        }
        for name, arr in cols.items():
            frame[name] = np.asarray(arr)[idx]
        frames.append(pd.DataFrame(frame))
    df = pd.concat(frames, ignore_index=True)
    base = frames[0].set_index(["z", "y", "x"])
    key = pd.MultiIndex.from_frame(df[["z", "y", "x"]])
    dt = df["day"] - frames[0]["day"].iloc[0]
    value_cols = [c for c in df.columns if c == "mri" or c == "mri_z" or c.startswith("fraction_")]
    for col in value_cols:
        if col not in base.columns:
            continue
        delta = df[col].to_numpy() - base[col].reindex(key).to_numpy()
        df[f"d_{col}_per_day"] = np.where(dt > 0, delta / np.where(dt > 0, dt, 1), np.nan)
    gcol = f"d_fraction_{growth_channel}_per_day"
    if gcol in df.columns:
        edges = [float(b) for b in growth_bins]
        labels = [f"{edges[i]:g}-{edges[i + 1]:g}%" for i in range(len(edges) - 1)]
        df[f"growth_{growth_channel}"] = pd.cut(df[gcol] * 100, edges, labels=labels)
        df[f"category_{growth_channel}"] = density_category(df[f"fraction_{growth_channel}"])
    return df


def write_longitudinal(df: pd.DataFrame, output: str | Path, subject: str) -> list[Path]:
    """``output/longitudinal/subject=<s>/session=<t>/part-0.parquet`` (partitions replaced)."""
    import shutil

    root = Path(output) / "longitudinal" / f"subject={subject}"
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    written = []
    try:
        for session, part in df.groupby("session", sort=False):
            folder = tmp / f"session={session}"
            folder.mkdir(parents=True)
            part.drop(columns=["session"]).to_parquet(folder / "part-0.parquet", index=False)
            written.append(root / f"session={session}" / "part-0.parquet")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
        raise
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return written


def run_longitudinal(
    store: StoreLike,
    output: str | Path,
    *,
    days: Mapping[str, float] | None = None,
    thresholds: Mapping[str, float] | None = None,
    metric: str = "mi",
    growth_channel: str = "glioma",
    growth_bins: Sequence[float] = GROWTH_BINS,
    overwrite: bool = False,
    via: Via = None,
) -> tuple[pd.DataFrame, list[dict[str, Any]], list[Path]]:
    """Register sessions to the first, build the longitudinal table, write it.

    ``via``: registration names preferred where several chains join an image to an MRI.

    Parameters
    ----------
    store : Scene, str, path or zarr store
        A subject imaged in several sessions.
    output : str or path
        Tables folder.
    days : mapping session -> float, optional
        Day of each session (default: read from names like ``d060``).
    thresholds : mapping channel -> float, optional
        Binarisation per channel.
    metric : {'mi', 'ms', 'cc'}
        Rigid session registration metric.
    growth_channel : str
        Channel whose growth per day is categorised.
    growth_bins : sequence of float
        Growth category edges (%/day).
    overwrite : bool
        Replace existing outputs.
    via : str or list of str, optional
        Preferred registration names.

    Returns
    -------
    (DataFrame, list of dict, list of Path)
        The table, the session registrations, the files written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing.phantom import PhantomConfig
    >>> from bridge_xr.testing.study import write_longitudinal_study
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> s = write_longitudinal_study(root, config=PhantomConfig.tiny())
    >>> df, regs, _ = run_longitudinal(s.store, root / "tables")
    >>> sorted(df["session"].unique()), len(regs)
    (['d060', 'd074'], 1)
    """
    plans = sorted(plan_subject(str(store)), key=lambda p: session_day(p.session, days))
    if len(plans) < 2:
        raise InvalidInputError(
            f"{store} has {len(plans)} session(s) with registered microscopy; need at least 2"
        )
    regs = register_sessions(store, plans, metric=metric, overwrite=overwrite)
    with using(via):
        df = longitudinal_table(store, plans, days=days, thresholds=thresholds,
                                growth_channel=growth_channel, growth_bins=growth_bins)  # fmt: skip
    return df, regs, write_longitudinal(df, output, plans[0].subject)
