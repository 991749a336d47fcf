"""``bridge relax``: T2 / T2* maps of a multi-echo image of a subject store, block by block.

The echoes are the channels of one image (as ``bridge convert`` writes a multi-echo Bruker
series). Echo times come from the image's acquisition metadata (``echo_times_ms``) or its channel
names (``TE 2.6 ms``); ``echo_times_ms`` given by the user must agree with them, and is required
where the store has none. The fit runs lazily per spatial block (dask), every echo of a block
together; the maps are written on the grid (and scanner space) of the echo image:

* ``IMAGE_OUT`` — T2 or T2* in ms (NaN outside the mask and where the signal does not decay);
* ``IMAGE_OUT_S0`` — the fitted signal at TE = 0;
* ``IMAGE_OUT_nrmse`` — the RMS residual relative to S0 (fit quality).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any, Literal

import dask.array as da
import numpy as np

from bridge_xr._dask import rechunk_method, scheduler
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject
from bridge_xr.relax.fitting import MODELS, Model, fit_t2

_TE_NAME = re.compile(r"TE\s*([0-9.eE+-]+)\s*ms")
#: voxels per fitted block (each holds ~20 float64 temporaries per echo)
_BLOCK_VOXELS = 32768
#: echo times may differ from the store's by this much (rounding)
_AGREE_MS = 1e-3


def echo_times(store: Any, image: str, given: Sequence[float] | None = None) -> np.ndarray:
    """The echo times (ms) of a multi-echo image: the store's, checked against ``given``."""
    meta = read_subject(store).images.get(image)
    if meta is None:
        raise InvalidInputError(f"no image {image!r} in the store")
    found: list[float] | None = meta.acquisition.extra.get("echo_times_ms")
    img = read_image(store, image)
    axis = "c" if "c" in img.dims else "t"
    if axis not in img.dims:
        raise InvalidInputError(f"{image!r} has one echo (no channel axis); a fit needs several")
    if (
        axis == "t" and not found and given is None
    ):  # a 4-D NIfTI: volumes are echoes only when a sidecar says so
        raise InvalidInputError(
            f"{image!r} has a t axis but no echo times for it; convert it with its BIDS sidecar "
            "(EchoTime list), or pass `echo_times` if its volumes are echoes"
        )
    n = img.sizes[axis]
    if not found:
        names = [str(c) for c in img.coords["c"].values] if "c" in img.coords else []
        parsed = [_TE_NAME.search(nm) for nm in names]
        if names and all(parsed):
            found = [float(m.group(1)) for m in parsed if m]
    if given is not None:
        g = [float(t) for t in given]
        if found and (len(found) != len(g) or np.abs(np.subtract(found, g)).max() > _AGREE_MS):
            raise InvalidInputError(
                f"{image!r} states echo times {found} ms but `echo_times` says {g}; drop "
                "`echo_times` or correct it"
            )
        found = g
    if not found:
        raise InvalidInputError(f"{image!r} states no echo times; pass `echo_times` (ms)")
    if len(found) != n:
        raise InvalidInputError(f"{image!r} has {n} echoes but {len(found)} echo times")
    te = np.asarray(found, dtype=np.float64)
    if np.any(np.diff(te) <= 0):
        raise InvalidInputError(f"echo times of {image!r} must increase: {te.tolist()}")
    return te


def background_sigma(store: Any, image: str, background: str) -> float:
    """Noise std from a mask of signal-free voxels: Rayleigh mean / sqrt(pi/2), all echoes."""
    data = read_image(store, image).data
    bg = read_image(store, background).data > 0
    if tuple(bg.shape) != tuple(data.shape[1:]):
        raise InvalidInputError(
            f"background {background!r} has shape {tuple(bg.shape)}; {image!r} has "
            f"{tuple(data.shape[1:])} per echo"
        )
    total = da.where(bg[None], data.astype(np.float64), 0).sum()
    count = bg.sum() * data.shape[0]
    s, c = da.compute(total, count, scheduler=scheduler())
    if c == 0:
        raise InvalidInputError(f"background mask {background!r} is empty")
    return float(s / c / np.sqrt(np.pi / 2))


def _fit_block(block: np.ndarray, mask: np.ndarray | None, te: np.ndarray, model: Model,
               sigma: float | None) -> np.ndarray:  # fmt: skip
    out = np.full((3, *block.shape[1:]), np.nan, dtype=np.float32)
    keep = np.ones(block.shape[1:], bool) if mask is None else mask.astype(bool)
    if keep.any():
        t2, s0, q = fit_t2(block[:, keep], te, model=model, sigma=sigma)
        out[0][keep], out[1][keep], out[2][keep] = t2, s0, q
    return out


def relax(
    where: StoreLike,
    *,
    echoes: str,
    image_out: str,
    kind: Literal["t2", "t2star"] = "t2star",
    fit: Model = "rician",
    echo_times_ms: Sequence[float] | None = None,
    noise_sigma: float | None = None,
    background: str | None = None,
    mask: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fit T2 or T2* per voxel of a multi-echo image and write the maps into the store.

    Parameters
    ----------
    where : str, path or store
        The subject store.
    echoes : str
        The multi-echo image (echoes as channels).
    image_out : str
        Path of the map (ms); ``_S0`` and ``_nrmse`` images beside it.
    kind : {'t2', 't2star'}
        What the echo train measures (spin echo: T2; gradient echo: T2*), recorded in metadata.
    fit : {'rician', 'lsq', 'loglinear'}
        ``rician`` (default: unbiased where late echoes reach the noise floor) needs the noise
        std: ``noise_sigma`` or a ``background`` mask of signal-free voxels.
    echo_times_ms : sequence of float, optional
        Only where the store states none (else it must agree).
    noise_sigma : float, optional
        Noise std of the magnitude's underlying channels (image units).
    background : str, optional
        Mask image (> 0: air) to estimate the noise from.
    mask : str, optional
        Fit only where this mask image is > 0.
    overwrite : bool
        Replace maps already there.

    Returns
    -------
    dict
        Echo times, fit, noise sigma, the voxels fitted and the map's mean (ms).
    """
    from bridge_xr.extract.masks import write_on_grid_of

    store = resolve_store(where)
    if kind not in ("t2", "t2star"):
        raise InvalidInputError(f"kind {kind!r}: use t2 or t2star")
    if fit not in MODELS:
        raise InvalidInputError(f"fit {fit!r}: use one of {', '.join(MODELS)}")
    te = echo_times(store, echoes, echo_times_ms)
    sigma = noise_sigma
    if fit == "rician" and sigma is None:
        if background is None:
            raise InvalidInputError(
                "the Rician fit needs the noise level: pass `noise_sigma` or a `background` mask "
                "of air voxels (or choose fit lsq)"
            )
        sigma = background_sigma(store, echoes, background)
    data = read_image(store, echoes).data
    ny, nx = data.shape[2:]
    rows = max(1, min(ny, _BLOCK_VOXELS // max(nx, 1)))  # bounded blocks: memory flat in size
    data = data.rechunk({0: -1, 1: 1, 2: rows, 3: -1}, method=rechunk_method())
    m = None
    if mask is not None:
        m = read_image(store, mask).data
        if tuple(m.shape) != tuple(data.shape[1:]):
            raise InvalidInputError(
                f"mask {mask!r} has shape {tuple(m.shape)}; {echoes!r} has {tuple(data.shape[1:])}"
            )
        m = (m > 0).rechunk(data.chunks[1:], method=rechunk_method())
    chunks = ((3,), *data.chunks[1:])
    args = (data,) if m is None else (data, m)

    def fn(block: np.ndarray, mblock: np.ndarray | None = None) -> np.ndarray:
        return _fit_block(block, mblock, te, fit, sigma)

    fitted = da.map_blocks(
        fn, *args, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0, 0, 0), np.float32)
    )
    tmp = tempfile.mkdtemp(prefix="bridge_xr-relax-")
    try:
        da.to_zarr(fitted, tmp, overwrite=True)  # one pass over the echoes, on disk
        done = da.from_zarr(tmp)
        params = {"relaxation": kind, "fit": fit, "echo_times_ms": te.tolist(), "noise_sigma": sigma,
                  "mask": mask}  # fmt: skip
        for k, suffix in enumerate(("", "_S0", "_nrmse")):
            path = image_out + suffix
            write_on_grid_of(store, echoes, done[k], path, operation="relax",
                             overwrite=overwrite, **params)  # fmt: skip
        t2 = done[0]
        fitted_n, median = da.compute(da.isfinite(t2).sum(), da.nanmean(t2), scheduler=scheduler())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"image": image_out, "fitted_voxels": int(fitted_n), "mean_ms": float(median), **params}
