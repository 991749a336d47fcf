"""Masks and normalisation on the MRI grid: the analysis mask (NAGM / glioma), z-scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from bridge_xr._constants import SCANNER_RAS
from bridge_xr._dask import rechunk_method, scheduler
from bridge_xr.errors import InvalidInputError
from bridge_xr.extract.densities import density
from bridge_xr.extract.footprint import Method
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import open_group, read_image, read_multiscale_info
from bridge_xr.io.subject import add_image, read_subject
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.scene.chains import Via, used_registrations, with_via

#: labels of the analysis mask (0: excluded)
NAGM, GLIOMA = 1, 2


def _same_space(store: Any, path: str) -> list[tuple[Any, Any]]:
    info = read_multiscale_info(open_group(store, path))
    out = []
    for name, t in info.transforms.items():
        if name in info.systems and name == SCANNER_RAS:
            out.append((info.systems[name], t.model_copy(update={"input": None, "output": None})))
    return out


def write_on_grid_of(
    store: Any,
    like: str,
    data: Any,
    path: str,
    *,
    kind: str = "image",
    operation: str,
    overwrite: bool = False,
    **params: Any,
) -> ImageMetadata:
    """Write ``data`` (z, y, x) as an image on the grid (and scanner space) of image ``like``."""
    ref = read_image(store, like)
    subject = read_subject(store)
    src = subject.images.get(like)
    img = make_image(
        data,
        dims=("z", "y", "x"),
        spacing=tuple(ref.attrs["spacing"][d] for d in "zyx"),
        origin=tuple(ref.attrs["origin"][d] for d in "zyx"),
        unit=ref.attrs["unit"],
    )
    meta = ImageMetadata(
        path=path,
        modality=src.modality if src else "mri",
        kind=kind,
        session=src.session if src else None,
        provenance=Provenance.now(operation, inputs=(like,), image=path, **params),
    )
    add_image(
        store,
        img,
        meta,
        extra_systems=_same_space(store, like),
        overwrite=overwrite,
        method="mode" if kind == "labels" else "mean",
        shards=False,
        compressor="zstd",
    )
    return meta


def _mask_on_grid(store: Any, mask: str, like: str) -> da.Array:
    """The mask image's data, refused unless it is on the grid of image ``like``."""
    m = read_image(store, mask)
    ref = read_image(store, like)
    if tuple(m.shape) != tuple(ref.shape):
        raise InvalidInputError(
            f"mask {mask!r} has shape {tuple(m.shape)} but {like!r} has {tuple(ref.shape)}; "
            "make it on that grid with `bridge mask`"
        )
    return m.data


def _mask_values(store: Any, mask: str, like: str, label: int | None) -> da.Array:
    data = _mask_on_grid(store, mask, like)
    return (data == label) if label is not None else (data > 0)


def zscore_normalize(
    store: StoreLike,
    *,
    image: str,
    reference_mask: str,
    image_out: str,
    label: int | None = None,
    overwrite: bool = False,
) -> dict[str, float]:
    """Z = (I - mean_ref) / sd_ref over the reference-mask voxels; writes ``image_out``."""
    st = resolve_store(store)
    img = read_image(st, image)
    sel = _mask_values(st, reference_mask, image, label)
    vals = img.data.astype(np.float64)
    n, s1, s2 = dask.compute(
        sel.sum(),
        da.where(sel, vals, 0).sum(),
        da.where(sel, vals**2, 0).sum(),
        scheduler=scheduler(),
    )
    n = int(n)
    if n < 2:
        raise InvalidInputError(
            f"reference mask {reference_mask!r} selects {n} voxels of {image!r}; need at least 2"
        )
    mean = float(s1 / n)
    sd = float(np.sqrt(max(s2 / n - mean**2, 0.0) * n / (n - 1)))
    if sd == 0:
        raise InvalidInputError(
            f"{image!r} is constant inside {reference_mask!r}; cannot z-normalise"
        )
    z = ((vals - mean) / sd).astype(np.float32)
    stats: dict[str, Any] = {"mean": mean, "sd": sd, "n_voxels": n}
    write_on_grid_of(
        st,
        image,
        z,
        image_out,
        operation="normalize (z, NAGM)",
        overwrite=overwrite,
        reference_mask=reference_mask,
        label=label,
        **stats,
    )
    return stats


@with_via
def analysis_mask(
    store: StoreLike,
    *,
    mri: str,
    output: str,
    vessels: str | None = None,
    vessel_threshold: float | None = None,
    vessel_max: float = 0.05,
    tumour: str | None = None,
    tumour_threshold: float | None = None,
    artefacts: Sequence[str] = (),
    min_coverage: float = 0.999,
    nagm_output: str | None = None,
    overwrite: bool = False,
    method: Method = "exact",
    via: Via = None,
) -> dict[str, int]:
    """Label image on the MRI grid: 0 excluded, 1 normal-appearing grey matter, 2 glioma.

    A voxel is kept when the microscopy covers it (``min_coverage``), its vessel volume fraction
    is at most ``vessel_max`` and no artefact label touches it; it is glioma when its tumour
    fraction is above 0. ``via``: registrations to map through where several chains join an
    image to the MRI (recorded in the mask's provenance with every registration used).

    Parameters
    ----------
    store : Scene, str, path or zarr store
        The subject.
    mri : str
        The MRI image whose grid the mask is on.
    output : str
        Label image path to write.
    vessels, tumour : str, optional
        Microscopy images of vessels and tumour.
    vessel_threshold, tumour_threshold : float, optional
        Binarise them above these intensities.
    vessel_max : float
        Largest vessel volume fraction kept (the paper: 5 %).
    artefacts : sequence of str
        Label images whose voxels are excluded.
    min_coverage : float
        Least covered fraction of a voxel kept.
    nagm_output : str, optional
        Also write the NAGM-only mask here.
    overwrite, method, via
        Replace outputs; density method; registration names.

    Returns
    -------
    dict
        Voxel counts per label.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> counts = analysis_mask(tiny_scene(registered=True), mri="mri", output="masks/analysis",
    ...                        vessels="micro", vessel_threshold=100, vessel_max=1.0, min_coverage=0.5)
    >>> sorted(counts)
    ['excluded', 'glioma', 'nagm']
    """
    st = resolve_store(store)
    ref = read_image(st, mri)
    keep = da.ones(ref.shape, dtype=bool, chunks=ref.data.chunks)
    glioma = da.zeros(ref.shape, dtype=bool, chunks=ref.data.chunks)
    sources = [p for p in (vessels, tumour) if p]
    if not sources:
        raise InvalidInputError("give `vessels` and/or `tumour`: the mask is built from microscopy")
    for path, thr in ((vessels, vessel_threshold), (tumour, tumour_threshold)):
        if not path:
            continue
        ds = density(st, microscopy=path, mri=mri, threshold=thr, method=method)
        cov = ds["coverage"].data.rechunk(ref.data.chunks, method=rechunk_method())
        frac = ds["fraction"].data.rechunk(ref.data.chunks, method=rechunk_method())
        keep &= cov >= min_coverage
        if path == vessels:
            keep &= da.where(da.isnan(frac), 1.0, frac) <= vessel_max
        else:
            glioma |= da.where(da.isnan(frac), 0.0, frac) > 0
    for art in artefacts:
        ds = density(st, microscopy=art, mri=mri, threshold=0.0, method=method)
        art_frac = ds["fraction"].data.rechunk(ref.data.chunks, method=rechunk_method())
        keep &= ~(da.where(da.isnan(art_frac), 0.0, art_frac) > 0)
    labels = da.where(keep, da.where(glioma, GLIOMA, NAGM), 0).astype(np.uint8)
    labels = labels.persist(scheduler=scheduler())
    params = {
        "vessels": vessels,
        "vessel_threshold": vessel_threshold,
        "vessel_max": vessel_max,
        "tumour": tumour,
        "tumour_threshold": tumour_threshold,
        "artefacts": list(artefacts),
        "min_coverage": min_coverage,
        "method": method,
        "registrations": used_registrations(),
    }
    write_on_grid_of(
        st,
        mri,
        labels,
        output,
        kind="labels",
        operation="mask (analysis)",
        overwrite=overwrite,
        **params,
    )
    if nagm_output:
        write_on_grid_of(
            st,
            mri,
            (labels == NAGM).astype(np.uint8),
            nagm_output,
            kind="labels",
            operation="mask (NAGM)",
            overwrite=overwrite,
            source_mask=output,
        )
    counts = np.bincount(np.asarray(labels).ravel(), minlength=3)
    return {"excluded": int(counts[0]), "nagm": int(counts[NAGM]), "glioma": int(counts[GLIOMA])}


def _is_analysis(store: Any, mask: str) -> bool:
    m = read_subject(store).images.get(mask)
    return bool(m and m.provenance.operation == "mask (analysis)")
