"""``bridge relax``: T2 / T2* maps from a multi-echo image."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bridge_xr_cli._common import Overwrite, StoreArg, handle_errors, out


class RelaxModel(StrEnum):
    """What the echo train measures."""

    t2 = "t2"
    t2star = "t2star"


class FitChoice(StrEnum):
    """``bridge_xr.relax.fitting.Model``."""

    rician = "rician"
    lsq = "lsq"
    loglinear = "loglinear"


@handle_errors
def relax(
    store: StoreArg,
    echoes: Annotated[str, typer.Option(help="multi-echo image (echoes as channels)")],
    image_out: Annotated[str, typer.Option(help="map path (ms); _S0 and _nrmse beside it")],
    model: Annotated[
        RelaxModel, typer.Option(help="t2 (spin echo) or t2star (gradient echo)")
    ] = RelaxModel.t2star,
    fit: Annotated[
        FitChoice,
        typer.Option(help="rician (default: unbiased at the noise floor), lsq or loglinear"),
    ] = FitChoice.rician,
    echo_times: Annotated[
        str | None, typer.Option(help="TE in ms, comma-separated (only if the store has none)")
    ] = None,
    noise_sigma: Annotated[
        float | None, typer.Option(help="noise std in image units (rician)")
    ] = None,
    background: Annotated[
        str | None, typer.Option(help="mask image of air voxels to estimate the noise from")
    ] = None,
    mask: Annotated[str | None, typer.Option(help="fit only inside this mask image")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Fit a mono-exponential decay per voxel, block by block; write the maps into the store."""
    from bridge_xr.errors import InvalidInputError
    from bridge_xr.relax import relax as run

    te = None
    if echo_times:
        try:
            te = [float(t) for t in echo_times.split(",")]
        except ValueError:
            raise InvalidInputError(
                f"--echo-times takes ms values like 2.6,6.6,10.6; got {echo_times!r}"
            ) from None
    res = run(
        store, echoes=echoes, image_out=image_out, kind=model.value, fit=fit.value,
        echo_times_ms=te, noise_sigma=noise_sigma, background=background, mask=mask,
        overwrite=overwrite,
    )  # fmt: skip
    sigma = f", noise sigma {res['noise_sigma']:.4g}" if res["noise_sigma"] else ""
    out.print(
        f"{image_out}: {model.value} by {fit.value} fit over {len(res['echo_times_ms'])} echoes"
        f"{sigma}; {res['fitted_voxels']} voxels fitted, mean {res['mean_ms']:.4g} ms"
    )


@handle_errors
def pse(
    store: StoreArg,
    pre: Annotated[str, typer.Option(help="pre-contrast image (e.g. invivo_mri/d060/T1w)")],
    post: Annotated[str, typer.Option(help="post-contrast image on the same grid")],
    image_out: Annotated[str | None, typer.Option(help="write the PSE map (%) here")] = None,
    roi_labels: Annotated[
        str | None, typer.Option(help="label image of ROIs (e.g. the sigmoid sinus)")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="CSV: PSE of the ROI means")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Percent signal enhancement (post - pre) / pre x 100 %: a map and/or per ROI."""
    from bridge_xr.relax.enhancement import pse as run

    res = run(store, pre=pre, post=post, image_out=image_out, roi_labels=roi_labels,
              output=output, overwrite=overwrite)  # fmt: skip
    if res["image"]:
        out.print(f"PSE map -> {res['image']}")
    for r in res["rois"].itertuples():
        out.print(f"ROI {r.roi}: pre {r.pre_mean:.5g}, post {r.post_mean:.5g}, n {r.n}, "
                  f"PSE {r.pse_percent:.1f} %")  # fmt: skip


@handle_errors
def roi_means(
    store: StoreArg,
    image: Annotated[list[str], typer.Option("--image", help="image to average (repeat)")],
    roi_labels: Annotated[str, typer.Option(help="label image of the ROIs, same grid")],
    output: Annotated[Path, typer.Option(help="CSV: image, roi, n, mean, sd")],
) -> None:
    """Mean and SD of images inside each drawn ROI, into a table."""
    from bridge_xr.relax.enhancement import roi_means as run

    df = run(store, images=image, roi_labels=roi_labels)
    output.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(output, index=False)
    out.print(df.to_string(index=False))
