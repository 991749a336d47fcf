"""Bring data into a subject store, describe a store, and export images back out."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zarr

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, describe_store, key_exists, resolve_store
from bridge_xr.io.subject import add_image, check_image_path, read_subject
from bridge_xr.model.image import spatial_dims
from bridge_xr.model.metadata import Acquisition, ImageMetadata, NiftiInfo, Provenance
from bridge_xr.model.units import parse_length

_MODALITY_BY_PREFIX = {
    "invivo_mri": "mri",
    "exvivo_mri": "mri",
    "mri": "mri",
    "twophoton": "twophoton",
    "2p": "twophoton",
    "widefield": "widefield",
    "exvivo": "widefield",
    "exm": "expansion",
    "expansion": "expansion",
    "masks": "labels",
    "labels": "labels",
}


def _session_of(path: str) -> str | None:
    parts = path.split("/")
    return parts[1] if len(parts) >= 3 else None


def _guard_target(store: Any, path: str, overwrite: bool) -> None:
    subject = read_subject(store)
    if (path in subject.images or key_exists(store, f"{path}/zarr.json")) and not overwrite:
        msg = (
            f"image {path!r} already exists in {describe_store(store)}; "
            "choose another path or pass `overwrite`"
        )
        raise InvalidInputError(msg)


def _float(tags: Mapping[str, str], key: str) -> float | None:
    try:
        return float(tags[key].split("\\")[0])
    except (KeyError, ValueError):
        return None


def _seconds_to_ms(value: Any, key: str, where: Path) -> list[float]:
    vals = value if isinstance(value, list) else [value]
    try:
        out = [float(v) for v in vals]
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"{str(where)!r}: {key} must be numbers (s); got {value!r}"
        ) from None
    if any(not 0 < v < 1 for v in out):
        raise InvalidInputError(
            f"{str(where)!r}: {key} {value!r} is not in seconds (BIDS sidecars state times in s, "
            "between 0 and 1 for an echo); correct the sidecar"
        )
    return [v * 1000.0 for v in out]


def bids_sidecar(nifti: Path, *, echoes: int | None = None) -> Acquisition:
    """Acquisition parameters from a NIfTI's BIDS JSON sidecar (``X.json`` beside ``X.nii.gz``).

    ``EchoTime`` (s; a list, or ``EchoTimes``, for a 4-D multi-echo file whose volumes are the
    echoes), ``RepetitionTime`` (s), ``MagneticFieldStrength`` (T), ``SequenceName``. No sidecar:
    nothing is known. Times not in seconds are refused, not rescaled.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "T2star.json").write_text(json.dumps({"EchoTime": [0.0026, 0.0066],
    ...                                                "MagneticFieldStrength": 9.4}))
    >>> bids_sidecar(d / "T2star.nii.gz", echoes=2).extra["echo_times_ms"]
    [2.6, 6.6]
    """
    import json

    name = nifti.name.removesuffix(".gz").removesuffix(".nii")
    side = nifti.with_name(f"{name}.json")
    if not side.is_file():
        return Acquisition()
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise InvalidInputError(f"cannot read the sidecar {str(side)!r}: {exc}") from None
    if not isinstance(info, dict):
        raise InvalidInputError(f"the sidecar {str(side)!r} is not a JSON object")
    te_raw = info.get("EchoTimes", info.get("EchoTime"))
    te = _seconds_to_ms(te_raw, "EchoTime", side) if te_raw is not None else []
    extra: dict[str, Any] = {}
    if len(te) > 1:
        if echoes != len(te):
            raise InvalidInputError(
                f"{str(side)!r} states {len(te)} echo times but {str(nifti)!r} has "
                f"{echoes or 1} volume(s); they must match"
            )
        extra["echo_times_ms"] = [round(t, 9) for t in te]
    tr = info.get("RepetitionTime")
    field = info.get("MagneticFieldStrength")
    return Acquisition(
        field_strength_T=float(field) if isinstance(field, int | float) else None,
        echo_time_ms=round(te[0], 9) if len(te) == 1 else None,
        repetition_time_ms=float(tr) * 1000.0 if isinstance(tr, int | float) and tr > 0 else None,
        sequence=info.get("SequenceName") if isinstance(info.get("SequenceName"), str) else None,
        extra=extra,
    )


def convert_mri(
    source: str | os.PathLike[str],
    where: StoreLike,
    image_path: str,
    *,
    overwrite: bool = False,
    series: str | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Any = None,
) -> ImageMetadata:
    """Convert a NIfTI file, a DICOM series folder or a Bruker ParaVision study/scan folder.

    ``series``: the DICOM SeriesInstanceUID, or the ParaVision scan ``E/P`` (scan/reconstruction)
    when the folder holds several.

    Parameters
    ----------
    source : path
        ``.nii``/``.nii.gz``, a DICOM folder, or a ParaVision study/scan folder.
    where : str, path or zarr store
        The subject store.
    image_path : str
        Image path in the store, e.g. ``invivo_mri/d060/T2w``.
    overwrite : bool
        Replace an image at the same path.
    series : str, optional
        DICOM SeriesInstanceUID or ParaVision ``E/P`` when the folder holds several.
    storage_options : dict, optional
        fsspec options for URLs.
    progress : callable, optional
        ``progress(levels_done, levels_total)``.

    Returns
    -------
    ImageMetadata
        With the scanner geometry (``scanner_ras`` system) and, from NIfTI, the header to restore.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, nibabel as nib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.diag([0.1, 0.1, 0.4, 1])),
    ...          tmp / "T2w.nii.gz")
    >>> convert_mri(tmp / "T2w.nii.gz", tmp / "M.ome.zarr", "invivo_mri/d1/T2w").modality
    'mri'
    """
    # long by design: NIfTI, DICOM and ParaVision differ only in the reader; the geometry checks and write are shared
    from bridge_xr.io.bruker import is_paravision, read_paravision
    from bridge_xr.io.dicom import read_dicom_series
    from bridge_xr.io.nifti import read_nifti

    path = check_image_path(image_path)
    src = Path(source)
    if not src.exists():
        raise InvalidInputError(f"no such file or folder: {str(src)!r}; check the path")
    store = resolve_store(where, storage_options=storage_options)
    _guard_target(store, path, overwrite)
    nifti: NiftiInfo | None = None
    dicom: dict[str, str] | None = None
    if src.is_dir() and is_paravision(src):
        image, pv, systems = read_paravision(src, scan=series)
        acq = Acquisition(
            field_strength_T=pv["field_strength_T"],
            echo_time_ms=pv["echo_time_ms"],
            repetition_time_ms=pv["repetition_time_ms"],
            sequence=pv["sequence"],
            extra={k: pv[k] for k in ("echo_times_ms", "protocol", "reconstruction") if pv[k]},
        )
        fmt = "paravision"
    elif src.is_dir():
        image, dicom, systems = read_dicom_series(src, series_uid=series)
        acq = Acquisition(
            field_strength_T=_float(dicom, "field_strength_T"),
            echo_time_ms=_float(dicom, "echo_time_ms"),
            repetition_time_ms=_float(dicom, "repetition_time_ms"),
            sequence=dicom.get("sequence_name"),
        )
        fmt = "dicom"
    elif src.name.endswith((".nii", ".nii.gz")):
        image, nifti, systems = read_nifti(src)
        acq = bids_sidecar(src, echoes=image.sizes.get("t"))
        fmt = "nifti"
    else:
        msg = (
            f"{str(src)!r} is neither a NIfTI file (.nii, .nii.gz), a DICOM folder nor a "
            "ParaVision study/scan folder"
        )
        raise InvalidInputError(msg)
    meta = ImageMetadata(
        path=path,
        modality="mri",
        session=_session_of(path),
        source=str(src),
        acquisition=acq,
        nifti=nifti,
        dicom=dicom,
        provenance=Provenance.now(f"convert mri ({fmt})", inputs=(str(src),), image=path),
    )
    add_image(
        store,
        image,
        meta,
        extra_systems=systems,
        overwrite=overwrite,
        shards=False,
        chunks={"z": 64, "y": 64, "x": 64},
        compressor="zstd",
        progress=progress,
    )
    return meta


def _read_vendor(
    src: Path,
    *,
    scene: int | None,
    pixel_size_um: float | None,
    z_step_um: float | None,
    channel_names: tuple[str, ...] | None,
) -> tuple[Any, Any]:
    from bridge_xr.io.czi import read_czi
    from bridge_xr.io.lif import read_lif

    reader = read_czi if src.suffix.lower() == ".czi" else read_lif
    return reader(
        src,
        scene=scene,
        pixel_size_um=pixel_size_um,
        z_step_um=z_step_um,
        channel_names=channel_names,
    )


def convert_microscopy(
    source: str | os.PathLike[str],
    where: StoreLike,
    image_path: str,
    *,
    pixel_size: str | None = None,
    z_step: str | None = None,
    channel_names: tuple[str, ...] | None = None,
    modality: str | None = None,
    labels: bool = False,
    overwrite: bool = False,
    chunks: Mapping[str, int] | None = None,
    shards: Mapping[str, int] | None = None,
    compressor: str = "auto",
    storage_options: dict[str, Any] | None = None,
    progress: Any = None,
    scene: int | None = None,
    expansion: Mapping[str, Any] | None = None,
) -> ImageMetadata:
    """Convert a TIFF/OME-TIFF stack, a Zeiss CZI or a Leica LIF into the store, lazily.

    ``scene``: the CZI scene or LIF image (series) index when the file holds several.

    Parameters
    ----------
    source : path
        ``.tif``/``.ome.tif``, ``.czi`` or ``.lif``.
    where : str, path or zarr store
        The subject store.
    image_path : str
        Image path in the store, e.g. ``twophoton/d060/angiogram``.
    pixel_size, z_step : str, optional
        Lengths with units (``"1.1838um"``) when the file's metadata lacks them.
    channel_names : tuple of str, optional
        Names of the channels (default: from the file).
    modality : str, optional
        Default: from the file type.
    labels : bool
        A label image (mode pyramid).
    overwrite : bool
        Replace an image at the same path.
    chunks, shards, compressor
        Storage.
    storage_options : dict, optional
        fsspec options for URLs.
    progress : callable, optional
        ``progress(levels_done, levels_total)``.
    scene : int, optional
        CZI scene / LIF image index when the file holds several.
    expansion : mapping, optional
        An expanded sample (``bridge_xr.io.expansion``): ``factor`` divides every length, so the
        image lies in pre-expansion tissue µm; the gel's own µm become the system ``gel``.

    Returns
    -------
    ImageMetadata

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, tifffile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> tifffile.imwrite(tmp / "a.tif", np.zeros((3, 8, 8), np.uint16), imagej=True,
    ...                  resolution=(1 / 1.2, 1 / 1.2), metadata={"spacing": 5.0, "unit": "um"})
    >>> convert_microscopy(tmp / "a.tif", tmp / "M.ome.zarr", "twophoton/d1/a").modality
    'twophoton'
    """
    # long by design: the reader dispatch, calibration checks and the shard-aligned write share one set of parsed options
    from bridge_xr.io._plan import plan_storage
    from bridge_xr.io.tiff import read_tiff

    path = check_image_path(image_path)
    px = parse_length(pixel_size, default_unit="um") if pixel_size else None
    zs = parse_length(z_step, default_unit="um") if z_step else None
    from bridge_xr.model.units import conversion_factor

    px_um = px[0] * conversion_factor(px[1], "micrometer") if px else None
    zs_um = zs[0] * conversion_factor(zs[1], "micrometer") if zs else None
    src = Path(source)
    store = resolve_store(where, storage_options=storage_options)
    _guard_target(store, path, overwrite)
    vendor = src.suffix.lower() in (".czi", ".lif")
    if vendor:
        image, cal = _read_vendor(
            src, scene=scene, pixel_size_um=px_um, z_step_um=zs_um, channel_names=channel_names
        )
    else:
        image, cal = read_tiff(
            src, pixel_size_um=px_um, z_step_um=zs_um, channel_names=channel_names
        )
    plan = plan_storage(
        image.shape,
        tuple(str(d) for d in image.dims),
        image.dtype,
        image.attrs["spacing"],
        chunks=chunks,
        shards=shards,
    )
    grid = plan.levels[0].shards or plan.levels[0].chunks
    if vendor:  # one task per plane: merge planes up to the write grid
        image = image.chunk(dict(zip(image.dims, grid, strict=True)))
    else:
        image, _ = read_tiff(
            src,
            pixel_size_um=px_um,
            z_step_um=zs_um,
            channel_names=channel_names,
            chunks=dict(zip(image.dims, grid, strict=True)),
        )
    systems: list[tuple[Any, Any]] = []
    extra = dict(getattr(cal, "extra", {}) or {})
    if expansion is not None:
        gel = [float(image.attrs["spacing"][d]) for d in spatial_dims(image.dims)]
        image, systems = _to_tissue(image, float(expansion["factor"]))
        extra["expansion"] = {**expansion, "gel_voxel_size": gel, "unit": image.attrs["unit"]}
    mod = modality or ("labels" if labels else _MODALITY_BY_PREFIX.get(path.split("/")[0], "other"))
    names = (
        tuple(str(v) for v in image.c.values) if "c" in image.dims and "c" in image.coords else None
    )
    meta = ImageMetadata(
        path=path,
        modality=mod,
        kind="labels" if labels else "image",
        session=_session_of(path),
        source=str(src),
        channel_names=names,
        acquisition=Acquisition(
            pixel_size_um=tuple(image.attrs["spacing"][d] for d in spatial_dims(image.dims)),
            objective=getattr(cal, "objective", None),
            excitation_nm=getattr(cal, "excitation_nm", None),
            expansion_factor=float(expansion["factor"]) if expansion else None,
            extra=extra,
        ),
        provenance=Provenance.now(
            "convert microscopy",
            inputs=(str(src),),
            image=path,
            calibration_source="options" if px else cal.source,
            **({"scene": scene} if scene is not None else {}),
            **({"expansion_factor": float(expansion["factor"])} if expansion else {}),
        ),
    )
    add_image(
        store,
        image,
        meta,
        extra_systems=systems,
        overwrite=overwrite,
        method="mode" if labels else "mean",
        chunks=chunks,
        shards=shards,
        compressor=compressor,
        progress=progress,
    )
    return meta


def _to_tissue(image: Any, factor: float) -> tuple[Any, list[tuple[Any, Any]]]:
    """An expanded sample's image in pre-expansion µm, and the ``gel`` system it came from."""
    from bridge_xr.model.coords import spatial_system
    from bridge_xr.model.image import make_image
    from bridge_xr.model.transforms import Scale

    if not factor > 0:
        raise InvalidInputError(f"expansion factor must be positive; got {factor}")
    sd = spatial_dims(image.dims)
    out = make_image(
        image.data,
        dims=image.dims,
        spacing={d: image.attrs["spacing"][d] / factor for d in sd},
        origin={d: image.attrs["origin"][d] / factor for d in sd},
        unit=image.attrs["unit"],
        channel_names=[str(c) for c in image.c.values] if "c" in image.dims else None,
    )
    if sd != ("z", "y", "x"):
        return out, []
    return out, [(spatial_system("gel", image.attrs["unit"]), Scale(scale=(factor,) * 3))]


def _discover(store: Any) -> list[str]:
    """Find multiscale groups by walking the hierarchy (stores not written by bridge_xr)."""
    found: list[str] = []
    try:
        root = zarr.open_group(store, mode="r")
    except Exception:
        return found
    root_attrs: dict[str, Any] = root.attrs.asdict()
    if "multiscales" in root_attrs.get("ome", root_attrs):
        return [""]
    for name, node in root.members(max_depth=None):
        if isinstance(node, zarr.Group):
            attrs: dict[str, Any] = node.attrs.asdict()
            if "multiscales" in attrs.get("ome", attrs):
                found.append(name)
    return found
