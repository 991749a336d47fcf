"""``bridge info`` and ``bridge validate``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from bridge_xr_cli._common import Live, fail, handle_errors, out


def _short_unit(unit: str) -> str:
    return {"micrometer": "µm", "millimeter": "mm", "nanometer": "nm", "meter": "m"}.get(unit, unit)


def _fmt_extent(extent: dict[str, list[float]], unit: str) -> str:
    return " × ".join(f"{hi - lo:.4g}" for lo, hi in extent.values()) + f" {unit}"


def _study(d: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    arc = d["archive"]
    note = (
        f"archive: {arc['count']} objects, {arc['total_bytes'] / 1e6:.1f} MB, {arc['created']}"
        if arc
        else "no archive manifest"
    )
    out.print(f"[bold]{d['study']}[/]  study of {len(d['subjects'])} subjects; {note}")
    table = Table(show_lines=False)
    for col in ("subject", "store", "images", "registrations"):
        table.add_column(col)
    for s in d["subjects"]:
        table.add_row(s["subject"], s["store"], str(s["images"]), str(s["registrations"]))
    out.print(table)


@handle_errors
def main(
    store: Annotated[
        str, typer.Argument(help="subject store, or a study (folder or s3:// prefix)")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    live: Live = False,
) -> None:
    """Images, shapes, physical extent, units, transforms and provenance of a store.

    Given a study (a folder or an s3:// prefix of subject stores): its subjects and archive.
    """
    from bridge_xr.io.study import describe_study, is_study

    if is_study(store):
        _study(describe_study(store, live=live), as_json)
        return
    from bridge_xr.scene.info import describe

    d = describe(store)
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    out.print(f"[bold]{d['store']}[/]  reference image: {d['reference_image']}")
    table = Table(show_lines=False)
    for col in ("image", "shape", "voxel", "extent", "levels"):
        table.add_column(col, overflow="fold")
    for path, im in d["images"].items():
        unit = _short_unit(im["unit"])
        dims = "".join(im["dims"])
        voxel = "×".join(f"{v:.4g}" for v in im["spacing"].values())
        table.add_row(
            f"{path}\n[dim]{im['modality']}, {im['dtype']}[/]",
            f"{'×'.join(map(str, im['shape']))}\n[dim]{dims}[/]",
            f"{voxel} {unit}",
            _fmt_extent(im["extent"], unit),
            str(im["levels"]),
        )
    out.print(table)
    for t in d["scene_transforms"]:
        out.print(f"edge {t.get('name', '')}: {t['type']} {t['input']} -> {t['output']}")
    if d["registrations"]:
        regs = Table(title="registrations joining images", show_lines=False)
        for col in ("images", "chains", "used without --via"):
            regs.add_column(col, overflow="fold")
        for pair in d["registrations"]:
            chains = "\n".join(
                " -> ".join(f"{n}*" if n in pair["current"] else n for n in c)
                for c in pair["chains"]
            )
            used = " -> ".join(pair["used"]) if pair["used"] else "[red]ambiguous: needs --via[/]"
            regs.add_row("\n".join(pair["images"]), chains, used)
        out.print(regs)
        out.print("[dim]* marked current (`bridge register --current`, `bridge set-current`)[/]")
    for path, im in d["images"].items():
        prov: dict[str, Any] | None = im["provenance"]
        if prov:
            out.print(
                f"{path}: {prov['operation']} from {', '.join(prov['inputs'])} ({prov['created']}, bridge_xr {prov['version']})"
            )


@handle_errors
def validate(
    store: Annotated[
        str, typer.Argument(help="subject store to check with independent validators")
    ],
) -> None:
    """Validate every image and the scene with ngff-zarr and ome-zarr-models."""
    from bridge_xr.io.validate import validate_store

    problems = validate_store(store)
    if problems:
        for p in problems[:-1]:
            typer.echo(p, err=True)
        raise fail(problems[-1])
    out.print("valid: every image and the scene pass ngff-zarr and ome-zarr-models")
