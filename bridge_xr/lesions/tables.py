"""``bridge lesions``: per-ROI lesion tables of thresholded probability maps in a subject store."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import pandas as pd

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.lesions.components import component_table
from bridge_xr.model.units import conversion_factor


def _spacing_um(img: Any) -> tuple[float, float, float]:
    f = conversion_factor(img.attrs["unit"], "micrometer")
    return tuple(float(img.attrs["spacing"][d]) * f for d in "zyx")  # type: ignore[return-value]


def lesion_table(
    where: StoreLike,
    *,
    objects: Mapping[str, float],
    roi_labels: str | None = None,
    output: str | Path | None = None,
) -> pd.DataFrame:
    """One row per lesion (connected component of ``image >= threshold``), per object and ROI.

    Parameters
    ----------
    where : str, path or store
        The subject store.
    objects : mapping image -> threshold
        Probability maps (e.g. ilastik exports) and the threshold that makes an object.
    roi_labels : str, optional
        A label image on the same grid: lesions are counted inside each label (> 0) separately,
        cut at the ROI's border. Without it, the whole image is one ROI (``roi`` = 0).
    output : str or path, optional
        Parquet file to write.

    Returns
    -------
    DataFrame
        ``object, threshold, roi, lesion, voxels, volume_um3, centroid_*_um, bbox_*``.
    """
    if not objects:
        raise InvalidInputError("give at least one object image with its threshold")
    store = resolve_store(where)
    frames = []
    for image, thr in objects.items():
        img = read_image(store, image)
        dims = tuple(str(d) for d in img.dims if str(d) in ("z", "y", "x"))
        if tuple(img.dims) != dims or len(dims) != 3:
            raise InvalidInputError(f"{image!r} has dims {img.dims}; lesions need one z, y, x map")
        mask = img.data >= thr
        rois: list[int] = [0]
        labels = None
        if roi_labels is not None:
            lab = read_image(store, roi_labels)
            if tuple(lab.shape) != tuple(img.shape):
                raise InvalidInputError(
                    f"ROI labels {roi_labels!r} have shape {tuple(lab.shape)} but {image!r} has "
                    f"{tuple(img.shape)}; draw them on that image's grid"
                )
            labels = lab.data.rechunk(mask.chunks)
            rois = [int(v) for v in da.unique(labels).compute() if v > 0]  # block by block
            if not rois:
                raise InvalidInputError(f"ROI labels {roi_labels!r} hold no label > 0")
        for r in rois:
            m = mask if labels is None else mask & (labels == r)
            t = component_table(m, _spacing_um(img))
            t.insert(0, "roi", r)
            t.insert(0, "threshold", float(thr))
            t.insert(0, "object", image)
            frames.append(t)
    df = pd.concat(frames, ignore_index=True)
    if output is not None:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(out, index=False)
    return df


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per object and ROI: lesion count, total and median volume (µm³)."""
    return (
        df.groupby(["object", "roi"], sort=True)
        .agg(
            lesions=("lesion", "count"),
            total_um3=("volume_um3", "sum"),
            median_um3=("volume_um3", "median"),
        )
        .reset_index()
    )
