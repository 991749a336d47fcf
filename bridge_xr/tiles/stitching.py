"""``bridge stitch``: pairwise phase correlation of overlapping tiles, then one global solve.

1. Overlaps come from the **stage** layout (every pair sharing ≥ 8 voxels in y and x).
2. Each overlap is registered (:func:`bridge_xr.tiles.pairwise.pair_shift`) within the stage
   error bound (``TileScan.stage_error_um``), one task per link on the active scheduler.
3. Links whose quality (NCC) is below ``min_quality`` are dropped; the rest enter one weighted
   least-squares problem for the per-tile corrections ``c`` (``c_j - c_i = shift_ij``, weight =
   quality), with the mean correction of every connected group held at zero (the stage's own
   mean position is kept). The link with the largest residual above ``max_residual`` voxels is
   dropped and the solve repeated, until every residual is small. Tiles left without a link keep
   their stage position and are reported.
4. A layout where fewer than half of the side-by-side overlaps (spanning at least half a tile;
   corner overlaps do not count) match is refused: the stage metadata is then
   almost certainly wrong (flipped/swapped axes, serpentine order, units).

5. ``model="rigid"`` or ``"affine"`` then refines the translation solution from block-wise
   matches in every kept overlap (:mod:`bridge_xr.tiles.refine`).

The registered positions (or maps) go into a second scene edge per tile; the stage edge stays.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse.csgraph import connected_components

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.ome_zarr import write_multiscale
from bridge_xr.io.subject import read_subject
from bridge_xr.model.metadata import Provenance, TileScan
from bridge_xr.tiles._run import run_tasks
from bridge_xr.tiles.flatfield import estimate_flatfield
from bridge_xr.tiles.layout import layout_figure, overlaps
from bridge_xr.tiles.pairwise import pair_shift
from bridge_xr.tiles.refine import crop_slices, points_task, read_crop, refine_affine
from bridge_xr.tiles.scan import publish_scan, put_bytes, read_tile_scan, side_key, tile_array


@dataclass
class StitchResult:
    """What ``stitch`` found: the updated scan, every link, and the summary."""

    scan: TileScan
    links: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)


def _link_task(
    store: Any,
    pi: str,
    pj: str,
    si: tuple[slice, ...],
    sj: tuple[slice, ...],
    channel: int | None,
    ff: np.ndarray | None,
    bound: np.ndarray,
) -> Any:
    a = read_crop(store, pi, si, channel, ff)
    b = read_crop(store, pj, sj, channel, ff)
    return pair_shift(a, b, bound_px=bound)


def solve(
    n: int,
    links: list[tuple[int, int, np.ndarray, float]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-tile corrections (n, 3) from links ``(i, j, shift, weight)``; residuals; groups.

    Each connected group's mean correction is zero (one gauge row per group and axis).
    """
    if links:
        ij = np.array([(i, j) for i, j, *_ in links])
        adj = np.zeros((n, n), bool)
        adj[ij[:, 0], ij[:, 1]] = True
        _, group = connected_components(adj, directed=False)
    else:
        group = np.arange(n)
    groups = np.unique(group)
    rows = len(links) + len(groups)
    a = np.zeros((rows, n))
    for r, (i, j, _, w) in enumerate(links):
        a[r, i], a[r, j] = -np.sqrt(w), np.sqrt(w)
    for g_row, g in enumerate(groups):
        a[len(links) + g_row, group == g] = 1.0
    rhs = np.zeros((rows, 3))
    for r, (_, _, s, w) in enumerate(links):
        rhs[r] = np.sqrt(w) * np.asarray(s)
    c = np.linalg.lstsq(a, rhs, rcond=None)[0]
    res = np.array([np.linalg.norm(c[j] - c[i] - s) for i, j, s, _ in links])
    return c, res, group


def stitch(
    where: StoreLike,
    scan_path: str,
    *,
    channel: str | int | None = None,
    flatfield: bool = False,
    min_quality: float = 0.3,
    max_residual: float = 1.5,
    corners: bool = False,
    stage_error: str | None = None,
    model: str = "translation",
    report: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Any = None,
) -> StitchResult:
    """Register a tile scan's tiles to each other; record a **registered** edge per tile.

    Parameters
    ----------
    where : str, path or zarr store
        The subject store.
    scan_path : str
        The tile scan (``bridge convert tiles``).
    channel : str or int, optional
        Channel to register on (name or index; default the first).
    flatfield : bool
        Estimate a flat field from the tiles first (kept at ``<scan>/flatfield``, used by fuse).
    min_quality : float
        Least NCC of a usable link.
    max_residual : float
        Largest residual (voxels) of a kept link after the global solve.
    corners : bool
        Also use corner overlaps (diagonal neighbours; small, so easily matched wrongly).
    stage_error : str, optional
        Override the scan's stage error bound (e.g. ``"20um"``).
    model : {'translation', 'rigid', 'affine'}
        ``rigid`` and ``affine`` refine the translation solution with a rotation, or a 2-D
        affine, per tile (y, x) from block-wise correspondences in every kept overlap
        (:mod:`bridge_xr.tiles.refine`): for tiles that differ in rotation or magnification.
    report : path, optional
        Folder for ``stitch.json``, ``layout_registered.png`` and ``residuals.png``.
    storage_options : dict, optional
        fsspec options for URLs.
    progress : callable, optional
        ``progress(done, total)`` over the links.

    Returns
    -------
    StitchResult
    """
    # long by design: links, solve, robust pruning, record and report are one pass over one table
    from bridge_xr.tiles.convert import _um

    if model not in {"translation", "rigid", "affine"}:
        raise InvalidInputError(f"stitch model must be translation, rigid or affine; got {model!r}")
    store = resolve_store(where, storage_options=storage_options)
    scan = read_tile_scan(store, scan_path)
    subject = read_subject(store)
    sp = np.asarray(scan.spacing_um, float)
    arrays = [tile_array(store, t.path) for t in scan.tiles]
    shapes = [tuple(a.shape[-3:]) for a in arrays]
    ch = _channel_index(scan, channel)
    stage = np.array([t.stage_um for t in scan.tiles], float)
    ff = None
    ff_path = scan.flatfield
    if flatfield:
        ff = estimate_flatfield(store, scan)
        ff_path = f"{scan.path}/flatfield"
        dims = "cyx" if ff.ndim == 3 else "yx"
        write_multiscale(
            store,
            ff_path,
            ff,
            dims=dims,
            unit="micrometer",
            levels=1,
            spacing={"y": sp[1], "x": sp[2]},
        )
    elif scan.flatfield:
        ff = np.asarray(tile_array(store, scan.flatfield)[...])
    err_um = float(
        (_um(stage_error) if stage_error else None)
        or scan.stage_error_um
        or 0.1 * shapes[0][2] * sp[2]
    )
    bound = np.maximum(np.ceil(err_um / sp), 1)
    pairs = overlaps(stage, shapes, sp)
    tasks, meta = [], []
    for o in pairs:
        d = (stage[o.j] - stage[o.i]) / sp
        dr = np.rint(d)
        si, sj = crop_slices(dr, shapes[o.i], shapes[o.j])
        tasks.append((store, scan.tiles[o.i].path, scan.tiles[o.j].path, si, sj, ch, ff, bound))
        side = any(o.size_px[a] >= 0.5 * min(shapes[o.i][a], shapes[o.j][a]) for a in (1, 2))
        meta.append((o.i, o.j, d, dr, side))
    results = run_tasks(_link_task, tasks, progress=progress)
    links: list[dict[str, Any]] = []
    for (i, j, d, dr, side), r in zip(meta, results, strict=True):
        corr = dr + np.asarray(r.shift_px) - d
        reason = r.reason or (
            f"quality {r.quality:.2f} < {min_quality}" if r.quality < min_quality else ""
        )
        if not side and not corners:
            reason = reason or "corner overlap (pass corners=True to use it)"
        links.append(
            {
                "i": i,
                "j": j,
                "tile_i": scan.tiles[i].id,
                "tile_j": scan.tiles[j].id,
                "stage_offset_um": (d * sp).round(4).tolist(),
                "correction_px": corr.round(4).tolist(),
                "quality": round(r.quality, 4),
                "used": not reason,
                "reason": reason,
                "side": side,
                "residual_px": None,
            }
        )
    while True:
        used = [k for k, lk in enumerate(links) if lk["used"]]
        eqs = [
            (
                links[k]["i"],
                links[k]["j"],
                np.array(links[k]["correction_px"]),
                max(links[k]["quality"], 1e-3),
            )
            for k in used
        ]
        c, res, group = solve(len(scan.tiles), eqs)
        for k, rv in zip(used, res, strict=True):
            links[k]["residual_px"] = round(float(rv), 4)
        if not len(res) or res.max() <= max_residual:
            break
        worst = used[int(np.argmax(res))]
        links[worst]["used"] = False
        links[worst]["reason"] = (
            f"residual {res.max():.2f} px > {max_residual} px after the global solve"
        )
    n_ok = sum(lk["used"] for lk in links)
    linked = {lk["i"] for lk in links if lk["used"]} | {lk["j"] for lk in links if lk["used"]}
    unlinked = [t.id for k, t in enumerate(scan.tiles) if k not in linked]
    registered = stage + c * sp
    affines = None
    if model != "translation":
        affines, refine_summary = _refine(
            store, scan, links, registered, shapes, sp, ch, ff, model, min_quality, max_residual
        )
        registered = affines[:, :, 3]
    summary = {
        "model": model,
        "links": len(links),
        "links_used": n_ok,
        "links_dropped": [
            {"tiles": [lk["tile_i"], lk["tile_j"]], "reason": lk["reason"]}
            for lk in links
            if not lk["used"]
        ],
        "residual_rms_px": float(np.sqrt(np.mean(res**2))) if len(res) else None,
        "residual_max_px": float(res.max()) if len(res) else None,
        "unlinked_tiles": unlinked,
        "groups": int(len(np.unique(group[sorted(linked)]))) if linked else 0,
        "correction_max_um": float(np.abs(c * sp).max()),
        "stage_error_um": float(err_um),
        "min_quality": min_quality,
        "flatfield": ff_path,
    }
    if affines is not None:
        summary.update(refine_summary)
    ids = [t.id for t in scan.tiles]
    figures = {
        "layout_registered.png": layout_figure(
            ids,
            registered,
            shapes,
            sp,
            compare_um=stage,
            links=links,
            title=f"{scan.path}: registered (stage dashed; dropped links red)",
        ),
        "residuals.png": _residual_figure(links),
    }
    if report is not None:
        out = Path(report)
        out.mkdir(parents=True, exist_ok=True)
        (out / "stitch.json").write_text(json.dumps({"summary": summary, "links": links}, indent=1))
        for name, png in figures.items():
            (out / name).write_bytes(png)
    sides = [lk for lk in links if lk["side"]]
    n_side = sum(lk["used"] for lk in sides)
    if sides and n_side < 0.5 * len(sides):
        raise InvalidInputError(
            f"only {n_side} of {len(sides)} side-by-side overlaps of {scan.path!r} match "
            f"(quality ≥ {min_quality}):"
            " the stage layout is probably wrong (flipped or swapped axes, serpentine order, "
            "units); check the stage layout figure and convert again with --flip-x/--flip-y/"
            "--swap-xy" + (f" (report in {report})" if report else "")
        )
    tiles = tuple(
        t.model_copy(
            update={
                "registered_um": tuple(round(float(v), 6) for v in registered[k]),
                "registered_affine": None
                if affines is None
                else tuple(tuple(round(float(v), 9) for v in row) for row in affines[k]),
            }
        )
        for k, t in enumerate(scan.tiles)
    )
    prov = Provenance.now(
        "stitch",
        image=scan.path,
        channel=ch,
        flatfield=flatfield,
        min_quality=min_quality,
        max_residual=max_residual,
        model=model,
    )
    scan = scan.model_copy(
        update={
            "tiles": tiles,
            "flatfield": ff_path,
            "stitch": summary,
            "provenance": (*scan.provenance, prov),
        }
    )
    put_bytes(
        store,
        side_key(scan.path, "stitch.json"),
        json.dumps({"summary": summary, "links": links}, indent=1).encode(),
    )
    for name, png in figures.items():
        put_bytes(store, side_key(scan.path, name), png)
    publish_scan(store, subject, scan)
    return StitchResult(scan, links, summary, figures)


def _refine(
    store: Any,
    scan: TileScan,
    links: list[dict[str, Any]],
    registered: np.ndarray,
    shapes: list[tuple[int, ...]],
    sp: np.ndarray,
    ch: int | None,
    ff: np.ndarray | None,
    model: str,
    min_quality: float,
    max_residual: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Rigid/affine refinement of the translation solution; adds per-link figures to ``links``."""
    used = [lk for lk in links if lk["used"]]
    tasks = []
    for lk in used:
        i, j = lk["i"], lk["j"]
        d = np.rint((registered[j] - registered[i]) / sp)
        si, sj = crop_slices(d, shapes[i], shapes[j])
        tasks.append((store, scan.tiles[i].path, scan.tiles[j].path, si, sj, ch, ff))
    found = run_tasks(points_task, tasks)
    points, owner = [], []
    for k, (lk, pts) in enumerate(zip(used, found, strict=True)):
        for p_i, p_j, q in pts:
            if q < min_quality:
                continue
            points.append((lk["i"], lk["j"], p_i, p_j, q))
            owner.append(k)
    affines, keep, res = refine_affine(
        points, registered, shapes, sp, model=model, max_residual_px=max_residual
    )
    px = float(np.mean(sp[1:]))
    own = np.asarray(owner, int)
    trans = (
        np.array(
            [
                np.linalg.norm((registered[j] + p_j * sp - registered[i] - p_i * sp)[1:])
                for i, j, p_i, p_j, _ in points
            ]
        ).reshape(-1)
        / px
    )
    for k, lk in enumerate(used):
        mine = (own == k) & keep
        lk["points"] = int(mine.sum())
        lk["points_dropped"] = int(((own == k) & ~keep).sum())
        lk["point_residual_px"] = (
            round(float(np.sqrt(np.mean(res[mine] ** 2))), 4) if mine.any() else None
        )
        lk["translation_point_residual_px"] = (
            round(float(np.sqrt(np.mean(trans[mine] ** 2))), 4) if mine.any() else None
        )
    lin = affines[:, 1:, 1:3]
    rot = np.degrees(np.arctan2(lin[:, 1, 0] - lin[:, 0, 1], lin[:, 0, 0] + lin[:, 1, 1]))
    mag = np.sqrt(np.abs(np.linalg.det(lin)))
    summary = {
        "points": int(keep.sum()),
        "points_dropped": int((~keep).sum()),
        "point_residual_rms_px": float(np.sqrt(np.mean(res[keep] ** 2))) if keep.any() else None,
        "translation_point_rms_px": float(np.sqrt(np.mean(trans[keep] ** 2)))
        if keep.any()
        else None,
        "rotation_deg_range": [round(float(rot.min()), 4), round(float(rot.max()), 4)],
        "magnification_range": [round(float(mag.min()), 6), round(float(mag.max()), 6)],
    }
    return affines, summary


def _channel_index(scan: TileScan, channel: str | int | None) -> int | None:
    names = scan.channel_names
    if channel is None:
        return None if names is None else 0
    if isinstance(channel, int) or str(channel).isdigit():
        k = int(channel)
        if names is None or not 0 <= k < len(names):
            raise InvalidInputError(f"tile scan {scan.path!r} has no channel {k}")
        return k
    if names is None or channel not in names:
        raise InvalidInputError(
            f"tile scan {scan.path!r} has no channel {channel!r} (channels: {names or 'none'})"
        )
    return names.index(str(channel))


def _residual_figure(links: list[dict[str, Any]]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    labels = [f"{lk['tile_i']}-{lk['tile_j']}" for lk in links]
    vals = [lk["residual_px"] if lk["residual_px"] is not None else 0.0 for lk in links]
    colors = ["C2" if lk["used"] else "red" for lk in links]
    ax.bar(range(len(links)), vals, color=colors, label="link (translation solve)")
    refined = [k for k, lk in enumerate(links) if lk.get("point_residual_px") is not None]
    if refined:  # block matches of stitch --model rigid|affine, before and after the refinement
        ax.plot(
            refined,
            [links[k]["translation_point_residual_px"] for k in refined],
            "x",
            color="0.4",
            label="block matches, translation",
        )
        ax.plot(
            refined,
            [links[k]["point_residual_px"] for k in refined],
            "o",
            color="k",
            ms=3,
            label="block matches, refined",
        )
        ax.legend(fontsize=6)
    ax.set_xticks(range(len(links)), labels, rotation=90, fontsize=6)
    ax.set_ylabel("residual (voxels)")
    ax.set_title("per-link residual after the global solve (red: dropped)", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
