"""Resample into the store: the image, its provenance and, through a TPS, its error-bound QC."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bridge_xr._constants import block_error_path
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.subject import add_image, read_subject
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.resampling.blockwise import Order, block_errors, resample
from bridge_xr.scene.chains import Via

__all__ = ["resample_into"]


def resample_into(
    where: StoreLike,
    *,
    moving: str,
    onto: str,
    image: str,
    spacing_um: tuple[float, float, float] | None = None,
    order: Order = 1,
    labels: bool = False,
    level: int | None = None,
    overwrite: bool = False,
    via: Via = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImageMetadata:
    """Resample ``moving`` onto ``onto`` (see :func:`resample`) and write it as ``image``.

    Through a TPS the certified mapping-error bound of every output block is written too, as
    the small image ``qc/<image>/block_error``, after the image itself (so a failed resample
    leaves nothing behind); its maximum is in the image's provenance.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    moving, onto : str
        Image to resample, and image whose grid to resample onto.
    image : str
        Output image path.
    spacing_um, order, labels, level, via
        As for :func:`resample`.
    overwrite : bool
        Replace an existing ``image``.
    progress : callable, optional
        ``progress(levels_done, levels_total)`` while the pyramid is written.

    Returns
    -------
    ImageMetadata
        The written image's metadata; ``provenance.parameters`` holds the chain, level,
        interpolation and, through a TPS, ``certified_max_error_um`` and ``block_error_image``.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> scene = tiny_scene(registered=True)
    >>> meta = resample_into(scene, moving="micro", onto="mri", image="registered/micro")
    >>> meta.provenance.parameters["chain"]
    ['micro_to_mri']
    """
    store = resolve_store(where)
    img = resample(
        where, moving=moving, onto=onto, spacing_um=spacing_um, order=order, labels=labels,
        level=level, via=via,
    )  # fmt: skip
    subject = read_subject(store)
    src = subject.images[moving]
    qc: dict[str, Any] = {}
    errs = None
    if any(subject.registrations[n].model == "tps" for n in img.attrs["resample"]["chain"]):
        errs = block_errors(where, moving=moving, onto=onto, spacing_um=spacing_um, via=via)
        errs = errs.copy(data=errs.values)
        qc = {
            "block_error_image": block_error_path(image),
            "certified_max_error_um": float(np.nanmax(errs.values)),
        }
    meta = ImageMetadata(
        path=image,
        modality="labels" if labels else "derived",
        kind="labels" if labels else "image",
        session=src.session,
        channel_names=src.channel_names,
        source=f"{moving} resampled onto {onto}",
        provenance=Provenance.now(
            "resample", inputs=(moving, onto), shape=list(img.shape), **img.attrs["resample"], **qc
        ),
    )
    add_image(
        where,
        img,
        meta,
        overwrite=overwrite,
        method="mode" if labels else "mean",
        progress=progress,
    )
    if errs is not None:
        add_image(
            where,
            errs,
            ImageMetadata(
                path=block_error_path(image),
                modality="derived",
                source=f"certified TPS mapping-error bound (µm) per output block of {image}",
                provenance=Provenance.now("resample block errors", inputs=(moving, onto)),
            ),
            overwrite=True,
            shards=False,
        )
    return meta
