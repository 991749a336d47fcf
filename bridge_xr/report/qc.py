"""QC figures: checkerboard and overlay of fixed vs resampled moving, landmark residuals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _norm(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [1, 99])
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)


def qc_figure(
    fixed: np.ndarray,
    moving_resampled: np.ndarray,
    path: Path,
    *,
    residuals_xy: np.ndarray | None = None,
    landmarks_xy: np.ndarray | None = None,
    title: str = "",
    tiles: int = 6,
) -> Path:
    """Save a PNG: fixed, resampled moving, checkerboard, overlay, and landmark residual arrows.

    ``fixed`` and ``moving_resampled`` are 2D slices on the same grid; ``landmarks_xy`` and
    ``residuals_xy`` are (N, 2) positions and residual vectors in that slice's pixel units.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, m = _norm(np.asarray(fixed, float)), _norm(np.asarray(moving_resampled, float))
    yy, xx = np.indices(f.shape)
    ty, tx = max(1, f.shape[0] // tiles), max(1, f.shape[1] // tiles)
    checker = np.where(((yy // ty) + (xx // tx)) % 2 == 0, f, m)
    overlay = np.stack([m, f, m], axis=-1)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    panels: list[tuple[Any, str]] = [
        (f, "fixed (MRI)"),
        (m, "moving, resampled"),
        (checker, "checkerboard"),
        (overlay, "overlay: MRI green, moving magenta"),
    ]
    for ax, (img, name) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap=None if img.ndim == 3 else "gray", interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    if landmarks_xy is not None and residuals_xy is not None and len(landmarks_xy):
        axes[3].quiver(
            landmarks_xy[:, 0],
            landmarks_xy[:, 1],
            residuals_xy[:, 0],
            residuals_xy[:, 1],
            color="yellow",
            angles="xy",
            scale_units="xy",
            scale=1,
        )
        axes[3].scatter(landmarks_xy[:, 0], landmarks_xy[:, 1], s=8, c="yellow")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plane(img: Any, z: int) -> np.ndarray:
    """One z plane (first channel) as float, NaN as 0; computes only the blocks it needs."""
    sl = img.isel(z=z)
    if "c" in sl.dims:
        sl = sl.isel(c=0)
    return np.nan_to_num(np.asarray(sl.values, dtype=float))


def registration_qc(where: Any, name: str, prefix: Path) -> dict[str, Any]:
    """Draw the QC figures of a stored registration.

    QC figures of a stored registration, saved as ``<prefix>_qc.png``, ``<prefix>_qc_fine.png``
    and (when a TRE map was written) ``<prefix>_tre.png``.

    The slice is the fixed image's z slice nearest the landmarks' median depth. ``_qc``: fixed,
    moving resampled through the registration, checkerboard and overlay at the fixed grid, with
    every landmark within 1.5 slices drawn on the overlay and its leave-one-out residual (where the
    fit without it puts it, minus where it is; moving space) as an arrow, exaggerated by the factor
    in the title. ``_qc_fine``: the same slice resampled with in-plane spacing up to 4x finer (both
    images through the same lazy resampler; only that slice is computed). ``_tre``: the bootstrap
    TRE map at that depth with the landmarks.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    name : str
        A stored registration.
    prefix : Path
        Figures are ``<prefix>_qc.png`` ...

    Returns
    -------
    dict
        The figure paths and the slice drawn.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing import tiny_scene
    >>> figs = registration_qc(tiny_scene(registered=True), "micro_to_mri",
    ...                        pathlib.Path(tempfile.mkdtemp()) / "reg")
    >>> pathlib.Path(figs["qc"]).is_file()
    True
    """
    # long by design: three figures drawn from one resampled slice; matplotlib code reads best in sequence
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bridge_xr.io._store import resolve_store
    from bridge_xr.io.read import read_image
    from bridge_xr.io.subject import read_subject
    from bridge_xr.model.image import physical_extent
    from bridge_xr.model.units import conversion_factor
    from bridge_xr.register.accuracy import loo_residuals_um
    from bridge_xr.resampling.blockwise import resample

    store = resolve_store(where)
    subject = read_subject(store)
    rec = subject.registrations[name]
    fimg = read_image(store, rec.fixed)
    fac = conversion_factor(fimg.attrs["unit"], "micrometer")
    sp = np.array([fimg.attrs["spacing"][d] for d in "zyx"], float) * fac
    org = np.array([fimg.attrs["origin"][d] for d in "zyx"], float) * fac
    f_pts = np.array([lm.fixed for lm in rec.landmarks.landmarks], float).reshape(-1, 3)
    m_pts = np.array([lm.moving for lm in rec.landmarks.landmarks], float).reshape(-1, 3)
    idx = (f_pts[:, ::-1] - org) / sp  # zyx voxel index of every fixed landmark
    nz = int(fimg.sizes["z"])
    z = int(np.clip(np.rint(np.median(idx[:, 0])), 0, nz - 1)) if len(idx) else nz // 2
    moved = resample(store, moving=rec.moving, onto=rec.fixed, nan_outside=True, via=[name])
    fixed_slice = _plane(fimg, z)
    moving_slice = _plane(moved, z)
    near = np.abs(idx[:, 0] - z) <= 1.5
    res = np.zeros_like(f_pts)
    if len(f_pts) > 4:
        res = loo_residuals_um(
            rec.model,
            f_pts,
            m_pts,
            kernel=rec.kernel or "r",
            smoothing=float(rec.smoothing or 0.0),
        )
    res_px = res[:, :2] / sp[[2, 1]]
    longest = float(np.max(np.linalg.norm(res_px[near], axis=1))) if near.any() else 0.0
    exaggerate = max(1.0, 0.1 * max(fixed_slice.shape) / longest) if longest > 0 else 1.0
    exaggerate = float(10 ** np.floor(np.log10(exaggerate)))
    out: dict[str, Any] = {"slice": z, "landmarks_on_slice": int(near.sum())}
    out["qc"] = str(
        qc_figure(
            fixed_slice,
            moving_slice,
            Path(f"{prefix}_qc.png"),
            landmarks_xy=idx[near][:, [2, 1]],
            residuals_xy=res_px[near] * exaggerate,
            title=f"{name}: {rec.moving} onto {rec.fixed}, slice z={z}; arrows = leave-one-out "
            f"residuals x{exaggerate:g}",
        )
    )
    factor = int(max(1, min(4, 2048 // max(fixed_slice.shape))))
    fine = (float(sp[0]), float(sp[1] / factor), float(sp[2] / factor))
    f_fine = resample(store, moving=rec.fixed, onto=rec.fixed, spacing_um=fine)
    m_fine = resample(
        store, moving=rec.moving, onto=rec.fixed, spacing_um=fine, nan_outside=True, via=[name]
    )
    out["qc_fine"] = str(
        qc_figure(
            _plane(f_fine, z),
            _plane(m_fine, z),
            Path(f"{prefix}_qc_fine.png"),
            title=f"{name}, slice z={z} at {fine[2]:.3g} µm in-plane (fixed upsampled)",
            tiles=10,
        )
    )
    tre_path = f"qc/{name}/tre_map"
    if tre_path in subject.images:
        tre = read_image(store, tre_path)
        tfac = conversion_factor(tre.attrs["unit"], "micrometer")
        zc = (org[0] + z * sp[0]) / tfac
        tz = int(
            np.clip(
                np.rint((zc - tre.attrs["origin"]["z"]) / tre.attrs["spacing"]["z"]),
                0,
                tre.sizes["z"] - 1,
            )
        )
        tre_slice = _plane(tre, tz)
        ext = physical_extent(tre)
        ext_x = (ext["x"][0] * tfac, ext["x"][1] * tfac)
        ext_y = (ext["y"][0] * tfac, ext["y"][1] * tfac)
        fig, ax = plt.subplots(figsize=(6, 5))
        shown = ax.imshow(
            tre_slice, origin="upper", extent=(*ext_x, ext_y[1], ext_y[0]), cmap="magma"
        )
        ax.scatter(f_pts[:, 0], f_pts[:, 1], s=10, c="cyan", label="landmarks (all depths)")
        fig.colorbar(shown, ax=ax, label="bootstrap TRE (µm)")
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
        ax.set_title(f"{name}: TRE map at z = {zc * tfac:.0f} µm")
        ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        out["tre"] = f"{prefix}_tre.png"
        fig.savefig(out["tre"], dpi=100)
        plt.close(fig)
    return out
