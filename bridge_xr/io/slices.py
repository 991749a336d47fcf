"""Slice stacks: 2D images of vibratome sections stacked into one image at their depths.

Ex vivo sections (80-100 µm thick, cut on the paper's 3D-printed device so that the cutting
plane is the resliced MRI's plane) are imaged one by one in 2D (widefield, 325 nm pixels,
several channels). :func:`convert_slices` makes them one ``(c,) z, y, x`` image: slice ``k``
(in cutting order) is plane ``k``, centred at depth ``(k + 1/2) · thickness``, so every slice is
a slab of the stack exactly as thick as the section. Slices of different sizes are padded with
zeros at their bottom and right edges; each slice's own size and file are recorded under
``acquisition.extra.slices``. ``bridge register-slices`` then registers each slice in 2D.

Examples
--------
>>> parse_order("1..3", 3), parse_order("2,1,3", 3)
([0, 1, 2], [1, 0, 2])
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.convert import _MODALITY_BY_PREFIX, _guard_target, _read_vendor, _session_of
from bridge_xr.io.subject import add_image, check_image_path
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import Acquisition, ImageMetadata, Provenance
from bridge_xr.model.units import parse_length_um

__all__ = ["convert_slices", "parse_order"]


def parse_order(order: str | Sequence[int] | None, n: int) -> list[int]:
    """Stack position (0-based) of each of ``n`` files, from ``"1..N"``, ``"3,1,2"`` or a list.

    Positions are 1-based in the text form (the paper's slice numbers); each position appears
    once. ``None``: the files' own order.

    Parameters
    ----------
    order : str, sequence of int or None
        ``"1..N"`` (the given order), ``"N..1"`` (reversed) or comma-separated positions.
    n : int
        Number of files.

    Returns
    -------
    list of int

    Examples
    --------
    >>> parse_order("3..1", 3)
    [2, 1, 0]
    """
    if order is None:
        return list(range(n))
    if isinstance(order, str):
        text = order.replace(" ", "")
        m = re.fullmatch(r"(\d+)\.\.(\d+|N)", text)
        if m:
            a = int(m.group(1))
            b = n if m.group(2) == "N" else int(m.group(2))
            pos = list(range(a, b + 1)) if a <= b else list(range(a, b - 1, -1))
        elif re.fullmatch(r"\d+(,\d+)*", text):
            pos = [int(v) for v in text.split(",")]
        else:
            raise InvalidInputError(f"--order {order!r}: use 1..N, N..1 or positions like 3,1,2")
        pos = [p - 1 for p in pos]
    else:
        pos = [int(p) for p in order]
    if len(pos) != n or sorted(pos) != list(range(n)):
        raise InvalidInputError(
            f"--order names positions {[p + 1 for p in pos]} for {n} files; "
            f"give each of 1..{n} exactly once"
        )
    return pos


def _read_slice(src: Path, px_um: float | None, names: tuple[str, ...] | None) -> tuple[Any, Any]:
    from bridge_xr.io.tiff import read_tiff

    if src.suffix.lower() in (".czi", ".lif"):
        img, cal = _read_vendor(
            src, scene=None, pixel_size_um=px_um, z_step_um=None, channel_names=names
        )
    else:
        img, cal = read_tiff(src, pixel_size_um=px_um, channel_names=names)
    if "t" in img.dims:
        raise InvalidInputError(f"{str(src)!r} has a time axis; a section image is 2D")
    if "z" in img.dims:
        if img.sizes["z"] != 1:
            raise InvalidInputError(
                f"{str(src)!r} has {img.sizes['z']} z planes; a section image is one plane "
                "(project it first, or convert it with `bridge convert microscopy`)"
            )
        img = img.isel(z=0)
    return img, cal


def convert_slices(
    sources: Sequence[str | os.PathLike[str]],
    where: StoreLike,
    image_path: str,
    *,
    thickness: str,
    order: str | Sequence[int] | None = None,
    pixel_size: str | None = None,
    channel_names: tuple[str, ...] | None = None,
    overwrite: bool = False,
    compressor: str = "auto",
    progress: Any = None,
) -> ImageMetadata:
    """Stack 2D section images (TIFF/OME-TIFF, CZI, LIF) into one image, one slab per section.

    Parameters
    ----------
    sources : sequence of paths
        One 2D (multichannel) image per section.
    where : str, path or zarr store
        The subject store.
    image_path : str
        Image path, e.g. ``exvivo/slab03``.
    thickness : str
        Section thickness with its unit (``"100um"``): the stack's z spacing.
    order : str or sequence of int, optional
        Cutting order of the files (``"1..N"``, ``"3,1,2"``); default the order given.
    pixel_size : str, optional
        In-plane pixel size when the files lack it (``"0.325um"``).
    channel_names : tuple of str, optional
        Channel names (default: from the files, which must agree).
    overwrite : bool
        Replace an image at the same path.
    compressor : str
        Storage compressor.
    progress : callable, optional
        ``progress(levels_done, levels_total)``.

    Returns
    -------
    ImageMetadata

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, tifffile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> for k in range(2):
    ...     tifffile.imwrite(tmp / f"s{k}.tif", np.full((6, 8), k, np.uint16))
    >>> meta = convert_slices([tmp / "s0.tif", tmp / "s1.tif"], tmp / "M.ome.zarr", "exvivo/slab03",
    ...                       thickness="100um", pixel_size="0.325um")
    >>> meta.acquisition.extra["slice_thickness_um"], len(meta.acquisition.extra["slices"])
    (100.0, 2)
    """
    # long by design: reading, the checks that all sections agree and the stacking share one pass
    path = check_image_path(image_path)
    files = [Path(s) for s in sources]
    if not files:
        raise InvalidInputError("no section images given")
    if not re.search(r"[A-Za-zµ]", thickness):
        raise InvalidInputError(f"--thickness {thickness!r} needs a unit, e.g. 100um")
    t_um = parse_length_um(thickness)
    if not t_um > 0:
        raise InvalidInputError(f"--thickness must be positive; got {thickness!r}")
    pos = parse_order(order, len(files))
    px_um = parse_length_um(pixel_size) if pixel_size else None
    store = resolve_store(where)
    _guard_target(store, path, overwrite)
    read = [_read_slice(f, px_um, channel_names) for f in files]
    first, _ = read[0]
    sp = first.attrs["spacing"]
    for f, (img, _) in zip(files, read, strict=True):
        if img.dims != first.dims:
            raise InvalidInputError(
                f"{str(f)!r} has axes {img.dims}, {str(files[0])!r} has {first.dims}; "
                "every section needs the same channels"
            )
        if "c" in img.dims and list(img.c.values) != list(first.c.values):
            raise InvalidInputError(
                f"{str(f)!r} has channels {list(img.c.values)}, {str(files[0])!r} has "
                f"{list(first.c.values)}; give --channel-names or convert them alike"
            )
        s = img.attrs["spacing"]
        if any(abs(s[d] - sp[d]) > 1e-3 * sp[d] for d in "yx"):
            raise InvalidInputError(
                f"{str(f)!r} has pixels of {s['y']:g} x {s['x']:g} {img.attrs['unit']}, "
                f"{str(files[0])!r} {sp['y']:g} x {sp['x']:g}; sections must share a pixel size"
            )
        if img.dtype != first.dtype:
            raise InvalidInputError(f"{str(f)!r} is {img.dtype}, {str(files[0])!r} {first.dtype}")
    ny = max(img.sizes["y"] for img, _ in read)
    nx = max(img.sizes["x"] for img, _ in read)
    planes: list[Any] = [None] * len(files)
    slices: list[dict[str, Any]] = [{}] * len(files)
    for f, (img, _), k in zip(files, read, pos, strict=True):
        arr = img.data
        pad = [(0, 0)] * (arr.ndim - 2) + [(0, ny - img.sizes["y"]), (0, nx - img.sizes["x"])]
        planes[k] = da.pad(arr, pad) if any(p != (0, 0) for p in pad) else arr
        slices[k] = {"index": k, "source": f.name, "shape_yx": [img.sizes["y"], img.sizes["x"]]}
    stack = da.stack(planes, axis=-3)
    dims = (*(("c",) if "c" in first.dims else ()), "z", "y", "x")
    unit = first.attrs["unit"]
    from bridge_xr.model.units import conversion_factor

    t_unit = t_um * conversion_factor("micrometer", unit)
    image = make_image(
        stack,
        dims=dims,
        spacing={"z": t_unit, "y": sp["y"], "x": sp["x"]},
        origin={"z": t_unit / 2, "y": first.attrs["origin"]["y"], "x": first.attrs["origin"]["x"]},
        unit=unit,
        channel_names=[str(c) for c in first.c.values] if "c" in first.dims else None,
    )
    image = image.chunk({"z": 1})
    factor = conversion_factor(unit, "micrometer")
    meta = ImageMetadata(
        path=path,
        modality=_MODALITY_BY_PREFIX.get(path.split("/")[0], "widefield"),
        session=_session_of(path),
        source=str(files[0].parent),
        channel_names=tuple(str(c) for c in first.c.values) if "c" in first.dims else None,
        acquisition=Acquisition(
            pixel_size_um=(t_um, sp["y"] * factor, sp["x"] * factor),
            extra={"slice_thickness_um": t_um, "slices": slices},
        ),
        provenance=Provenance.now(
            "convert slices",
            inputs=tuple(str(f) for f in files),
            image=path,
            thickness_um=t_um,
            order=[p + 1 for p in pos],
        ),
    )
    add_image(store, image, meta, overwrite=overwrite, compressor=compressor, progress=progress)
    return meta
