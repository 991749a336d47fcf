"""An HTML report of a study.

An HTML report of a study: what is in the stores, how well they are registered, what the
per-voxel tables say (category medians, tests, effect sizes), figures, and provenance.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bridge_xr import __version__
from bridge_xr.errors import InvalidInputError
from bridge_xr.extract.tables import read_tables
from bridge_xr.stats import plots
from bridge_xr.stats.categories import DENSITY_BINS
from bridge_xr.stats.dispatch import run_test
from bridge_xr.stats.group_tests import spearman


def _table(df: pd.DataFrame, digits: int = 4) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.{digits}g}", border=0)


def _subjects(study: str | Path, live: bool = False) -> list[dict[str, Any]]:
    from bridge_xr.io.locations import name_of
    from bridge_xr.io.study import subject_stores
    from bridge_xr.io.subject import read_subject

    rows = []
    for store in subject_stores(study, live=live):
        meta = read_subject(str(store))
        regs = [
            {
                "name": r.name,
                "fixed": r.fixed,
                "moving": r.moving,
                "model": r.model,
                "landmarks": len(r.landmarks.landmarks),
                "rmse_um": r.report.get("rmse_um"),
                "loo_tre_rms_um": r.report.get("loo_tre_rms_um"),
            }
            for r in meta.registrations.values()
        ]
        rows.append(
            {
                "store": name_of(store),
                "images": sorted(meta.images),
                "registrations": regs,
                "provenance": [p.model_dump(mode="json") for p in meta.provenance][-30:],
            }
        )
    return rows


def analyse(df: pd.DataFrame, response: str) -> list[dict[str, Any]]:
    """Per microscopy channel: category summary, KW-Dunn and ANOVA-Tukey, Spearman."""
    results = []
    for col in sorted(c for c in df.columns if c.startswith("fraction_")):
        data = df[[response, col]].dropna()
        if data[col].nunique() < 2:
            continue
        kw, dunn = run_test(data, response=response, by=col, test="kruskal-dunn", bins=DENSITY_BINS)
        an, tukey = run_test(data, response=response, by=col, test="anova-tukey", bins=DENSITY_BINS)
        rho = spearman(data[col].to_numpy(float), data[response].to_numpy(float))
        results.append(
            {
                "channel": col.removeprefix("fraction_"),
                "column": col,
                "summary": kw.attrs["summary"],
                "kruskal": kw,
                "dunn": dunn,
                "anova": an,
                "tukey": tukey,
                "spearman": rho,
            }
        )
    return results


_TABLES = (".csv", ".parquet", ".tsv")
_FIGURES = (".png", ".svg")


def write_report(
    study: str | Path,
    output: str | Path,
    *,
    tables: str | Path | None = None,
    live: bool = False,
    include: Sequence[str | Path] = (),
) -> Path:
    """Write ``output/index.html`` (+ figures, CSVs, ``summary.json``); returns the index path.

    Parameters
    ----------
    study : str or path
        Folder of subject stores, or an archived study's ``s3://`` prefix.
    output : str or path
        Report folder (local).
    tables : str or path, optional
        Tables folder or ``s3://`` prefix (default: ``study/tables``).
    live : bool
        Read an ``s3://`` study that has no archive manifest.
    include : sequence of paths
        Further results to show in an "Analyses" section, in order: tables (``.csv``,
        ``.parquet``, ``.tsv``: lesion, colocalisation, PSE, equivalence tables) rendered and
        copied, figures (``.png``, ``.svg``) copied and shown.

    Returns
    -------
    Path
        ``output/index.html``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.extract import extract_study
    >>> from bridge_xr.testing import tiny_scene
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = tiny_scene(registered=True, where=root / "study" / "M001.ome.zarr")
    >>> _ = extract_study(root / "study", root / "study" / "tables", thresholds={"*": 100})
    >>> write_report(root / "study", root / "report").name
    'index.html'
    """
    # long by design: an HTML page assembled section by section
    from bridge_xr.io.locations import exists, is_remote, join, name_of

    extras = [Path(x) for x in include]
    for x in extras:  # all checked before anything is written
        if not x.is_file():
            raise InvalidInputError(f"--include {str(x)!r}: no such file")
        if x.suffix.lower() not in (*_TABLES, *_FIGURES):
            raise InvalidInputError(
                f"--include {str(x)!r}: give a table (.csv, .parquet, .tsv) or a figure (.png, .svg)"
            )
    tables = tables if tables else join(study, "tables")
    if not is_remote(tables):
        tables = Path(tables)
    if not exists(tables):
        raise InvalidInputError(f"no tables at {str(tables)!r}; run `bridge extract-study` first")
    df = read_tables(tables)
    output = Path(output)
    figs = output / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    response = "mri_z" if "mri_z" in df.columns and df["mri_z"].notna().any() else "mri"
    subjects = _subjects(study, live)
    results = analyse(df, response)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>bridge_xr report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse;font-size:12px}td,th{padding:2px 8px;border-bottom:"
        "1px solid #ddd}img{max-width:48%}</style></head><body>",
        f"<h1>bridge_xr report: {html.escape(name_of(study))}</h1>",
        f"<p>bridge_xr {__version__}, {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')}; "
        f"tables: {html.escape(str(tables))}; response: <b>{response}</b></p>",
        "<h2>Voxels per subject and session</h2>",
        _table(df.groupby(["subject", "session"]).size().reset_index(name="voxels")),
        "<h2>Registrations</h2>",
    ]
    regs = pd.DataFrame([{"store": s["store"], **r} for s in subjects for r in s["registrations"]])
    parts.append(_table(regs) if not regs.empty else "<p>none</p>")
    summary: dict[str, Any] = {"response": response, "voxels": len(df), "channels": {}}
    for r in results:
        ch = r["channel"]
        box = plots.box(df, response=response, by=r["column"], output=figs / f"box_{ch}.png")
        heat = plots.heatmap(df, x=r["column"], y=response, output=figs / f"heatmap_{ch}.png")
        for name in ("summary", "kruskal", "dunn", "anova", "tukey"):
            r[name].to_csv(output / f"{ch}_{name}.csv", index=False)
        parts += [
            f"<h2>{html.escape(response)} by {html.escape(ch)} density</h2>",
            f"<img src='figures/{box[0].name}'><img src='figures/{heat[0].name}'>",
            "<h3>Per category</h3>",
            _table(r["summary"]),
            "<h3>Kruskal-Wallis + Dunn (Bonferroni)</h3>",
            _table(r["kruskal"]),
            _table(r["dunn"]),
            "<h3>ANOVA + Tukey HSD</h3>",
            _table(r["anova"]),
            _table(r["tukey"]),
            f"<p>Spearman rho = {r['spearman']['statistic']:.3f}, "
            f"p = {r['spearman']['p']:.3g}, n = {r['spearman']['n']}</p>",
        ]
        med = r["summary"].set_index("group")["median"]
        summary["channels"][ch] = {
            "medians": {str(k): float(v) for k, v in med.items()},
            "kruskal_p": float(r["kruskal"]["p"].iloc[0]),
            "anova_p": float(r["anova"]["p"].iloc[0]),
            "spearman_rho": float(r["spearman"]["statistic"]),
            "spearman_p": float(r["spearman"]["p"]),
        }
    longi = join(tables, "longitudinal")
    if exists(longi):
        ldf = read_tables(longi)
        col = "mri_z" if "mri_z" in ldf.columns else "mri"
        tl = plots.timeline(ldf, response=col, output=figs / "timeline.png")
        parts += [
            "<h2>Longitudinal</h2>",
            f"<img src='figures/{tl[0].name}'>",
            _table(ldf.groupby(["subject", "session", "day"]).size().reset_index(name="voxels")),
        ]
    if extras:
        parts.append("<h2>Analyses</h2>")
        summary["included"] = []
        for k, x in enumerate(extras):
            dest = f"{k:02d}_{x.name}"
            parts.append(f"<h3>{html.escape(x.name)}</h3>")
            if x.suffix.lower() in _FIGURES:
                shutil.copyfile(x, figs / dest)
                parts.append(f"<img src='figures/{html.escape(dest)}'>")
            else:
                shutil.copyfile(x, output / dest)
                parts.append(_table(read_tables(x)))
                parts.append(f"<p><a href='{html.escape(dest)}'>{html.escape(dest)}</a></p>")
            summary["included"].append(dest)
    parts.append("<h2>Provenance</h2>")
    for s in subjects:
        parts.append(f"<h3>{html.escape(s['store'])}</h3><ul>")
        parts += [
            f"<li>{html.escape(p.get('operation', ''))} — {html.escape(str(p.get('time', '')))}</li>"
            for p in s["provenance"]
        ]
        parts.append("</ul>")
    parts.append("</body></html>")
    index = output / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    (output / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return index
