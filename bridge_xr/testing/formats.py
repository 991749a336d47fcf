"""Small files in vendor and foreign formats, written by each format's own writer or byte layout.

Test fixtures for the readers (DICOM by SimpleITK, CZI/LIF/ParaVision by their documented byte
layouts), small enough to make in a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk


def rotation(deg_x: float, deg_z: float) -> np.ndarray:
    """Rotation about x then z (degrees), as a 3x3 matrix."""
    a, c = np.deg2rad(deg_x), np.deg2rad(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ rx


def write_dicom_series(folder: Path, *, oblique: bool = True, n_slices: int = 6) -> sitk.Image:
    """A DICOM MR series made with SimpleITK (one file per slice, oblique geometry).

    GDCM's writer sets the process locale to "C" (so text files would open as ASCII afterwards);
    the locale is put back when the series is written.
    """
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_dicom_series(folder, oblique=oblique, n_slices=n_slices)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_series(folder: Path, *, oblique: bool, n_slices: int) -> sitk.Image:
    rng = np.random.default_rng(2)
    arr = rng.integers(0, 4000, size=(n_slices, 16, 20)).astype(np.int16)
    vol = sitk.GetImageFromArray(arr)
    vol.SetSpacing((0.08, 0.1, 0.4))
    vol.SetOrigin((-5.5, 3.25, 12.0))
    d = rotation(12.0, 30.0) if oblique else np.eye(3)
    vol.SetDirection(tuple(d.ravel()))
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.1234567"
    for k in range(n_slices):
        sl = vol[:, :, k]
        sl.SetMetaData("0008|0060", "MR")
        sl.SetMetaData("0020|000e", series_uid)
        sl.SetMetaData("0020|000d", series_uid + ".9")
        sl.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0018|0087", "9.4")
        sl.SetMetaData("0018|0081", "33")
        sl.SetMetaData("0020|0037", "\\".join(f"{v:.10f}" for v in (*d[:, 0], *d[:, 1])))
        pos = vol.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in pos))
        sl.SetMetaData("0018|0050", "0.4")
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    return vol


def write_paravision(
    scan: Path,
    data: np.ndarray,
    *,
    spacing_zyx_mm: tuple[float, float, float],
    orientation: np.ndarray,
    first_voxel_lps: np.ndarray,
    slope: float | np.ndarray = 1.0,
    offset: float | np.ndarray = 0.0,
    echo_times_ms: tuple[float, ...] = (3.2,),
    repetition_time_ms: float = 2500.0,
    three_d: bool = False,
    echo_first: bool = True,
    word: str = "_16BIT_SGN_INT",
) -> Path:
    """A ParaVision 6+ reconstruction ``<scan>/pdata/1/{2dseq,visu_pars}`` by its byte layout.

    ``data`` is raw (echo, z, y, x) in the 2dseq word type; 2D data become one frame per slice
    (and echo), frame positions stepping along the slice direction (row 2 of ``orientation``).
    """
    rec = scan / "pdata" / "1"
    rec.mkdir(parents=True, exist_ok=True)
    n_echo, nz, ny, nx = data.shape
    dz, dy, dx = spacing_zyx_mm
    orient = np.asarray(orientation, float)
    if three_d:
        frames = [data[e] for e in range(n_echo)]
        pos = [np.asarray(first_voxel_lps, float)] * n_echo
        size, extent = [nx, ny, nz], [nx * dx, ny * dy, nz * dz]
    else:
        order = (
            [(k, e) for k in range(nz) for e in range(n_echo)]
            if echo_first
            else [(k, e) for e in range(n_echo) for k in range(nz)]
        )
        frames = [data[e, k] for k, e in order]
        pos = [np.asarray(first_voxel_lps, float) + k * dz * orient[2] for k, _ in order]
        size, extent = [nx, ny], [nx * dx, ny * dy]
    n = len(frames)
    dtype = {"_16BIT_SGN_INT": "<i2", "_32BIT_SGN_INT": "<i4", "_32BIT_FLOAT": "<f4"}[word]
    np.concatenate([f.ravel() for f in frames]).astype(dtype).tofile(rec / "2dseq")
    sl = np.resize(np.asarray(slope, float), n)
    of = np.resize(np.asarray(offset, float), n)
    fg = (
        "(2) (<FG_ECHO>, <>, 0, 0) (<FG_SLICE>, <>, 0, 0)"
        if echo_first
        else ("(2) (<FG_SLICE>, <>, 0, 0) (<FG_ECHO>, <>, 0, 0)")
    )

    def arr(values: Any) -> str:
        toks = [f"{v:.12g}" for v in np.ravel(values)]
        return "\n".join(" ".join(toks[i : i + 6]) for i in range(0, len(toks), 6))

    lines = [
        "##TITLE=Parameter List, ParaVision 360 V3.5",
        "##JCAMPDX=4.24",
        "##$VisuVersion=3",
        f"##$VisuCoreFrameCount={n}",
        f"##$VisuCoreDim={3 if three_d else 2}",
        f"##$VisuCoreSize=( {len(size)} )\n{arr(size)}",
        f"##$VisuCoreExtent=( {len(extent)} )\n{arr(extent)}",
        f"##$VisuCoreFrameThickness=( 1 )\n{dz:.12g}",
        f"##$VisuCoreWordType={word}",
        "##$VisuCoreByteOrder=littleEndian",
        f"##$VisuCoreDataSlope=( {n} )\n{arr(sl)}",
        f"##$VisuCoreDataOffs=( {n} )\n{arr(of)}",
        f"##$VisuCoreOrientation=( {n}, 9 )\n{arr(np.tile(orient.ravel(), n))}",
        f"##$VisuCorePosition=( {n}, 3 )\n{arr(np.ravel(pos))}",
        f"##$VisuCoreUnits=( {len(size)}, 65 )\n" + " ".join(["<mm>"] * len(size)),
        f"##$VisuAcqEchoTime=( {len(echo_times_ms)} )\n{arr(echo_times_ms)}",
        f"##$VisuAcqRepetitionTime=( 1 )\n{repetition_time_ms:.12g}",
        "##$VisuAcqImagingFrequency=400.3",
        "##$VisuAcqSequenceName=( 65 )\n<Bruker:MGE>",
        f"##$VisuFGOrderDesc=( 2 )\n{fg}",
        "##END=",
    ]
    (rec / "visu_pars").write_text("\n".join(lines) + "\n", encoding="latin-1")
    return rec


# ------------------------------------------------------------------------------------ Zeiss CZI
def _segment(sid: str, data: bytes) -> bytes:
    """A ZISRAW segment: 16-byte id, allocated and used size, data padded to 32 bytes."""
    import struct

    alloc = -(-len(data) // 32) * 32
    return (
        struct.pack("<16sqq", sid.encode(), alloc, len(data)) + data + b"\0" * (alloc - len(data))
    )


def _czi_entry(
    pixel_type: int, position: int, compression: int, dims: list[tuple[str, int, int]]
) -> bytes:
    import struct

    head = struct.pack("<2siqiiBB4si", b"DV", pixel_type, position, 0, compression, 0, 0,
                       b"\0" * 4, len(dims))  # fmt: skip
    # dimension entries are stored innermost (X) first
    body = b"".join(struct.pack("<4siifi", d.encode(), start, size, float(start), size)
                    for d, start, size in reversed(dims))  # fmt: skip
    return head + body


def _zstd1(raw: bytes, itemsize: int) -> bytes:
    """Encode ZEN's "zstd1" subblock compression.

    ZEN's "zstd1" subblock compression: a header (size 3, chunk 1 = hi/lo byte packing) and
    zstd of the (optionally byte-plane separated) data.
    """
    from numcodecs import Zstd

    if itemsize == 2:
        a = np.frombuffer(raw, dtype="<u2")
        raw = (a & 0xFF).astype(np.uint8).tobytes() + (a >> 8).astype(np.uint8).tobytes()
        return bytes([3, 1, 1]) + Zstd(level=3).encode(raw)
    return bytes([1]) + Zstd(level=3).encode(raw)


def write_czi(
    path: Path,
    data: np.ndarray,
    *,
    pixel_size_um: tuple[float, float, float] | None,
    channel_names: tuple[str, ...] = (),
    scene_names: tuple[str, ...] = (),
    compression: str = "none",
    tiles: int = 1,
    objective: str = "Plan-Apochromat 10x/0.45 M27",
    mosaic: Sequence[tuple[int, int]] | None = None,
    laser_scan: tuple[float, float] | None = None,
) -> Path:
    """A Zeiss CZI (ZISRAW) file by its documented segment layout (czifile's reading of it).

    ``data`` is (scene, c, z, y, x) uint16/uint8/float32; one subblock per (scene, c, z) plane,
    scene ``s`` placed at x offset ``s * 2 * X`` in the global pixel grid. ``pixel_size_um`` is
    (x, y, z) or None (no Scaling block). ``compression``: ``none``, ``zstd0`` or ``zstd1``.
    ``tiles`` > 1 writes every plane as that many mosaic tiles (M), side by side in x.
    ``mosaic``: a tile scan of one scene instead; ``data`` is (tile, c, z, y, x) and tile ``m``
    starts at pixel ``mosaic[m]`` = (y, x) of the global grid (as ZEN writes stage positions).
    ``laser_scan``: (line time, pixel dwell) in seconds, written as each channel's
    ``LaserScanInfo/LineTime`` and ``PixelTime`` (as ZEN does for LSM line scans).
    """
    # long by design: a fixture writer laying out the CZI segments byte by byte, in file order
    import struct
    import uuid

    from numcodecs import Zstd

    n_s, n_c, n_z, ny, nx = data.shape
    pixel_type = {np.dtype("uint8"): 0, np.dtype("uint16"): 1, np.dtype("float32"): 2}[data.dtype]
    code = {"none": 0, "zstd0": 5, "zstd1": 6}[compression]
    names = channel_names or tuple(f"Ch{c + 1}" for c in range(n_c))
    scan_xml = (
        f"<LaserScanInfo><PixelTime>{laser_scan[1]!r}</PixelTime>"
        f"<LineTime>{laser_scan[0]!r}</LineTime></LaserScanInfo>"
        if laser_scan
        else ""
    )
    ch_xml = "".join(
        f'<Channel Id="Channel:{c}" Name="{n}"><ExcitationWavelength>{488 + 100 * c}'
        f"</ExcitationWavelength>{scan_xml}</Channel>"
        for c, n in enumerate(names)
    )
    sc_xml = "".join(f'<Scene Index="{s}" Name="{n}"/>' for s, n in enumerate(scene_names))
    scaling = ""
    if pixel_size_um is not None:
        scaling = (
            "<Scaling><Items>"
            + "".join(
                f'<Distance Id="{a}"><Value>{v * 1e-6!r}</Value><DefaultUnitFormat>µm'
                "</DefaultUnitFormat></Distance>"
                for a, v in zip("XYZ", pixel_size_um, strict=True)
            )
            + "</Items></Scaling>"
        )
    xml = (
        "<ImageDocument><Metadata><Information><Image>"
        f"<SizeX>{nx}</SizeX><SizeY>{ny}</SizeY><SizeZ>{n_z}</SizeZ><SizeC>{n_c}</SizeC>"
        f"<Dimensions><Channels>{ch_xml}</Channels><S><Scenes>{sc_xml}</Scenes></S></Dimensions>"
        '</Image><Instrument><Microscopes><Microscope Name="LSM 980"/></Microscopes>'
        f'<Objectives><Objective Name="{objective}"/></Objectives></Instrument></Information>'
        f"{scaling}</Metadata></ImageDocument>"
    ).encode()
    header_size = 32 + 512
    meta_seg = _segment("ZISRAWMETADATA", struct.pack("<ii", len(xml), 0) + b"\0" * 248 + xml)
    blocks: list[bytes] = []
    entries: list[bytes] = []
    pos = header_size + len(meta_seg)
    tw = nx // tiles
    planes: list[tuple[np.ndarray, list[tuple[str, int, int]]]] = []
    if mosaic is not None:
        for m, (y0, x0) in enumerate(mosaic):
            for c in range(n_c):
                for z in range(n_z):
                    planes.append((data[m, c, z], [("M", m, 1), ("S", 0, 1), ("C", c, 1),
                                   ("Z", z, 1), ("Y", y0, ny), ("X", x0, nx)]))  # fmt: skip
    else:
        for s in range(n_s):
            for c in range(n_c):
                for z in range(n_z):
                    for m in range(tiles):
                        dims = [("S", s, 1), ("C", c, 1), ("Z", z, 1), ("Y", 0, ny),
                                ("X", s * 2 * nx + m * tw, tw)]  # fmt: skip
                        if tiles > 1:
                            dims.insert(0, ("M", m, 1))
                        planes.append((data[s, c, z][:, m * tw : (m + 1) * tw], dims))
    for plane_data, dims in planes:
        plane = np.ascontiguousarray(plane_data)
        raw = plane.tobytes()
        if code == 5:
            raw = Zstd(level=3).encode(raw)
        elif code == 6:
            raw = _zstd1(raw, plane.dtype.itemsize)
        entry = _czi_entry(pixel_type, pos, code, dims)
        fixed = struct.pack("<iiq", 0, 0, len(raw)) + entry
        fixed += b"\0" * max(256 - len(fixed), 0)
        seg = _segment("ZISRAWSUBBLOCK", fixed + raw)
        blocks.append(seg)
        entries.append(entry)
        pos += len(seg)
    directory = _segment(
        "ZISRAWDIRECTORY", struct.pack("<i", len(entries)) + b"\0" * 124 + b"".join(entries)
    )
    g = uuid.UUID(int=12345).bytes
    file_header = struct.pack("<iiii16s16siqqiq", 1, 0, 0, 0, g, g, 0, pos, header_size, 0, 0)
    head = struct.pack("<16sqq", b"ZISRAWFILE", 512, 512) + file_header.ljust(512, b"\0")
    path.write_bytes(head + meta_seg + b"".join(blocks) + directory)
    return path


# ---------------------------------------------------------------------------------- Leica LIF
def _lif_chunk(payload: bytes) -> bytes:
    import struct

    return (
        struct.pack("<IIBI", 0x70, 2 * (len(payload) // 2) + 5, 0x2A, len(payload) // 2) + payload
    )


def write_lif(
    path: Path,
    images: list[tuple[str, np.ndarray, tuple[float, float, float] | None]],
    *,
    channel_luts: tuple[str, ...] = ("Green", "Red", "Blue", "Gray"),
) -> Path:
    """Write a Leica LIF (version 2) file by its documented layout.

    A Leica LIF (version 2) file by its documented layout: a UTF-16 XML header, then one
    memory block per image. ``images``: ``(name, data (c, z, y, x), voxel (x, y, z) µm or None)``;
    channels are stored one whole volume after the other, x fastest.
    """
    import struct

    children, blocks = [], []
    for k, (name, data, voxel) in enumerate(images):
        n_c, n_z, ny, nx = data.shape
        item = data.dtype.itemsize
        kind = 1 if data.dtype.kind == "f" else 0
        chans = "".join(
            f'<ChannelDescription DataType="{kind}" ChannelTag="0" Resolution="{8 * item}" '
            f'NameOfMeasuredQuantity="" Min="0" Max="{2 ** (8 * item) - 1}" Unit="" '
            f'LUTName="{channel_luts[c % len(channel_luts)]}" IsLUTInverted="0" '
            f'BytesInc="{c * nx * ny * n_z * item}" BitInc="0"/>'
            for c in range(n_c)
        )
        dims = []
        for dim_id, n, inc, i in (
            (1, nx, item, 0),
            (2, ny, nx * item, 1),
            (3, n_z, nx * ny * item, 2),
        ):
            if n == 1 and dim_id == 3:
                continue
            length = 0.0 if voxel is None else voxel[i] * 1e-6 * (n - 1)
            dims.append(
                f'<DimensionDescription DimID="{dim_id}" NumberOfElements="{n}" Origin="0" '
                f'Length="{length!r}" Unit="m" BitInc="0" BytesInc="{inc}"/>'
            )
        raw = np.ascontiguousarray(data).tobytes()
        mid = f"MemBlock_{k + 1}"
        children.append(
            f'<Element Name="{name}" Visibility="1" UniqueID="{k + 1}"><Data><Image>'
            f"<ImageDescription><Channels>{chans}</Channels><Dimensions>{''.join(dims)}"
            f"</Dimensions></ImageDescription></Image></Data>"
            f'<Memory Size="{len(raw)}" MemoryBlockID="{mid}"/><Children/></Element>'
        )
        ident = mid.encode("utf-16-le")
        blocks.append(struct.pack("<IIBQBI", 0x70, 0, 0x2A, len(raw), 0x2A, len(ident) // 2)
                      + ident + raw)  # fmt: skip
    xml = (
        '<LMSDataContainerHeader Version="2"><Element Name="project" Visibility="1" '
        'UniqueID="0"><Data><Experiment Path=""/></Data>'
        '<Memory Size="0" MemoryBlockID="MemBlock_0"/>'
        f"<Children>{''.join(children)}</Children></Element></LMSDataContainerHeader>"
    )
    empty = "MemBlock_0".encode("utf-16-le")
    head_block = struct.pack("<IIBQBI", 0x70, 0, 0x2A, 0, 0x2A, len(empty) // 2) + empty
    path.write_bytes(_lif_chunk(xml.encode("utf-16-le")) + head_block + b"".join(blocks))
    return path
