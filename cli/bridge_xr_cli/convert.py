"""``bridge convert mri|microscopy``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge_xr.errors import InvalidInputError
from bridge_xr_cli._common import handle_errors, level_progress, out

app = typer.Typer(
    help="Convert MRI (NIfTI, DICOM) or microscopy (TIFF, OME-TIFF) into a subject store.",
    no_args_is_help=True,
)

ImageOpt = Annotated[
    str, typer.Option("--image", help="image path in the store, e.g. invivo_mri/d060/T2w")
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="replace an existing image of that path")
]


@app.command("mri")
@handle_errors
def mri(
    source: Annotated[
        Path,
        typer.Argument(
            help="NIfTI file (.nii/.nii.gz), DICOM series folder, or Bruker ParaVision "
            "study/scan/pdata folder (2dseq + visu_pars)"
        ),
    ],
    store: Annotated[str, typer.Argument(help="subject store (path or s3:// URL), created if new")],
    image: ImageOpt,
    series: Annotated[
        str | None,
        typer.Option(
            help="DICOM SeriesInstanceUID, or ParaVision scan E/P, when the folder has several"
        ),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Convert an MRI volume, keeping its exact scanner geometry (affine to scanner_ras)."""
    from bridge_xr.io.convert import convert_mri

    with level_progress(f"writing {image}") as cb:
        meta = convert_mri(source, store, image, overwrite=overwrite, series=series, progress=cb)
    out.print(f"wrote {meta.path} ({meta.provenance.operation}) to {store}")


@app.command("microscopy")
@handle_errors
def microscopy(
    source: Annotated[
        Path, typer.Argument(help="TIFF / OME-TIFF / ImageJ stack, Zeiss .czi or Leica .lif")
    ],
    store: Annotated[str, typer.Argument(help="subject store (path or s3:// URL), created if new")],
    image: ImageOpt,
    pixel_size: Annotated[
        str | None, typer.Option(help="in-plane pixel size, e.g. 1.1838um (overrides metadata)")
    ] = None,
    z_step: Annotated[
        str | None, typer.Option(help="z step, e.g. 5um (overrides metadata)")
    ] = None,
    channel_names: Annotated[
        str | None, typer.Option(help="comma-separated channel names, e.g. vessel,tumour")
    ] = None,
    labels: Annotated[
        bool, typer.Option("--labels", help="integer label image (mode downsampling)")
    ] = False,
    compressor: Annotated[
        str,
        typer.Option(
            help="auto (zstd for --labels, else blosc-zstd), zstd, blosc-zstd, blosc-lz4 or none"
        ),
    ] = "auto",
    overwrite: Overwrite = False,
    scene: Annotated[
        int | None, typer.Option(help="CZI scene index (0-based) when the file holds several")
    ] = None,
    series: Annotated[
        int | None, typer.Option(help="LIF image (series) index (0-based) when it holds several")
    ] = None,
) -> None:
    """Convert a microscopy stack lazily into a sharded multiscale image."""
    from bridge_xr.io.convert import convert_microscopy

    if scene is not None and series is not None:
        raise InvalidInputError("give --scene (CZI) or --series (LIF), not both")
    names = tuple(n.strip() for n in channel_names.split(",")) if channel_names else None
    with level_progress(f"writing {image}") as cb:
        meta = convert_microscopy(
            source,
            store,
            image,
            pixel_size=pixel_size,
            z_step=z_step,
            channel_names=names,
            labels=labels,
            overwrite=overwrite,
            compressor=compressor,
            progress=cb,
            scene=scene if scene is not None else series,
        )
    px = meta.acquisition.pixel_size_um
    out.print(f"wrote {meta.path} (voxel {px} µm) to {store}")


@app.command("slices")
@handle_errors
def slices(
    sources: Annotated[
        list[Path], typer.Argument(help="one 2D section image per file (TIFF, OME-TIFF, CZI, LIF)")
    ],
    store: Annotated[str, typer.Argument(help="subject store (path or s3:// URL), created if new")],
    image: ImageOpt,
    thickness: Annotated[
        str, typer.Option("--thickness", help="section thickness with its unit, e.g. 100um")
    ],
    order: Annotated[
        str | None,
        typer.Option("--order", help="cutting order of the files: 1..N, N..1 or e.g. 3,1,2"),
    ] = None,
    pixel_size: Annotated[
        str | None, typer.Option(help="in-plane pixel size when the files lack it, e.g. 0.325um")
    ] = None,
    channel_names: Annotated[
        str | None, typer.Option(help="comma-separated channel names, e.g. DAPI,nestin")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Stack 2D section images into one image, each section a slab as thick as it was cut."""
    from bridge_xr.io.slices import convert_slices

    names = tuple(n.strip() for n in channel_names.split(",")) if channel_names else None
    with level_progress(f"writing {image}") as cb:
        meta = convert_slices(
            sources, store, image, thickness=thickness, order=order, pixel_size=pixel_size,
            channel_names=names, overwrite=overwrite, progress=cb,
        )  # fmt: skip
    n = len(meta.acquisition.extra["slices"])
    out.print(f"wrote {meta.path} ({n} sections, voxel {meta.acquisition.pixel_size_um} µm)")


@app.command("expansion")
@handle_errors
def expansion(
    source: Annotated[
        Path, typer.Argument(help="post-expansion image (TIFF/OME-TIFF, CZI, LIF) in gel µm")
    ],
    store: Annotated[str, typer.Argument(help="subject store (path or s3:// URL), created if new")],
    image: ImageOpt,
    expansion_factor: Annotated[
        float | None, typer.Option("--expansion-factor", help="the gel's expansion, e.g. 4.1")
    ] = None,
    estimate_from: Annotated[
        Path | None,
        typer.Option(
            "--estimate-from",
            help="landmark CSV: fixed = pre-expansion image (µm), moving = this image (gel µm)",
        ),
    ] = None,
    pixel_size: Annotated[
        str | None, typer.Option(help="gel pixel size when the file lacks it, e.g. 59.54nm")
    ] = None,
    z_step: Annotated[str | None, typer.Option(help="gel z step, e.g. 0.2um")] = None,
    channel_names: Annotated[
        str | None, typer.Option(help="comma-separated channel names, e.g. nestin,vacht")
    ] = None,
    overwrite: Overwrite = False,
    scene: Annotated[int | None, typer.Option(help="CZI scene / LIF image (0-based)")] = None,
) -> None:
    """Convert an expansion microscopy image into tissue µm (given or estimated factor)."""
    from bridge_xr.io.expansion import convert_expansion

    if estimate_from is not None and not estimate_from.is_file():
        raise InvalidInputError(f"no such landmark file: {str(estimate_from)!r}")
    names = tuple(n.strip() for n in channel_names.split(",")) if channel_names else None
    with level_progress(f"writing {image}") as cb:
        meta = convert_expansion(
            source, store, image, expansion_factor=expansion_factor, landmarks=estimate_from,
            pixel_size=pixel_size, z_step=z_step, channel_names=names, overwrite=overwrite,
            progress=cb, scene=scene,
        )  # fmt: skip
    info = meta.acquisition.extra["expansion"]
    unc = (
        f" ± {info['sd']:.3g} (95 % CI {info['ci95'][0]:.4g}-{info['ci95'][1]:.4g}, "
        f"{info['n_landmarks']} landmarks)"
        if "sd" in info
        else " (given)"
    )
    out.print(
        f"wrote {meta.path}: expansion factor {info['factor']:.4g}{unc}; voxel "
        f"{tuple(round(v, 6) for v in meta.acquisition.pixel_size_um or ())} µm in the tissue"
    )
