"""``bridge linescan velocity``: red-cell velocity from a line-scan kymograph."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bridge_xr_cli._common import handle_errors, out

app = typer.Typer(help="Line scans: red-cell velocity from kymographs.", no_args_is_help=True)


class VelocityMethod(StrEnum):
    """``bridge_xr.linescan.velocity`` methods."""

    radon = "radon"
    manual = "manual"


@app.command("velocity")
@handle_errors
def velocity(
    scan: Annotated[Path, typer.Argument(help="line scan (.czi or .tif): rows = time")],
    output: Annotated[
        Path | None, typer.Option(help="CSV of windows (summary: same name .json)")
    ] = None,
    figure: Annotated[Path | None, typer.Option(help="PNG: velocity over time + kymograph")] = None,
    pixel_size: Annotated[
        str | None, typer.Option(help="pixel size with its unit (only if the file lacks it)")
    ] = None,
    line_time: Annotated[
        str | None, typer.Option(help="line time with its unit, e.g. 0.15ms (if the file lacks it)")
    ] = None,
    pixel_dwell: Annotated[
        str | None,
        typer.Option(help="pixel dwell with its unit, e.g. 1.2us: corrects the scan skew"),
    ] = None,
    method: Annotated[
        VelocityMethod, typer.Option(help="radon (automatic windows) or manual (drawn lines)")
    ] = VelocityMethod.radon,
    lines: Annotated[
        Path | None, typer.Option(help="manual: CSV x0,y0,x1,y1 of lines along streaks (pixels)")
    ] = None,
    window: Annotated[int | None, typer.Option(help="Radon window, lines = pixels")] = None,
    channel: Annotated[
        int | None, typer.Option(help="channel index of a multichannel file")
    ] = None,
) -> None:
    """Velocity (mm/s, signed: + along the scan) per window, mean, |mean| and SD."""
    from bridge_xr.linescan import velocity as run
    from bridge_xr.model.units import conversion_factor, parse_length, parse_time

    px = None
    if pixel_size:  # a unit is required: a bare number could be in any unit
        value, unit = parse_length(pixel_size)
        px = value * conversion_factor(unit, "micrometer")
    res = run(
        scan,
        pixel_size_um=px,
        line_time_ms=parse_time(line_time) if line_time else None,
        pixel_dwell_us=parse_time(pixel_dwell, to="microsecond") if pixel_dwell else None,
        method=method.value,
        lines=lines,
        window=window,
        channel=channel,
        output=output,
        figure=figure,
    )
    s = res.summary
    skew = "skew corrected" if s["skew_corrected"] else "no pixel dwell: skew NOT corrected"
    if res.method == "radon":
        out.print(
            f"{s['n']}/{s['n_windows']} windows kept; measurable {s['measurable_min_mm_s']:.3g}"
            f"-{s['measurable_max_mm_s']:.3g} mm/s; {skew}"
        )
    out.print(
        f"velocity {s['mean_mm_s']:.4g} mm/s (|mean| {s['abs_mean_mm_s']:.4g}, SD "
        f"{s['sd_mm_s']:.3g}, {s['direction']})"
    )
