"""Reading masks for evaluation: NIfTI files or OME-Zarr label images, with physical spacing."""

from __future__ import annotations

from typing import Any

import numpy as np

from bridge_xr.errors import InvalidInputError
from bridge_xr.model.units import conversion_factor


def split_store_path(text: str) -> tuple[str, str] | None:
    """``study/M001.ome.zarr/predictions/d060/vessels`` -> (store, image path), else None."""
    marker = ".zarr/"
    if marker not in text:
        return None
    store, image = text.split(marker, 1)
    return store + ".zarr", image.strip("/")


def read_mask(text: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A (z, y, x) array and its voxel spacing in µm, from NIfTI or ``store.zarr/image``."""
    parts = split_store_path(text)
    if parts is not None:
        from bridge_xr.io.read import read_image

        img: Any = read_image(parts[0], parts[1])
    elif text.endswith((".nii", ".nii.gz")):
        from bridge_xr.io.nifti import read_nifti

        img, _, _ = read_nifti(text)
    else:
        raise InvalidInputError(
            f"{text!r} is neither a NIfTI file (.nii, .nii.gz) nor an image in an OME-Zarr store "
            "(path/to/store.ome.zarr/image/path)"
        )
    if "c" in img.dims:
        raise InvalidInputError(f"{text!r} has channels; give a single label image")
    if "t" in img.dims:
        if img.sizes["t"] != 1:
            raise InvalidInputError(f"{text!r} is a time series; give one label image")
        img = img.isel(t=0)
    fac = conversion_factor(img.attrs["unit"], "micrometer")
    spacing = tuple(float(img.attrs["spacing"][d]) * fac for d in ("z", "y", "x"))
    return np.asarray(img.values), spacing  # type: ignore[return-value]
