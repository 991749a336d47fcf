"""``bridge register-slices`` as one call: fit every section, store, report, QC figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.jsonio import write_json
from bridge_xr.model.metadata import Registration
from bridge_xr.model.pointmaps import Kernel
from bridge_xr.model.slices import PlaneModel
from bridge_xr.register.slices import register_slices, slice_error_figure

__all__ = ["register_slices_with_report", "slice_overlay_figure"]


def slice_overlay_figure(
    where: StoreLike, rec: Registration, path: str | Path, *, channel: str | int | None = None
) -> None:
    """Each registered section over its MRI slice: MRI, section (registered), checkerboard.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    rec : Registration
        A slice-by-slice registration.
    path : str or path
        PNG to write.
    channel : str or int, optional
        Section channel to show (default the first).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing.exvivo import slice_scene
    >>> scene, lms = slice_scene(2)
    >>> rec, _ = register_slices(scene, fixed="exvivo_mri/T2w", moving="exvivo/slab03",
    ...                          landmarks=lms, model="affine")
    >>> slice_overlay_figure(scene, rec, pathlib.Path(tempfile.mkdtemp()) / "o.png", channel="DAPI")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bridge_xr.io.read import read_image
    from bridge_xr.resampling.blockwise import resample

    store = resolve_store(where)
    mri = read_image(store, rec.fixed)
    reg = resample(store, moving=rec.moving, onto=rec.fixed, nan_outside=True, via=[rec.name])
    if "c" in reg.dims:
        names = [str(c) for c in reg.c.values]
        if isinstance(channel, str) and channel not in names:
            raise InvalidInputError(f"{rec.moving!r} has channels {names}; not {channel!r}")
        reg = reg.sel(c=channel) if isinstance(channel, str) else reg.isel(c=channel or 0)
    rows = rec.report.get("per_slice", [])
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), dpi=100, squeeze=False)

    def norm(a: np.ndarray) -> np.ndarray:
        lo, hi = np.nanpercentile(a, [1, 99]) if np.isfinite(a).any() else (0.0, 1.0)
        return np.clip((a - lo) / ((hi - lo) or 1.0), 0, 1)

    for ax, row in zip(axes, rows, strict=True):
        j = int(row["mri_slice"]) - 1
        m = norm(np.asarray(mri.isel(z=j).values, dtype=np.float64))
        s = norm(np.asarray(reg.isel(z=j).values, dtype=np.float64))
        yy, xx = np.indices(m.shape)
        tile = max(2, m.shape[1] // 8)
        check = np.where(((yy // tile + xx // tile) % 2) == 0, m, np.nan_to_num(s))
        for a, img, title in zip(
            ax, (m, s, check), (f"MRI slice {j + 1}", f"section {row['section']}", "checkerboard"),
            strict=True,
        ):  # fmt: skip
            a.imshow(img, cmap="gray")
            a.set_title(title, fontsize=9)
            a.axis("off")
    fig.suptitle(f"{rec.name}: sections on {rec.fixed}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def register_slices_with_report(
    where: StoreLike,
    *,
    fixed: str,
    moving: str,
    landmarks: pd.DataFrame,
    model: PlaneModel = "tps",
    name: str = "slices",
    kernel: Kernel = "r2logr",
    smoothing: float = 0.0,
    field_spacing_um: float | None = None,
    overwrite: bool = False,
    current: bool = False,
    report: Path | None = None,
    channel: str | None = None,
) -> tuple[Registration, dict[str, Any]]:
    """:func:`~bridge_xr.register.slices.register_slices`, then a JSON report and QC figures.

    Parameters
    ----------
    where, fixed, moving, landmarks, model, name, kernel, smoothing, field_spacing_um
        As for :func:`~bridge_xr.register.slices.register_slices`.
    overwrite, current
        As for :func:`~bridge_xr.register.slices.register_slices`.
    report : path, optional
        JSON report; beside it ``<stem>_errors.png`` (RMSE and LOO TRE per section) and
        ``<stem>_overlay.png`` (each section on its MRI slice).
    channel : str, optional
        Section channel for the overlay (the one the landmarks were placed on, e.g. DAPI).

    Returns
    -------
    (Registration, dict)

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing.exvivo import slice_scene
    >>> scene, lms = slice_scene(2)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "slices.json"
    >>> rec, rep = register_slices_with_report(scene, fixed="exvivo_mri/T2w",
    ...     moving="exvivo/slab03", landmarks=lms, model="affine", report=out, channel="DAPI")
    >>> sorted(p.name for p in out.parent.iterdir())
    ['slices.json', 'slices_errors.png', 'slices_overlay.png']
    """
    rec, rep = register_slices(
        where, fixed=fixed, moving=moving, landmarks=landmarks, model=model, name=name,
        kernel=kernel, smoothing=smoothing, field_spacing_um=field_spacing_um,
        overwrite=overwrite, current=current,
    )  # fmt: skip
    if report is not None:
        report = Path(report)
        report.parent.mkdir(parents=True, exist_ok=True)
        write_json({"registration": rec.name, "fixed": fixed, "moving": moving, **rep}, report)
        slice_error_figure(rep, report.with_name(f"{report.stem}_errors.png"))
        slice_overlay_figure(
            where, rec, report.with_name(f"{report.stem}_overlay.png"), channel=channel
        )
    return rec, rep
