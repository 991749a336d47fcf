"""Export images for other tools: NIfTI (header restored) and plain OME-Zarr 0.5."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from bridge_xr._constants import SCANNER_RAS
from bridge_xr._dask import rechunk_method, scheduler
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._fillcheck import FastWrites
from bridge_xr.io._store import StoreLike, describe_store, invalidate, key_exists, resolve_store
from bridge_xr.io.read import open_group, read_image, read_multiscale_info
from bridge_xr.io.subject import check_image_path, read_subject


def export_nifti(
    where: StoreLike,
    image_path: str,
    output: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
) -> Path:
    """Write an image (level 0) as NIfTI; MRI converted from NIfTI gets its own header back.

    Parameters
    ----------
    where : str, path, zarr store or Scene
        The subject store.
    image_path : str
        The image to export.
    output : path
        ``.nii`` or ``.nii.gz``.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing import tiny_scene
    >>> out = export_nifti(tiny_scene(), "mri", pathlib.Path(tempfile.mkdtemp()) / "mri.nii.gz")
    >>> out.name
    'mri.nii.gz'
    """
    from bridge_xr.io.nifti import write_nifti

    out = Path(output)
    if not out.name.endswith((".nii", ".nii.gz")):
        raise InvalidInputError(f"`output` {str(out)!r} must end in .nii or .nii.gz")
    store = resolve_store(where, read_only=True, storage_options=storage_options)
    path = check_image_path(image_path)
    img = read_image(store, path)
    subject = read_subject(store)
    meta = subject.images.get(path)
    if "c" in img.dims:
        raise InvalidInputError(
            f"{path!r} has channels {list(img.c.values)}; NIfTI export takes one channel"
        )
    scanner = img.attrs["transforms"].get(SCANNER_RAS)
    return write_nifti(
        np.asarray(img.data.compute(scheduler=scheduler())),
        tuple(img.dims),  # type: ignore[arg-type]
        out,
        spacing=img.attrs["spacing"],
        unit=img.attrs["unit"],
        nifti=meta.nifti if meta else None,
        scanner_affine=None if scanner is None else scanner.to_affine(3),
    )


def export_ome_zarr_05(
    where: StoreLike,
    image_path: str,
    output: StoreLike,
    *,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Export one image as a plain OME-Zarr 0.5 multiscale (scale + translation, no shards).

    For viewers without RFC-5 support. The image is written at the root of ``output``;
    an axis-aligned ``scanner_ras`` affine (diagonal) is baked into the scale/translation.

    Parameters
    ----------
    where : str, path, zarr store or Scene
        The subject store.
    image_path : str
        The image to export.
    output : str, path or zarr store
        A new store.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    str
        The output store's name.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing import tiny_scene
    >>> out = export_ome_zarr_05(tiny_scene(), "mri", pathlib.Path(tempfile.mkdtemp()) / "mri.zarr")
    >>> out.endswith("mri.zarr")
    True
    """
    # long by design: one export transaction (axes, scale, translation, copy, metadata last)
    src = resolve_store(where, read_only=True, storage_options=storage_options)
    dst = resolve_store(output, storage_options=storage_options)
    if key_exists(dst, "zarr.json"):
        raise InvalidInputError(f"{describe_store(dst)} already exists; choose a new `output`")
    path = check_image_path(image_path)
    info = read_multiscale_info(open_group(src, path))
    scanner = info.transforms.get(SCANNER_RAS)
    mat = scanner.to_affine(3) if scanner is not None else None
    bake = (
        mat is not None
        and np.allclose(mat[:3, :3], np.diag(np.diag(mat[:3, :3])))
        and np.all(np.diag(mat[:3, :3]) > 0)
    )
    datasets = []
    try:
        for k, lp in enumerate(info.level_paths):
            img = read_image(src, path, level=k)
            arr = img.data
            scale = list(info.level_scale[k])
            trans = list(info.level_translation[k])
            if bake and mat is not None:
                sd = [i for i, d in enumerate(info.dims) if d in ("z", "y", "x")]
                for j, i in enumerate(sd):
                    scale[i] *= mat[j, j]
                    trans[i] = trans[i] * mat[j, j] + mat[j, 3]
            target = zarr.create_array(
                dst,
                name=lp,
                shape=arr.shape,
                dtype=arr.dtype,
                chunks=tuple(min(64, n) for n in arr.shape),
                dimension_names=list(info.dims),
                fill_value=0,
                overwrite=True,
            )
            aligned = arr.rechunk(target.chunks, method=rechunk_method())
            da.store(aligned, FastWrites(target), lock=False, scheduler=scheduler())  # type: ignore[arg-type]
            datasets.append(
                {
                    "path": lp,
                    "coordinateTransformations": [
                        {"type": "scale", "scale": scale},
                        {"type": "translation", "translation": trans},
                    ],
                }
            )
        axes = []
        for d in info.dims:
            if d in ("z", "y", "x"):
                axes.append({"name": d, "type": "space", "unit": info.unit or "micrometer"})
            elif d == "c":
                axes.append({"name": d, "type": "channel"})
            else:
                axes.append({"name": d, "type": "time"})
        attrs: dict[str, Any] = {
            "ome": {
                "version": "0.5",
                "multiscales": [{"name": path, "axes": axes, "datasets": datasets}],
            }
        }
        invalidate(dst)
        zarr.open_group(dst, mode="a", zarr_format=3).attrs.put(attrs)
    except BaseException:
        from bridge_xr.io._store import delete_prefix

        delete_prefix(dst, "")
        raise
    return describe_store(dst)
