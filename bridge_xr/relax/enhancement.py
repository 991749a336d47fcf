"""Per-ROI means of MRI images and percent signal enhancement (PSE) from pre/post contrast T1.

``PSE = (SI_post - SI_pre) / SI_pre x 100 %`` (the paper's Methods): as a map, voxel by voxel
(NaN where the pre-contrast signal is not positive), and per ROI from the ROI means (the paper's
sigmoid-sinus check of equal contrast uptake). Both images must be on one grid: resample one
onto the other first (``bridge resample``), so a voxel is never compared with its neighbour.
ROI statistics are sums per label, block by block (memory flat in the image size).

Examples
--------
>>> import numpy as np
>>> from zarr.storage import MemoryStore
>>> from bridge_xr.io.subject import add_image
>>> from bridge_xr.model.image import make_image
>>> from bridge_xr.model.metadata import ImageMetadata, Provenance
>>> store = MemoryStore()
>>> lab = np.zeros((1, 4, 4), np.uint8); lab[0, :2] = 1
>>> for path, data, kind in (("pre", np.full((1, 4, 4), 100.0), "image"),
...                          ("post", np.full((1, 4, 4), 345.0), "image"),
...                          ("sinus", lab, "labels")):
...     _ = add_image(store, make_image(data, dims="zyx", spacing=(1, 1, 1), unit="mm"),
...                   ImageMetadata(path=path, modality="mri", kind=kind,
...                                 provenance=Provenance.now("doc")), levels=1)
>>> pse(store, pre="pre", post="post", roi_labels="sinus")["rois"]["pse_percent"].round(6).tolist()
[245.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd

from bridge_xr._dask import rechunk_method, scheduler
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import read_image

__all__ = ["pse", "roi_means"]


def _sums(labels: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    lab = labels.ravel().astype(np.int64)
    val = values.ravel().astype(np.float64)
    ok = np.isfinite(val) & (lab > 0) & (lab < n)
    lab, val = lab[ok], val[ok]
    return np.stack([np.bincount(lab, minlength=n), np.bincount(lab, val, minlength=n),
                     np.bincount(lab, val * val, minlength=n)])  # fmt: skip


def _three_d(store: Any, image: str) -> Any:
    img = read_image(store, image)
    if tuple(str(d) for d in img.dims) != ("z", "y", "x"):
        raise InvalidInputError(f"{image!r} has dims {img.dims}; give one z, y, x image")
    return img


def roi_means(where: StoreLike, *, images: Sequence[str], roi_labels: str) -> pd.DataFrame:
    """Per image and ROI label (> 0): ``n`` voxels, ``mean`` and ``sd`` (ddof 1), NaNs skipped.

    Parameters
    ----------
    where : str, path or store
        The subject store.
    images : sequence of str
        Images on the label image's grid.
    roi_labels : str
        Label image of the ROIs (e.g. the sigmoid sinus drawn on the pre-contrast T1).

    Returns
    -------
    DataFrame
        ``image, roi, n, mean, sd``.
    """
    if not images:
        raise InvalidInputError("give at least one image to average")
    store = resolve_store(where)
    lab = _three_d(store, roi_labels)
    ids = [int(v) for v in da.unique(lab.data).compute(scheduler=scheduler()) if v > 0]
    if not ids:
        raise InvalidInputError(f"ROI labels {roi_labels!r} hold no label > 0")
    n = max(ids) + 1
    rows = []
    for image in images:
        img = _three_d(store, image)
        if tuple(img.shape) != tuple(lab.shape):
            raise InvalidInputError(
                f"{image!r} has shape {tuple(img.shape)} but ROI labels {roi_labels!r} have "
                f"{tuple(lab.shape)}; resample it onto their grid first (bridge resample)"
            )
        values = img.data.rechunk(lab.data.chunks, method=rechunk_method())
        parts = [dask.delayed(_sums)(lb, vb, n) for lb, vb in
                 zip(lab.data.to_delayed().ravel(), values.to_delayed().ravel(), strict=True)]  # fmt: skip
        count, total, sq = np.sum(dask.compute(*parts, scheduler=scheduler()), axis=0)
        for r in ids:
            c = count[r]
            mean = total[r] / c if c else float("nan")
            var = (sq[r] - c * mean * mean) / (c - 1) if c > 1 else float("nan")
            rows.append({"image": image, "roi": r, "n": int(c), "mean": mean,
                         "sd": float(np.sqrt(max(var, 0.0))) if c > 1 else float("nan")})  # fmt: skip
    return pd.DataFrame(rows)


def pse(
    where: StoreLike,
    *,
    pre: str,
    post: str,
    image_out: str | None = None,
    roi_labels: str | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Percent signal enhancement of ``post`` over ``pre``: a map and/or per-ROI values.

    Parameters
    ----------
    where : str, path or store
        The subject store.
    pre, post : str
        Pre- and post-contrast images on one grid.
    image_out : str, optional
        Write the PSE map (%) here, on ``pre``'s grid.
    roi_labels : str, optional
        Per ROI: PSE of the ROI means (``pse_percent``), with both means.
    output : str or path, optional
        CSV of the per-ROI table.
    overwrite : bool
        Replace a map already there.

    Returns
    -------
    dict
        ``image`` (the map path or None), ``rois`` (DataFrame ``roi, pre_mean, post_mean, n,
        pse_percent``, empty without ``roi_labels``).
    """
    if image_out is None and roi_labels is None:
        raise InvalidInputError("nothing to write: give an output map (image_out) or roi_labels")
    if output is not None and roi_labels is None:
        raise InvalidInputError("a PSE table is per ROI: give roi_labels with output")
    store = resolve_store(where)
    a, b = _three_d(store, pre), _three_d(store, post)
    if tuple(a.shape) != tuple(b.shape):
        raise InvalidInputError(
            f"{pre!r} {tuple(a.shape)} and {post!r} {tuple(b.shape)} are on different grids; "
            "resample one onto the other first (bridge resample)"
        )
    rois = pd.DataFrame(columns=["roi", "pre_mean", "post_mean", "n", "pse_percent"])
    if roi_labels is not None:
        means = roi_means(store, images=[pre, post], roi_labels=roi_labels)
        wide = means.pivot(index="roi", columns="image", values="mean")
        n = means[means["image"] == pre].set_index("roi")["n"]
        if (wide[pre] <= 0).any():
            bad = wide.index[wide[pre] <= 0].tolist()
            raise InvalidInputError(f"ROIs {bad} have a pre-contrast mean <= 0; PSE is undefined")
        rois = pd.DataFrame({
            "roi": wide.index.astype(int),
            "pre_mean": wide[pre].to_numpy(),
            "post_mean": wide[post].to_numpy(),
            "n": n.loc[wide.index].to_numpy(),
            "pse_percent": ((wide[post] - wide[pre]) / wide[pre] * 100.0).to_numpy(),
        })  # fmt: skip
    if image_out is not None:
        from bridge_xr.extract.masks import write_on_grid_of

        p = a.data.astype(np.float32)
        q = b.data.rechunk(a.data.chunks, method=rechunk_method()).astype(np.float32)
        pos = p > 0
        m = da.where(pos, (q - p) / da.where(pos, p, 1) * 100, np.nan).astype(np.float32)
        write_on_grid_of(store, pre, m, image_out, operation="pse", overwrite=overwrite,
                         pre=pre, post=post, unit_of_values="percent")  # fmt: skip
    if output is not None:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        rois.to_csv(out, index=False)
    return {"image": image_out, "rois": rois}
