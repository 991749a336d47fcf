"""Resample into the store: the image, its provenance and, through a TPS, its error-bound QC."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from bridge_xr._constants import block_error_path
from bridge_xr.io._plan import plan_storage
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import add_image, read_subject
from bridge_xr.model.grid import target_grid
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.resampling.blockwise import Order, block_errors, resample
from bridge_xr.scene.chains import Via

__all__ = ["resample_into"]

#: largest output block (bytes, all channels) that :func:`resample_into` samples in one task
BLOCK_BYTES_CAP = 16 * 2**20


def shard_blocks(
    shape: tuple[int, ...], spacing: tuple[float, ...], itemsize: int, n_channels: int = 1
) -> tuple[int, int, int]:
    """Resample blocks that tile the level-0 shards :func:`add_image` will write.

    The shard itself while it holds at most :data:`BLOCK_BYTES_CAP` (one task computes and writes
    it: no rechunk copy, fewer moving-region edges read twice), else the shard split in halves
    along its longest run of inner chunks until a block fits (each block within one shard).

    Examples
    --------
    >>> shard_blocks((256, 1024, 1024), (2.0, 1.2, 1.2), itemsize=2)
    (32, 512, 512)
    """
    plan = plan_storage(
        shape, ("z", "y", "x"), f"u{itemsize}", dict(zip("zyx", spacing, strict=False))
    )
    lv = plan.levels[0]
    block, chunk = list(lv.shards or lv.chunks), list(lv.chunks)
    while math.prod(block) * itemsize * n_channels > BLOCK_BYTES_CAP:
        ax = max(range(3), key=lambda d: block[d] // chunk[d])
        if block[ax] // chunk[ax] <= 1:
            break
        block[ax] = chunk[ax] * (block[ax] // chunk[ax] // 2)
    return block[0], block[1], block[2]


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
    grid = target_grid(read_image(store, onto), spacing_um)
    src_img = read_image(store, moving)
    n_c = int(src_img.sizes["c"]) if "c" in src_img.dims else 1
    blocks = shard_blocks(grid.shape, grid.spacing, src_img.dtype.itemsize, n_c)
    img = resample(
        where, moving=moving, onto=onto, spacing_um=spacing_um, order=order, labels=labels,
        level=level, via=via, chunks=blocks,
    )  # fmt: skip
    subject = read_subject(store)
    src = subject.images[moving]
    qc: dict[str, Any] = {}
    errs = None
    if any(subject.registrations[n].model == "tps" for n in img.attrs["resample"]["chain"]):
        errs = block_errors(
            where, moving=moving, onto=onto, spacing_um=spacing_um, via=via, chunks=blocks
        )
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
