"""``bridge archive`` and ``bridge verify``: studies in object stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bridge_xr_cli._common import byte_progress, handle_errors, out

Workers = Annotated[int, typer.Option("--workers", min=1, help="objects in flight at once")]


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@handle_errors
def archive(
    study: Annotated[Path, typer.Argument(help="study folder (subject stores, tables, ...)")],
    target: Annotated[str, typer.Argument(help="archive prefix: s3://BUCKET/PREFIX or a folder")],
    workers: Workers = 8,
    resume: Annotated[
        bool, typer.Option("--resume", help="finish an unfinished archive (sends what is missing)")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace the archive there (equal objects are kept)")
    ] = False,
) -> None:
    """Archive a study: every object with its SHA-256, then the manifest (create-only)."""
    from bridge_xr.archive import archive_study

    with byte_progress(f"archiving to {target}") as cb:
        r = archive_study(
            study, target, workers=workers, resume=resume, overwrite=overwrite, progress=cb
        )
    if r.already_complete:
        out.print(
            f"{r.target}: already complete ({r.objects} objects, {_mb(r.bytes)}); nothing sent"
        )
        return
    out.print(
        f"{r.objects} objects ({_mb(r.bytes)}) -> {r.target}: {r.sent} sent ({_mb(r.sent_bytes)}), "
        f"{r.kept} already there"
        + (f", {r.deleted} removed" if r.deleted else "")
        + (
            f", {r.aborted_uploads} abandoned multipart uploads aborted"
            if r.aborted_uploads
            else ""
        )
    )


@handle_errors
def verify(
    target: Annotated[str, typer.Argument(help="archive prefix: s3://BUCKET/PREFIX or a folder")],
    deep: Annotated[
        bool, typer.Option("--deep", help="read every object and compare its SHA-256")
    ] = False,
    workers: Workers = 8,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Check an archive against its manifest: missing, extra, truncated and corrupted objects.

    Exit status 0 when all is well, 1 when anything is wrong (listed), 2 on bad input.
    """
    from bridge_xr.archive import verify_archive

    with byte_progress(f"verifying {target}") as cb:
        rep = verify_archive(target, deep=deep, workers=workers, progress=cb)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "target": rep.target,
                    "deep": rep.deep,
                    "objects": rep.objects,
                    "bytes": rep.bytes,
                    "ok": rep.ok,
                    "problems": [p.__dict__ for p in rep.problems],
                },
                indent=2,
            )
        )
    elif rep.ok:
        how = "read and hashed" if deep else "sizes and recorded checksums"
        out.print(f"{rep.target}: {rep.objects} objects ({_mb(rep.bytes)}) OK ({how})")
    else:
        table = Table(title=f"{rep.target}: {len(rep.problems)} problems")
        for col in ("key", "problem", "expected", "found"):
            table.add_column(col, overflow="fold")
        for p in rep.problems:
            table.add_row(p.key, p.kind, p.expected, p.found)
        out.print(table)
    if not rep.ok:
        raise typer.Exit(code=1)
