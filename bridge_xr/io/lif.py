"""Leica LIF (LAS X projects) in, lazily: each task reads its region through a strided memmap.

The file's XML (images, dimensions, channels, memory blocks) is read with liffile (BSD-3,
2026.2.16 on Python 3.11). Voxel sizes come from each ``DimensionDescription`` (``Length`` over
``NumberOfElements - 1``, as Leica and liffile define it), converted from the file's unit to
micrometres; an image without them is refused unless ``--pixel-size``/``--z-step`` are given.
A project with several images needs ``--series N`` (0-based, in liffile's order).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from bridge_xr.errors import InvalidInputError
from bridge_xr.model.image import make_image
from bridge_xr.model.units import canonical_unit, conversion_factor

_DIMS = {"C": "c", "Z": "z", "Y": "y", "X": "x"}


class _StridedRegion:
    """Picklable array-like over a memory block: opens a memmap on each read."""

    def __init__(
        self, path: str, offset: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: Any
    ) -> None:
        self.path, self.offset = path, offset
        self.shape, self.strides, self.dtype = shape, strides, np.dtype(dtype)
        self.ndim = len(shape)

    def __getitem__(self, key: Any) -> Any:
        span = sum((n - 1) * s for n, s in zip(self.shape, self.strides, strict=True))
        mm = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.offset,
                       shape=(span + self.dtype.itemsize,))  # fmt: skip
        view = np.ndarray(shape=self.shape, dtype=self.dtype, buffer=mm, strides=self.strides)
        return np.array(view[key])


@dataclass(frozen=True)
class LifInfo:
    """What a LIF image says about itself."""

    pixel_size_um: float | None
    z_step_um: float | None
    channel_names: tuple[str, ...] | None
    images: tuple[str, ...]
    image: str
    source: str = "lif"
    objective: str | None = None
    excitation_nm: float | None = None

    @property
    def extra(self) -> dict[str, Any]:
        """Acquisition details for the image metadata."""
        return {"lif_image": self.image, "lif_images": list(self.images)}


def read_lif(
    path: str | os.PathLike[str],
    *,
    scene: int | None = None,
    pixel_size_um: float | None = None,
    z_step_um: float | None = None,
    channel_names: tuple[str, ...] | None = None,
) -> tuple[xr.DataArray, LifInfo]:
    """One image (``scene`` = series index) of a LIF file as a lazy calibrated image."""
    # long by design: one pass over the LIF XML tree and its memory blocks, in the format's order
    import liffile

    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"no such file: {str(p)!r}; check the path")
    where = f"LIF {str(p)!r}"
    try:
        with liffile.LifFile(str(p), squeeze=False) as lif:
            images = [im for im in lif.images if isinstance(im, liffile.LifImage)]
            names = tuple(im.path for im in images)
            if not images:
                raise InvalidInputError(f"{where} holds no images")
            if scene is None:
                if len(images) > 1:
                    listed = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
                    raise InvalidInputError(
                        f"{where} holds {len(images)} images ({listed}); choose one with `series` N"
                    )
                scene = 0
            if not 0 <= scene < len(images):
                raise InvalidInputError(f"{where} has images 0..{len(images) - 1}; got {scene}")
            im = images[scene]
            dims_info = list(im._dimensions)  # (label, id, n, origin, length, unit, bytes_inc, ..)
            chans = list(im._channels)
            block = im.memory_block
            offset, size = int(block.offset), int(block.size)
    except (liffile.LifFileError, ValueError, KeyError, OSError) as exc:
        raise InvalidInputError(f"cannot read {where} ({exc}); is it a complete LIF file?") from exc
    odd = [d.label for d in dims_info if d.label not in _DIMS and d.number_elements > 1]
    if odd:
        raise InvalidInputError(
            f"{where} image {names[scene]!r} has dimensions {odd} (time, tiles, wavelength ...); "
            "bridge_xr reads z stacks of channels"
        )
    dtypes = {c.dtype for c in chans}
    if len(dtypes) != 1:
        raise InvalidInputError(f"{where}: channels of different data types are not supported")
    dtype = np.dtype(dtypes.pop())
    by = {d.label: d for d in dims_info}
    shape = [len(chans)] + [by[a].number_elements if a in by else 1 for a in "ZYX"]
    strides = [chans[1].bytes_inc - chans[0].bytes_inc if len(chans) > 1 else 0] + [
        by[a].bytes_inc if a in by else 0 for a in "ZYX"
    ]
    if len(chans) > 1 and any(
        c.bytes_inc - chans[0].bytes_inc != k * strides[0] for k, c in enumerate(chans)
    ):
        raise InvalidInputError(f"{where}: channels are not evenly spaced in the memory block")
    span = sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) + dtype.itemsize
    if span + chans[0].bytes_inc > size or offset + size > p.stat().st_size:
        raise InvalidInputError(f"{where} is truncated (image data run past the end of the file)")
    region = _StridedRegion(str(p), offset + chans[0].bytes_inc, tuple(shape),
                            tuple(strides), dtype)  # fmt: skip
    arr = da.from_array(region, chunks=(1, 1, shape[2], shape[3]), asarray=False,
                        name=f"lif-{p.name}-{scene}-{p.stat().st_mtime_ns}")  # fmt: skip

    def step(a: str) -> float | None:
        d = by.get(a)
        if d is None or d.number_elements < 2 or d.length == 0:
            return None
        unit = canonical_unit(d.unit or "m")
        return abs(d.length) / (d.number_elements - 1) * conversion_factor(unit, "micrometer")

    px_file, py_file, zs_file = step("X"), step("Y"), step("Z")
    px = pixel_size_um if pixel_size_um is not None else px_file
    py = pixel_size_um if pixel_size_um is not None else (py_file or px)
    zs = z_step_um if z_step_um is not None else zs_file
    if px is None or py is None:
        raise InvalidInputError(
            f"{where} image {names[scene]!r} has no voxel size; pass `pixel_size` (e.g. 1.1838um)"
        )
    if shape[1] > 1 and zs is None:
        raise InvalidInputError(f"{where} has no z step; pass `z_step` (e.g. 5um)")
    # LAS X keeps no channel name in the image description: the measured quantity, else the LUT
    luts = tuple(
        getattr(c, "name_of_measured_quantity", "") or getattr(c, "lut_name", "") or f"C{k}"
        for k, c in enumerate(chans)
    )
    names_c = channel_names or luts
    if len(names_c) != len(chans):
        raise InvalidInputError(
            f"{len(names_c)} channel names given for {len(chans)} channels in {where}"
        )
    img = make_image(arr, dims="czyx", spacing={"z": zs or 1.0, "y": py, "x": px}, unit="um",
                     channel_names=names_c)  # fmt: skip
    return img, LifInfo(px, zs, channel_names or luts, names, names[scene])
