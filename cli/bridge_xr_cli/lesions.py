"""``bridge lesions``: connected-component lesion tables per ROI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bridge_xr_cli._common import StoreArg, handle_errors, out


@handle_errors
def lesions(
    store: StoreArg,
    objects: Annotated[
        list[str], typer.Option("--objects", help="IMAGE=THRESHOLD of a probability map (repeat)")
    ],
    output: Annotated[Path, typer.Option(help="Parquet file: one row per lesion")],
    roi_labels: Annotated[
        str | None, typer.Option(help="label image of drawn ROIs on the same grid")
    ] = None,
    rois: Annotated[
        Path | None,
        typer.Option(help="drawn ROI polygons, CSV: roi, x_px, y_px [, z_px] (or x_um, y_um)"),
    ] = None,
    mri: Annotated[
        str | None,
        typer.Option(help="registered MRI (e.g. exvivo_mri/T2star) for each ROI's status"),
    ] = None,
    positive_below: Annotated[
        float | None, typer.Option(help="--mri: hypointense below this value (T2* map: ms)")
    ] = None,
    positive_fraction: Annotated[
        float, typer.Option(help="--mri: ROI positive when this fraction of it is hypointense")
    ] = 0.1,
    status: Annotated[
        Path | None, typer.Option(help="or the status rated by eye, CSV: roi, mri_status")
    ] = None,
    via: Annotated[
        list[str] | None, typer.Option(help="registration chain from the MRI, when ambiguous")
    ] = None,
    roi_output: Annotated[
        Path | None,
        typer.Option(
            help="Parquet per object and ROI (default: OUTPUT with _rois); with a "
            "status, the Mann-Whitney table goes beside it as _mann_whitney.csv"
        ),
    ] = None,
) -> None:
    """Count and measure lesions (connected components of thresholded maps) in each ROI."""
    from bridge_xr.errors import InvalidInputError
    from bridge_xr.lesions.tables import lesion_tables

    parsed: dict[str, float] = {}
    for item in objects:
        image, sep, value = item.rpartition("=")
        try:
            parsed[image] = float(value)
        except ValueError:
            raise InvalidInputError(f"--objects takes IMAGE=THRESHOLD; got {item!r}") from None
        if not sep or not image:
            raise InvalidInputError(f"--objects takes IMAGE=THRESHOLD; got {item!r}")
    roi_out = roi_output or output.with_name(f"{output.stem}_rois.parquet")
    res = lesion_tables(store, objects=parsed, roi_labels=roi_labels, rois=rois, mri=mri,
                        positive_below=positive_below, positive_fraction=positive_fraction,
                        status=status, via=via or None, output=output, roi_output=roi_out)  # fmt: skip
    table = Table(title=f"lesions -> {output}, per ROI -> {roi_out}")
    has_status = "mri_status" in res.rois
    cols = ["object", "roi", "lesions", "total µm³", "median µm³"] + (["MRI"] if has_status else [])
    for col in cols:
        table.add_column(col)
    for r in res.rois.itertuples():
        row = [
            str(r.object),
            str(r.roi),
            str(r.lesions),
            f"{r.total_um3:.4g}",
            f"{r.median_um3:.4g}",
        ]
        table.add_row(*row, *([str(r.mri_status)] if has_status else []))
    out.print(table)
    if not res.comparison.empty:
        where = roi_out.with_name(f"{roi_out.stem}_mann_whitney.csv")
        res.comparison.to_csv(where, index=False)
        cmp = Table(title=f"positive vs negative ROIs (Mann-Whitney U) -> {where}")
        for col in ("object", "metric", "median −", "median +", "n −", "n +", "U", "p"):
            cmp.add_column(col)
        for c in res.comparison.itertuples():
            cmp.add_row(str(c.object), str(c.metric), f"{c.median_negative:.4g}",
                        f"{c.median_positive:.4g}", str(c.n_a), str(c.n_b),
                        f"{c.statistic:.4g}", f"{c.p:.3g}")  # fmt: skip
        out.print(cmp)
    elif has_status:
        out.print("no comparison: every ROI has the same MRI status")
