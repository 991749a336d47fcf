"""``bridge lesions``: per-ROI lesion tables of thresholded probability maps in a subject store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import pandas as pd

from bridge_xr._dask import rechunk_method, scheduler
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.lesions.components import component_table
from bridge_xr.lesions.rois import polygon_labels
from bridge_xr.lesions.status import compare_status, read_status, roi_mri
from bridge_xr.model.units import conversion_factor


def _spacing_um(img: Any) -> tuple[float, float, float]:
    f = conversion_factor(img.attrs["unit"], "micrometer")
    return tuple(float(img.attrs["spacing"][d]) * f for d in "zyx")  # type: ignore[return-value]


@dataclass
class LesionTables:
    """What ``bridge lesions`` measures: one row per lesion, per (object, ROI), and the test."""

    lesions: pd.DataFrame
    rois: pd.DataFrame
    comparison: pd.DataFrame


def lesion_tables(
    where: StoreLike,
    *,
    objects: Mapping[str, float],
    roi_labels: str | None = None,
    rois: str | Path | pd.DataFrame | None = None,
    mri: str | None = None,
    positive_below: float | None = None,
    positive_fraction: float = 0.1,
    status: str | Path | None = None,
    via: Any = None,
    output: str | Path | None = None,
    roi_output: str | Path | None = None,
) -> LesionTables:
    """Lesions (connected components of ``image >= threshold``) per object and drawn ROI.

    Parameters
    ----------
    where : str, path or store
        The subject store.
    objects : mapping image -> threshold
        Probability maps (e.g. ilastik exports) and the threshold that makes an object.
    roi_labels : str, optional
        A label image on the objects' grid: lesions are counted inside each label (> 0)
        separately, cut at the ROI's border.
    rois : CSV path or DataFrame, optional
        Drawn polygons instead (:mod:`bridge_xr.lesions.rois`). Without either, the whole image
        is one ROI (``roi`` = 0).
    mri : str, optional
        Registered MRI that decides each ROI's status (:func:`bridge_xr.lesions.status.roi_mri`),
        with ``positive_below`` and ``positive_fraction``.
    status : CSV path, optional
        Or the status rated by eye: ``roi, mri_status`` (positive/negative) for every ROI.
    via : str or list, optional
        Registration chain from ``mri`` to the objects, when several join them.
    output, roi_output : str or path, optional
        Parquet files to write: per lesion, and per object and ROI (written only when all is
        measured, so a refused run leaves nothing behind).

    Returns
    -------
    LesionTables
        ``lesions``: ``object, threshold, roi, lesion, voxels, volume_um3, centroid_*_um,
        bbox_*``; ``rois``: ``object, roi, lesions, total_um3, median_um3`` (0 for an ROI
        without lesions) and, with a status, ``mri_status`` and the MRI measures;
        ``comparison``: Mann-Whitney U of ``lesions`` and ``total_um3``, positive against
        negative ROIs, per object (empty without a status).
    """
    if not objects:
        raise InvalidInputError("give at least one object image with its threshold")
    if roi_labels is not None and rois is not None:
        raise InvalidInputError("give drawn ROIs once: --roi-labels or --rois, not both")
    if mri is not None and status is not None:
        raise InvalidInputError("give the ROI status once: --mri (measured) or --status (rated)")
    if mri is not None and positive_below is None:
        raise InvalidInputError(
            "--mri needs --positive-below: the hypointensity threshold in the MRI's values "
            "(e.g. T2* in ms); there is no safe default"
        )
    if (mri is not None or status is not None) and roi_labels is None and rois is None:
        raise InvalidInputError("an MRI status is per drawn ROI; give --roi-labels or --rois")
    rated = read_status(status) if status is not None else None
    store = resolve_store(where)
    frames, per_roi = [], []
    grid_labels: tuple[str, da.Array, list[int]] | None = None
    for image, thr in objects.items():
        img = read_image(store, image)
        dims = tuple(str(d) for d in img.dims if str(d) in ("z", "y", "x"))
        if tuple(img.dims) != dims or len(dims) != 3:
            raise InvalidInputError(f"{image!r} has dims {img.dims}; lesions need one z, y, x map")
        mask = img.data >= thr
        roi_ids: list[int] = [0]
        labels = None
        if roi_labels is not None:
            lab = read_image(store, roi_labels)
            if tuple(lab.shape) != tuple(img.shape):
                raise InvalidInputError(
                    f"ROI labels {roi_labels!r} have shape {tuple(lab.shape)} but {image!r} has "
                    f"{tuple(img.shape)}; draw them on that image's grid"
                )
            labels = lab.data.rechunk(mask.chunks, method=rechunk_method())
        elif rois is not None:
            labels = polygon_labels(rois, img, chunks=mask.chunks)
        if labels is not None:
            roi_ids = [
                int(v) for v in da.unique(labels).compute(scheduler=scheduler()) if v > 0
            ]  # block by block
            if not roi_ids:
                raise InvalidInputError(f"the drawn ROIs cover no voxel of {image!r}")
            if grid_labels is None:
                grid_labels = (image, labels, roi_ids)
        for r in roi_ids:
            m = mask if labels is None else mask & (labels == r)
            t = component_table(m, _spacing_um(img))
            t.insert(0, "roi", r)
            t.insert(0, "threshold", float(thr))
            t.insert(0, "object", image)
            frames.append(t)
            per_roi.append({"object": image, "roi": r, "lesions": len(t),
                            "total_um3": float(t["volume_um3"].sum()),
                            "median_um3": float(t["volume_um3"].median()) if len(t) else 0.0})  # fmt: skip
    df = pd.concat(frames, ignore_index=True)
    roi_df = pd.DataFrame(per_roi)
    if rated is not None:
        missing = sorted(set(roi_df["roi"]) - set(rated["roi"]))
        extra = sorted(set(rated["roi"]) - set(roi_df["roi"]))
        if missing or extra:
            raise InvalidInputError(
                f"status table {str(status)!r} does not match the drawn ROIs: "
                f"unrated {missing}, not drawn {extra}"
            )
        roi_df = roi_df.merge(rated, on="roi", how="left")
    elif mri is not None and grid_labels is not None and positive_below is not None:
        grid, labels, ids = grid_labels
        measured = roi_mri(store, labels=labels, grid=grid, mri=mri, rois=ids,
                           positive_below=positive_below, positive_fraction=positive_fraction,
                           via=via)  # fmt: skip
        roi_df = roi_df.merge(measured.assign(mri=mri), on="roi", how="left")
    comparison = compare_status(roi_df) if "mri_status" in roi_df else pd.DataFrame()
    for table, path in ((df, output), (roi_df, roi_output)):
        if path is not None:
            out = Path(path)
            out.parent.mkdir(parents=True, exist_ok=True)
            table.to_parquet(out, index=False)
    return LesionTables(df, roi_df, comparison)


def lesion_table(
    where: StoreLike,
    *,
    objects: Mapping[str, float],
    roi_labels: str | None = None,
    output: str | Path | None = None,
) -> pd.DataFrame:
    """One row per lesion, per object and ROI: :func:`lesion_tables`'s ``lesions``.

    Examples
    --------
    >>> import numpy as np
    >>> from zarr.storage import MemoryStore
    >>> from bridge_xr.io.subject import add_image
    >>> from bridge_xr.model.image import make_image
    >>> from bridge_xr.model.metadata import ImageMetadata, Provenance
    >>> p = np.zeros((2, 8, 8), np.float32); p[0, 1:3, 1:3] = p[1, 5:7, 5:7] = 0.9
    >>> store = MemoryStore()
    >>> _ = add_image(store, make_image(p, dims="zyx", spacing=(2, 1, 1), unit="um"),
    ...           ImageMetadata(path="prob", modality="widefield",
    ...                         provenance=Provenance.now("doc")), levels=1)
    >>> lesion_table(store, objects={"prob": 0.5})["volume_um3"].tolist()
    [8.0, 8.0]
    """
    return lesion_tables(where, objects=objects, roi_labels=roi_labels, output=output).lesions


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
