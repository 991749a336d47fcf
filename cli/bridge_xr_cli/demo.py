"""``bridge demo``: a phantom study through the whole pipeline, ending with a report."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bridge_xr_cli._common import console, handle_errors, out


class Size(StrEnum):
    """Phantom sizes."""

    tiny = "tiny"
    default = "default"


@handle_errors
def main(
    out_dir: Annotated[
        Path, typer.Option("--out", help="folder for the demo study and report")
    ] = Path("demo-out"),
    size: Annotated[
        Size, typer.Option(help="phantom size: tiny (seconds) or default")
    ] = Size.default,
    seed: Annotated[int, typer.Option(help="phantom random seed")] = 0,
) -> None:
    """Build a synthetic study (phantom), convert it, check it, and summarise."""
    from bridge_xr.testing.demo import run_demo

    summary = run_demo(out_dir, size=size.value, seed=seed, status=console.status)
    out.print(summary.sentence())
    if not summary.passed:
        raise typer.Exit(code=1)
