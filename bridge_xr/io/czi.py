"""Zeiss CZI (LSM 7MP/980 2P stacks, AxioScan slides) in, lazily: one dask task per subblock.

The file's structure (subblock directory, XML metadata) is read with czifile (BSD-3; on Python
3.11 the newest release is 2019.7.2.3, later ones need Python 3.12). Pixel data are read by
bridge_xr itself from each subblock's offset, so that a task opens the file, reads one plane and
decodes it: uncompressed, ``zstd0`` and ``zstd1`` (ZEN 3's default, with hi/lo byte packing) are
decoded here (czifile 2019 does not know zstd); JPEG XR needs imagecodecs.

Calibration: ``Scaling/Items/Distance[@Id=X|Y|Z]/Value`` (metres) -> micrometres; a file without
it is refused unless ``--pixel-size``/``--z-step`` are given. Channels are named from
``Information/Image/Dimensions/Channels/Channel/@Name``. Several scenes (``S``) need ``--scene``;
mosaic tiles (``M``) are read one by one by :func:`read_czi_tiles`.
"""

from __future__ import annotations

import os
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from bridge_xr.errors import InvalidInputError
from bridge_xr.model.image import make_image

_KEPT = set("SCZYXMTB")


@dataclass(frozen=True)
class Plane:
    """Where one subblock's pixels lie in the file and in the image."""

    offset: int
    size: int
    compression: int
    dtype: str
    shape: tuple[int, int]  # y, x
    c: int
    z: int


def _decode(raw: bytes, compression: int, dtype: str, shape: tuple[int, int], where: str) -> Any:
    dt = np.dtype(dtype)
    if compression == 0:
        buf = raw
    elif compression in (5, 6):
        from numcodecs import Zstd

        hilo = False
        if compression == 6:
            n = raw[0]
            i = 1
            while i < n:
                if raw[i] != 1:
                    raise InvalidInputError(f"{where}: unknown zstd1 header chunk {raw[i]}")
                hilo = bool(raw[i + 1] & 1)
                i += 2
            raw = raw[n:]
        buf = bytes(Zstd().decode(raw))
        if hilo and dt.itemsize == 2:
            half = len(buf) // 2
            lo = np.frombuffer(buf[:half], np.uint8).astype(np.uint16)
            hi = np.frombuffer(buf[half:], np.uint8).astype(np.uint16)
            buf = (lo | (hi << 8)).astype("<u2").tobytes()
    elif compression == 4:
        try:
            from imagecodecs import jpegxr_decode
        except ImportError:
            raise InvalidInputError(
                f"{where} is JPEG XR compressed; pip install imagecodecs to read it"
            ) from None
        return np.asarray(jpegxr_decode(raw)).reshape(shape)
    else:
        raise InvalidInputError(f"{where}: CZI compression {compression} is not supported")
    n = int(np.prod(shape))
    if len(buf) < n * dt.itemsize:
        raise InvalidInputError(f"{where} is truncated (a subblock holds too few pixels)")
    return np.frombuffer(buf, dtype=dt, count=n).reshape(shape)


def _read_plane(path: str, plane: Plane) -> Any:
    with open(path, "rb") as fh:
        fh.seek(plane.offset)
        raw = fh.read(plane.size)
    if len(raw) < plane.size:
        raise InvalidInputError(f"CZI {path!r} is truncated (a subblock runs past the end)")
    return _decode(raw, plane.compression, plane.dtype, plane.shape, f"CZI {path!r}")


def _metres_um(root: ET.Element, axis: str) -> float | None:
    for d in root.iter("Distance"):
        if d.get("Id") == axis:
            v = d.findtext("Value")
            try:
                return float(v) * 1e6 if v else None
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class CziInfo:
    """What a CZI file says about itself."""

    pixel_size_um: float | None
    z_step_um: float | None
    channel_names: tuple[str, ...] | None
    scenes: tuple[str, ...]
    objective: str | None
    excitation_nm: float | None
    microscope: str | None
    offset_px: tuple[int, int] = (0, 0)  # the scene's (y, x) start in the file's pixel grid
    source: str = "czi"

    @property
    def extra(self) -> dict[str, Any]:
        """Acquisition details for the image metadata."""
        return {
            "microscope": self.microscope,
            "scenes": list(self.scenes),
            "scene_offset_px_yx": list(self.offset_px),
        }


def read_czi(
    path: str | os.PathLike[str],
    *,
    scene: int | None = None,
    pixel_size_um: float | None = None,
    z_step_um: float | None = None,
    channel_names: tuple[str, ...] | None = None,
) -> tuple[xr.DataArray, CziInfo]:
    """One scene of a CZI file as a lazy calibrated image (dims ``c, z, y, x``)."""
    tiles = _czi_images(
        path,
        scene=scene,
        pixel_size_um=pixel_size_um,
        z_step_um=z_step_um,
        channel_names=channel_names,
        mosaic=False,
    )
    return tiles[0]


def read_czi_tiles(
    path: str | os.PathLike[str],
    *,
    scene: int | None = None,
    pixel_size_um: float | None = None,
    z_step_um: float | None = None,
    channel_names: tuple[str, ...] | None = None,
) -> list[tuple[xr.DataArray, CziInfo]]:
    """Every mosaic tile (``M``) of one CZI scene, in acquisition order, each a lazy image.

    A tile's stage position is its subblocks' start in the file's pixel grid
    (:attr:`CziInfo.offset_px`, y/x) times the pixel size: how ZEN places tiles.
    """
    return _czi_images(
        path,
        scene=scene,
        pixel_size_um=pixel_size_um,
        z_step_um=z_step_um,
        channel_names=channel_names,
        mosaic=True,
    )


def _czi_images(
    path: str | os.PathLike[str],
    *,
    scene: int | None,
    pixel_size_um: float | None,
    z_step_um: float | None,
    channel_names: tuple[str, ...] | None,
    mosaic: bool,
) -> list[tuple[xr.DataArray, CziInfo]]:
    # long by design: a CZI is parsed in one pass over its segments (directory, metadata, subblocks); splitting it would pass a dozen parsed fields between helpers
    import warnings

    import czifile

    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"no such file: {str(p)!r}; check the path")
    where = f"CZI {str(p)!r}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with czifile.CziFile(str(p)) as czi:
                xml = czi.metadata(raw=True) or "<ImageDocument/>"
                entries = []
                for e in czi.subblock_directory:
                    seg = e.data_segment()
                    entries.append((e, seg.data_offset, seg.data_size))
    except (ValueError, OSError, struct.error, czifile.czifile.SegmentNotFoundError) as exc:
        raise InvalidInputError(f"cannot read {where} ({exc}); is it a complete CZI file?") from exc
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InvalidInputError(f"{where} has unreadable XML metadata ({exc})") from exc
    planes: dict[int, list[tuple[dict[str, tuple[int, int]], Any, int, int]]] = {}
    for e, off, size in entries:
        dims = {d.dimension: (d.start, d.size) for d in e.dimension_entries}
        stored = {d.dimension: d.stored_size for d in e.dimension_entries}
        if e.pyramid_type or any(stored.get(a, 0) != dims[a][1] for a in "YX" if a in dims):
            continue  # a pyramid (downsampled) subblock
        odd = [a for a, (_, n) in dims.items() if a not in _KEPT and n > 1]
        if odd:
            raise InvalidInputError(f"{where} has dimensions {odd} that bridge_xr does not read")
        planes.setdefault(dims.get("S", (0, 1))[0], []).append((dims, e, off, size))
    if not planes:
        raise InvalidInputError(f"{where} holds no image subblocks")
    names_xml = [s.get("Name") or f"scene {s.get('Index')}" for s in root.iter("Scene")]
    scene_ids = sorted(planes)
    labels = tuple(
        names_xml[i] if i < len(names_xml) else f"scene {i}" for i in range(len(scene_ids))
    )
    if scene is None:
        if len(scene_ids) > 1:
            listed = ", ".join(f"{i}: {n}" for i, n in enumerate(labels))
            raise InvalidInputError(
                f"{where} holds {len(scene_ids)} scenes ({listed}); choose one with `scene` N"
            )
        scene = 0
    if not 0 <= scene < len(scene_ids):
        raise InvalidInputError(f"{where} has scenes 0..{len(scene_ids) - 1}; got `scene` {scene}")
    groups: dict[int, list[Any]] = {}
    for item in planes[scene_ids[scene]]:
        groups.setdefault(item[0].get("M", (0, 1))[0], []).append(item)
    if len(groups) > 1 and not mosaic:
        raise InvalidInputError(
            f"{where} scene {scene} is a tile scan of {len(groups)} mosaic tiles; convert it "
            "with `bridge convert tiles` (then stitch and fuse), or export the stitched image from ZEN"
        )
    opts = (pixel_size_um, z_step_um, channel_names)
    return [
        _assemble(p, where, root, grp, scene, labels, *opts) for _, grp in sorted(groups.items())
    ]


def _assemble(
    p: Path,
    where: str,
    root: ET.Element,
    chosen: list[Any],
    scene: int,
    labels: tuple[str, ...],
    pixel_size_um: float | None,
    z_step_um: float | None,
    channel_names: tuple[str, ...] | None,
) -> tuple[xr.DataArray, CziInfo]:
    if any(d.get("T", (0, 1))[1] > 1 or d.get("T", (0, 1))[0] > 0 for d, *_ in chosen):
        raise InvalidInputError(f"{where} is a time series (T); bridge_xr reads z stacks")
    y0 = {d["Y"][0] for d, *_ in chosen}
    x0 = {d["X"][0] for d, *_ in chosen}
    ny = {d["Y"][1] for d, *_ in chosen}
    nx = {d["X"][1] for d, *_ in chosen}
    if len(y0) > 1 or len(x0) > 1 or len(ny) > 1 or len(nx) > 1:
        raise InvalidInputError(
            f"{where} scene {scene} has subblocks at different positions or sizes (tiles?)"
        )
    shape_yx = (ny.pop(), nx.pop())
    c_ids = sorted({d.get("C", (0, 1))[0] for d, *_ in chosen})
    z_ids = sorted({d.get("Z", (0, 1))[0] for d, *_ in chosen})
    grid: dict[tuple[int, int], Plane] = {}
    for d, e, off, size in chosen:
        if d.get("Z", (0, 1))[1] != 1 or d.get("C", (0, 1))[1] != 1:
            raise InvalidInputError(f"{where}: subblocks holding several planes are not supported")
        if np.dtype(e.dtype).shape:
            raise InvalidInputError(f"{where}: RGB subblocks (pixel type {e.dtype}) are not read")
        dtype = str(np.dtype(e.dtype))
        key = (c_ids.index(d.get("C", (0, 1))[0]), z_ids.index(d.get("Z", (0, 1))[0]))
        grid[key] = Plane(off, size, int(e.compression), dtype, shape_yx, *key)
    missing = [(c, z) for c in range(len(c_ids)) for z in range(len(z_ids)) if (c, z) not in grid]
    if missing:
        raise InvalidInputError(f"{where} lacks planes (c, z) {missing[:3]}; is it complete?")
    dtype = grid[(0, 0)].dtype
    read = dask.delayed(_read_plane, pure=True)
    arr = da.stack(
        [
            da.stack(
                [
                    da.from_delayed(read(str(p), grid[(c, z)]), shape_yx, dtype=np.dtype(dtype))
                    for z in range(len(z_ids))
                ]
            )
            for c in range(len(c_ids))
        ]
    )
    px_file = _metres_um(root, "X")
    py_file = _metres_um(root, "Y")
    zs_file = _metres_um(root, "Z")
    px = pixel_size_um if pixel_size_um is not None else px_file
    zs = z_step_um if z_step_um is not None else zs_file
    if px is None:
        raise InvalidInputError(
            f"{where} has no Scaling in its metadata; pass `pixel_size` (e.g. 1.1838um)"
            + (" and --z-step" if len(z_ids) > 1 else "")
        )
    if len(z_ids) > 1 and zs is None:
        raise InvalidInputError(f"{where} has no z scaling; pass `z_step` (e.g. 5um)")
    py = pixel_size_um if pixel_size_um is not None else (py_file or px)
    xml_names = tuple(
        ch.get("Name") or f"C{i}"
        for i, ch in enumerate(root.iterfind(".//Information/Image/Dimensions/Channels/Channel"))
    )
    names = channel_names or (xml_names if len(xml_names) == len(c_ids) else None)
    if names is not None and len(names) != len(c_ids):
        raise InvalidInputError(
            f"{len(names)} channel names given for {len(c_ids)} channels in {where}"
        )
    exc_nm = None
    first = root.find(".//Information/Image/Dimensions/Channels/Channel/ExcitationWavelength")
    if first is not None and first.text:
        try:
            exc_nm = float(first.text)
        except ValueError:
            exc_nm = None
    objective = next((o.get("Name") for o in root.iter("Objective") if o.get("Name")), None)
    microscope = next((m.get("Name") for m in root.iter("Microscope") if m.get("Name")), None)
    # origin 0 (as Fiji/BigWarp show the image, where landmarks are picked); the scene's place
    # in the slide's pixel grid is kept in the metadata
    img = make_image(
        arr,
        dims="czyx",
        spacing={"z": zs or 1.0, "y": py, "x": px},
        unit="um",
        channel_names=names or tuple(f"C{i}" for i in range(len(c_ids))),
    )
    info = CziInfo(px, zs, names, labels, objective, exc_nm, microscope,
                   offset_px=(next(iter(y0)), next(iter(x0))))  # fmt: skip
    return img, info
