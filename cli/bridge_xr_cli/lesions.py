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
) -> None:
    """Count and measure lesions (connected components of thresholded maps) in each ROI."""
    from bridge_xr.errors import InvalidInputError
    from bridge_xr.lesions.tables import lesion_table, summarise

    parsed: dict[str, float] = {}
    for item in objects:
        image, sep, value = item.rpartition("=")
        try:
            parsed[image] = float(value)
        except ValueError:
            raise InvalidInputError(f"--objects takes IMAGE=THRESHOLD; got {item!r}") from None
        if not sep or not image:
            raise InvalidInputError(f"--objects takes IMAGE=THRESHOLD; got {item!r}")
    df = lesion_table(store, objects=parsed, roi_labels=roi_labels, output=output)
    table = Table(title=f"lesions -> {output}")
    for col in ("object", "roi", "lesions", "total µm³", "median µm³"):
        table.add_column(col)
    for r in summarise(df).itertuples():
        table.add_row(str(r.object), str(r.roi), str(r.lesions), f"{r.total_um3:.4g}",
                      f"{r.median_um3:.4g}")  # fmt: skip
    out.print(table)
