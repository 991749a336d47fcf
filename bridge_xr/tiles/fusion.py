"""``bridge fuse``: one image from a tile scan, one task per output shard, resumable.

Every level-0 shard of the output is one task: it finds the tiles whose (registered, else
stage) box touches the shard, reads only those regions, samples them at the output voxels
(a pure translation, so separable: nearest or linear per axis), blends overlaps with linear ramps
(weight = product over y, x of ``min(1, distance to the tile's edge / blend)``), writes the
whole shard and the matching shards of the pyramid levels fused below it, and then records
itself as done. No shard has two writers, so tile/shard geometry can never lose a write.

Resume: completion records live next to the image, outside it, at
``bridge_xr/fusion/<image>/<fingerprint>/done/<shard>``; the fingerprint hashes the scan's record
(tiles, positions, flat field, provenance), the parameters and the output layout. A rerun with
the same fingerprint redoes only the shards without a record; a different fingerprint starts
afresh. The image is published (group metadata, then the subject) only when every shard is done,
so a reader never sees a half-fused image; then the records are removed. The fused image's µm
*are* the layout's: an identity scene edge ``<image>:layout`` joins it to ``<scan>:registered``
(or ``:stage``), so points on any raw tile map into the fused image and on along its
registrations (``transform-points --from <scan>/t003 --to invivo_mri/T2w``). A new ``stitch``
of the scan drops that edge (the fused image no longer matches the new layout).

Tiles placed by an affine (``stitch --model rigid|affine``) are sampled through it instead
(:func:`_accumulate_affine`: per output plane, the inverse map to tile voxels and
``scipy.ndimage.map_coordinates``, linear or nearest; ramps from the tile coordinates); slower
than the translation kernel, and only for those tiles.

Voxels no tile covers are 0. Flat-field correction (``stitch --flatfield``) divides each tile by
the field before blending.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zarr
from zarr.core.sync import sync

from bridge_xr._constants import ATTRS_KEY, INTRINSIC
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._fillcheck import write_region
from bridge_xr.io._plan import plan_storage
from bridge_xr.io._store import (
    StoreLike,
    delete_prefix,
    describe_store,
    invalidate,
    key_exists,
    resolve_store,
)
from bridge_xr.io.downsample import downsample_block
from bridge_xr.io.ome_zarr import (
    _publish_group_attrs,
    create_level_arrays,
    fused_level_count,
    level_steps,
    multiscales_attrs,
    write_tail_levels,
)
from bridge_xr.io.subject import (
    _touches,
    check_image_path,
    publish_subject,
    read_subject,
    scene_systems,
    scene_transforms,
)
from bridge_xr.model.metadata import Acquisition, ImageMetadata, Provenance, TileScan
from bridge_xr.model.transforms import CoordinateSystemRef, Identity
from bridge_xr.tiles._run import run_tasks
from bridge_xr.tiles.scan import (
    REGISTERED,
    STAGE,
    list_prefix,
    positions_of,
    put_bytes,
    read_tile_scan,
    system_name,
    tile_array,
    tile_matrices,
)

Interpolation = Literal["linear", "nearest"]
_DELAY_ENV = "BRIDGE_XR_TEST_FUSE_DELAY"  # seconds to wait after each shard (kill tests)


@dataclass(frozen=True)
class TilePlace:
    """Where one tile lies in the output grid (voxels of level 0)."""

    path: str
    origin: tuple[float, ...]  # output voxel coordinate of the tile's voxel (0, 0, 0)
    shape: tuple[int, ...]
    matrix: tuple[tuple[float, ...], ...] | None = None  # 3 x 4: tile voxel -> output voxel

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """Output voxel bounds (lowest, highest) of the tile's voxel centres."""
        if self.matrix is None:
            o = np.asarray(self.origin)
            return o, o + np.asarray(self.shape) - 1
        m = np.asarray(self.matrix)
        corners = np.array(np.meshgrid(*[(0, n - 1) for n in self.shape], indexing="ij"))
        pts = corners.reshape(3, -1).T @ m[:, :3].T + m[:, 3]
        return pts.min(axis=0), pts.max(axis=0)


@dataclass(frozen=True)
class FuseResult:
    """What a fusion did."""

    image: ImageMetadata
    shards_total: int
    shards_written: int
    shards_skipped: int
    fingerprint: str
    seconds: float


def _axis_samples(
    v0: int, v1: int, origin: float, n: int, interpolation: Interpolation
) -> tuple[int, int, int, float]:
    """Output run [a, b) inside the tile along one axis, its first tile index and the weight.

    Output voxel ``a + k`` reads tile index ``start + k`` (and ``start + k + 1`` with weight
    ``frac`` when linear); a translation has one ``frac`` for the whole run.
    """
    a = max(v0, int(np.ceil(origin - 1e-9)))
    b = min(v1, int(np.floor(origin + n - 1 + 1e-9)) + 1)
    u0 = a - origin
    if interpolation == "nearest":
        return a, b, min(max(int(np.floor(u0 + 0.5)), 0), n - 1), 0.0
    start = min(max(int(np.floor(u0 + 1e-9)), 0), n - 1)
    frac = float(u0 - start)
    if frac < 1e-9 or start + (b - a) >= n:  # whole voxels (or the clamped last one)
        frac = 0.0
    return a, b, start, frac


def _ramp(u_lo: np.ndarray, n: int, blend: float) -> np.ndarray:
    if blend <= 0:
        return np.ones(len(u_lo), np.float32)
    dist = np.minimum(u_lo + 0.5, n - 0.5 - u_lo)
    return np.clip(dist / blend, 1e-6, 1.0).astype(np.float32)


def fuse_box(
    store: Any,
    places: list[TilePlace],
    box: tuple[tuple[int, int], ...],
    *,
    lead: tuple[int, ...],
    dtype: np.dtype[Any],
    blend: tuple[float, float, float],
    interpolation: Interpolation,
    flatfield: np.ndarray | None,
    slab: tuple[int, int] = (32, 512),
    lead_sel: tuple[slice, ...] | None = None,
) -> np.ndarray:
    """The fused output over ``box`` (per spatial axis [start, stop) of level 0).

    ``lead_sel`` picks the channels (leading axes) of the tiles that ``lead`` counts (default
    all): a shard holds only its own channels.

    Worked through in pieces of ``slab`` = (planes, rows), so the float32 accumulators and the
    tile crops stay a fraction of the box; the planes should be the tiles' chunk depth (each
    tile chunk is then decompressed about once, not once per piece).
    """
    from bridge_xr.tiles._kernels import accumulate, finish

    kernel: Any = accumulate
    done: Any = finish
    is_int = bool(np.issubdtype(dtype, np.integer))
    lo_v, hi_v = (float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)) if is_int else (0.0, 0.0)
    shape = tuple(b - a for a, b in box)
    out = np.zeros((*lead, *shape), dtype)
    n_lead = len(lead)
    if lead_sel is None:
        lead_sel = tuple(slice(0, n) for n in lead)
    if flatfield is not None and flatfield.ndim == 3 and n_lead:
        flatfield = flatfield[lead_sel[0]]
    pieces = [
        ((zs, min(zs + slab[0], box[0][1])), (ys, min(ys + slab[1], box[1][1])), box[2])
        for zs in range(box[0][0], box[0][1], slab[0])
        for ys in range(box[1][0], box[1][1], slab[1])
    ]
    for sub in pieces:
        sshape = tuple(b - a for a, b in sub)
        acc = np.zeros((*lead, *sshape), np.float32)
        wsum = np.zeros(sshape, np.float32)
        for pl in places:
            if pl.matrix is not None:
                _accumulate_affine(
                    store, pl, sub, acc, wsum, lead_sel, blend, interpolation, flatfield
                )
                continue
            axes = [
                _axis_samples(v0, v1, o, n, interpolation)
                for (v0, v1), o, n in zip(sub, pl.origin, pl.shape, strict=True)
            ]
            if any(b <= a for a, b, *_ in axes):
                continue
            lo = [st for _, _, st, _ in axes]
            hi = [st + (b - a) + (1 if fr > 0 else 0) for a, b, st, fr in axes]
            sel = lead_sel + tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            crop = np.asarray(tile_array(store, pl.path)[sel])
            if flatfield is not None:
                f = flatfield[..., lo[1] : hi[1], lo[2] : hi[2]]
                crop = crop.astype(np.float32) / (f[:, None] if f.ndim == 3 else f)
            ramps = [
                _ramp(np.arange(a, b) - o, n, bl)
                for (a, b, *_), o, n, bl in zip(axes, pl.origin, pl.shape, blend, strict=True)
            ]
            off = np.array([a - v0 for (a, *_), (v0, _) in zip(axes, sub, strict=True)], np.intp)
            count = np.array([b - a for a, b, *_ in axes], np.intp)
            start0 = np.zeros(3, np.intp)
            frac = np.array([fr for *_, fr in axes], np.float64)
            crops = [crop] if not n_lead else list(crop.reshape(-1, *crop.shape[n_lead:]))
            for k, (cr, ac) in enumerate(zip(crops, accs_of(acc, n_lead, sshape), strict=True)):
                kernel(ac, wsum, cr, off, count, start0, frac, *ramps, k == 0)
        zsl = slice(sub[0][0] - box[0][0], sub[0][1] - box[0][0])
        ysl = slice(sub[1][0] - box[1][0], sub[1][1] - box[1][0])
        target = out[(slice(None),) * n_lead + (zsl, ysl)]
        targets = [target] if not n_lead else list(target.reshape(-1, *sshape))
        for ac, tg in zip(accs_of(acc, n_lead, sshape), targets, strict=True):
            done(ac, wsum, tg, lo_v, hi_v, is_int)
    return out


def _accumulate_affine(
    store: Any,
    pl: TilePlace,
    sub: tuple[tuple[int, int], ...],
    acc: np.ndarray,
    wsum: np.ndarray,
    lead_sel: tuple[slice, ...],
    blend: tuple[float, float, float],
    interpolation: Interpolation,
    flatfield: np.ndarray | None,
) -> None:
    """Add one affinely placed tile to the accumulators of piece ``sub``.

    The tile's z row is a translation (``stitch`` refines y and x only), so every output plane
    reads one tile plane (two, linearly, for a fractional z offset).
    """
    from scipy import ndimage

    m = np.asarray(pl.matrix, float)
    lo, hi = pl.box()
    za, zb, zs, zf = _axis_samples(sub[0][0], sub[0][1], m[0, 3], pl.shape[0], interpolation)
    ya, yb = max(sub[1][0], int(np.ceil(lo[1]))), min(sub[1][1], int(np.floor(hi[1])) + 1)
    xa, xb = max(sub[2][0], int(np.ceil(lo[2]))), min(sub[2][1], int(np.floor(hi[2])) + 1)
    if zb <= za or yb <= ya or xb <= xa:
        return
    inv = np.linalg.inv(m[1:, 1:3])
    yy, xx = np.mgrid[ya:yb, xa:xb]
    dy, dx = yy - m[1, 3], xx - m[2, 3]
    uy = inv[0, 0] * dy + inv[0, 1] * dx
    ux = inv[1, 0] * dy + inv[1, 1] * dx
    ny, nx = pl.shape[1], pl.shape[2]
    inside = (uy > -1e-6) & (uy < ny - 1 + 1e-6) & (ux > -1e-6) & (ux < nx - 1 + 1e-6)
    if not inside.any():
        return
    uy, ux = np.clip(uy[inside], 0, ny - 1), np.clip(ux[inside], 0, nx - 1)
    y0, y1 = int(np.floor(uy.min())), min(ny, int(np.ceil(uy.max())) + 1)
    x0, x1 = int(np.floor(ux.min())), min(nx, int(np.ceil(ux.max())) + 1)
    z1 = min(pl.shape[0], zs + (zb - za) + (1 if zf > 0 else 0))
    n_lead = len(lead_sel)
    sel = lead_sel + (slice(zs, z1), slice(y0, y1), slice(x0, x1))
    crop = np.asarray(tile_array(store, pl.path)[sel], np.float32)
    if flatfield is not None:
        f = flatfield[..., y0:y1, x0:x1]
        crop = crop / (f[:, None] if f.ndim == 3 else f)
    weight = np.ones(len(uy), np.float32)
    for u, n, bl in ((uy, ny, blend[1]), (ux, nx, blend[2])):
        if bl > 0:
            weight *= np.clip(np.minimum(u + 0.5, n - 0.5 - u) / bl, 1e-6, 1.0).astype(np.float32)
    coords = np.stack([uy - y0, ux - x0])
    order = 1 if interpolation == "linear" else 0
    planes = crop.reshape(-1, *crop.shape[n_lead:])
    accs = accs_of(acc, n_lead, wsum.shape)
    ys, xs = yy[inside] - sub[1][0], xx[inside] - sub[2][0]
    for k in range(zb - za):
        oz = za + k - sub[0][0]
        for c, (vol, ac) in enumerate(zip(planes, accs, strict=True)):
            plane = vol[k]
            if zf > 0:
                plane = (1 - zf) * plane + zf * vol[k + 1]
            vals = ndimage.map_coordinates(plane, coords, order=order, mode="nearest")
            ac[oz, ys, xs] += weight * vals
            if c == 0:
                wsum[oz, ys, xs] += weight


def accs_of(acc: np.ndarray, n_lead: int, sshape: tuple[int, ...]) -> list[np.ndarray]:
    """The per-channel 3-D views of an accumulator."""
    return [acc] if not n_lead else list(acc.reshape(-1, *sshape))


def _shard_task(
    store: Any,
    image: str,
    places: list[TilePlace],
    index: tuple[int, ...],
    grid: tuple[int, ...],
    params: dict[str, Any],
    flatfield: np.ndarray | None,
    done_key: str,
) -> int:
    """Fuse one level-0 shard, write it and the fused levels below it, then record it."""
    targets = [zarr.open_array(store, path=f"{image}/{p}", mode="r+") for p in params["levels"]]
    t0 = targets[0]
    lead_n = t0.ndim - 3
    starts = [i * g for i, g in zip(index, grid, strict=True)]
    stops = [min(s + g, n) for s, g, n in zip(starts, grid, t0.shape, strict=True)]
    box = tuple(zip(starts[lead_n:], stops[lead_n:], strict=True))
    lead_sel = tuple(slice(a, b) for a, b in zip(starts[:lead_n], stops[:lead_n], strict=True))
    block = fuse_box(
        store,
        places,
        box,
        lead=tuple(b - a for a, b in zip(starts[:lead_n], stops[:lead_n], strict=True)),
        lead_sel=lead_sel,
        dtype=np.dtype(t0.dtype),
        blend=tuple(params["blend"]),
        interpolation=params["interpolation"],
        flatfield=flatfield,
        slab=(int(params["tile_chunk_z"]), 512),
    )
    write_region(t0, tuple(slice(a, b) for a, b in zip(starts, stops, strict=True)), block)
    cur = block
    for target, st in zip(targets[1:], params["steps"], strict=True):
        cur = downsample_block(cur, st, params["method"])
        starts = [s // k for s, k in zip(starts, st, strict=True)]
        write_region(
            target, tuple(slice(s, s + n) for s, n in zip(starts, cur.shape, strict=True)), cur
        )
    put_bytes(store, done_key, b"")
    delay = float(os.environ.get(_DELAY_ENV, "0") or 0)
    if delay:
        time.sleep(delay)
    return 1


_PARTIAL = ".partial"


def _fingerprint(scan: TileScan, params: dict[str, Any], shape: tuple[int, ...]) -> str:
    text = json.dumps(
        {"scan": scan.model_dump(mode="json"), "params": params, "shape": shape}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fuse(
    where: StoreLike,
    scan_path: str,
    image_out: str,
    *,
    positions: str = "auto",
    interpolation: Interpolation = "linear",
    blend: str | None = None,
    flatfield: bool | None = None,
    chunks: dict[str, int] | None = None,
    shards: dict[str, int] | None = None,
    compressor: str = "blosc-zstd",
    overwrite: bool = False,
    client: Any = None,
    storage_options: dict[str, Any] | None = None,
    progress: Any = None,
) -> FuseResult:
    """Fuse a tile scan into one multiscale image, one task per shard; resumes a killed run.

    Parameters
    ----------
    where : str, path or zarr store
        The subject store.
    scan_path : str
        The tile scan.
    image_out : str
        The fused image's path, e.g. ``twophoton/d060/angiogram_fused``.
    positions : {'auto', 'registered', 'stage'}
        Tile positions (``auto``: registered when stitched, else stage).
    interpolation : {'linear', 'nearest'}
        Sampling of the tiles at the output grid (a sub-voxel translation).
    blend : str, optional
        Blending ramp width (e.g. ``"20um"``); default half the median side overlap.
    flatfield : bool, optional
        Divide by the scan's flat field (default: when ``stitch --flatfield`` made one).
    chunks, shards : dict, optional
        Output storage (default as every bridge_xr image).
    compressor : str
        Output compression.
    overwrite : bool
        Replace an existing image of that path.
    client : distributed.Client, optional
        Run the shard tasks there (default: the active client, else local threads).
    storage_options : dict, optional
        fsspec options for URLs.
    progress : callable, optional
        ``progress(shards_done, shards_total)``.

    Returns
    -------
    FuseResult
    """
    # long by design: geometry, fingerprint and resume bookkeeping, tasks, publish: one transaction
    from bridge_xr.tiles.convert import _um

    t_start = time.perf_counter()
    out_path = check_image_path(image_out)
    store = resolve_store(where, storage_options=storage_options)
    scan = read_tile_scan(store, scan_path)
    subject = read_subject(store)
    if out_path == scan.path or out_path.startswith(f"{scan.path}/"):
        raise InvalidInputError(f"the fused image must not lie inside the scan {scan.path!r}")
    if out_path in subject.images and not overwrite:
        raise InvalidInputError(
            f"image {out_path!r} already exists in {describe_store(store)}; choose another "
            "path or pass `overwrite`"
        )
    sp = np.asarray(scan.spacing_um, float)
    pos = positions_of(scan, positions)
    arrays = [tile_array(store, t.path) for t in scan.tiles]
    lead = tuple(arrays[0].shape[:-3])
    dims = ("c", "z", "y", "x") if lead else ("z", "y", "x")
    shapes = [tuple(int(n) for n in a.shape[-3:]) for a in arrays]
    mats = tile_matrices(scan, positions)
    linear = [bool(np.allclose(m[:, :3], np.diag(sp), rtol=0, atol=1e-12)) for m in mats]
    corners = [
        np.array(np.meshgrid(*[(0, n - 1) for n in sh], indexing="ij")).reshape(3, -1).T
        @ m[:, :3].T
        + m[:, 3]
        for m, sh in zip(mats, shapes, strict=True)
    ]
    origin_um = np.min([c.min(axis=0) for c in corners], axis=0)
    if all(linear):
        origin_um = pos.min(axis=0)
    rel = (pos - origin_um) / sp
    extent = np.max([(c.max(axis=0) - origin_um) / sp for c in corners], axis=0)
    shape = tuple(int(np.floor(e + 1e-6)) + 1 for e in extent)
    places = []
    for t, r, sh, m, lin in zip(scan.tiles, rel, shapes, mats, linear, strict=True):
        out_m = None
        if not lin:  # tile voxel -> registered µm -> output voxel
            om = np.c_[m[:, :3], m[:, 3] - origin_um] / sp[:, None]
            out_m = tuple(tuple(float(v) for v in row) for row in om)
        places.append(TilePlace(t.path, tuple(map(float, r)), sh, out_m))
    use_ff = bool(scan.flatfield) if flatfield is None else flatfield
    if use_ff and not scan.flatfield:
        raise InvalidInputError(
            f"tile scan {scan.path!r} has no flat field; run `bridge stitch --flatfield`"
        )
    ff = np.asarray(tile_array(store, scan.flatfield)[...]) if use_ff and scan.flatfield else None
    if blend:
        bw = _um(blend) or 0.0
        blend_px = (0.0, bw / sp[1], bw / sp[2])
    else:
        blend_px = (0.0, *_default_blend(rel, shapes))
    full_shape = (*lead, *shape)
    spacing = {"z": sp[0], "y": sp[1], "x": sp[2]}
    org = {"z": origin_um[0], "y": origin_um[1], "x": origin_um[2]}
    plan = plan_storage(
        full_shape, dims, arrays[0].dtype, spacing, org, chunks=chunks, shards=shards
    )
    n_fused = fused_level_count(plan)
    params: dict[str, Any] = {
        "positions": positions,
        "interpolation": interpolation,
        "blend": list(blend_px),
        "flatfield": use_ff,
        "compressor": compressor,
        "method": "mean",
        "levels": [lv.path for lv in plan.levels[:n_fused]],
        "steps": level_steps(plan)[: n_fused - 1],
        "grid": list(plan.levels[0].shards or plan.levels[0].chunks),
        "tile_chunk_z": int(arrays[0].chunks[-3]),
    }
    fp = _fingerprint(scan, params, full_shape)
    journal = f"{ATTRS_KEY}/fusion/{out_path}"
    runs = {k.split("/", 1)[0] for k in list_prefix(store, journal)}
    done: set[str] = set()
    if fp in runs and key_exists(store, f"{out_path}/{plan.levels[0].path}/zarr.json"):
        done = {
            k.rsplit("/", 1)[-1]
            for k in list_prefix(store, f"{journal}/{fp}/done")
            if not k.endswith(_PARTIAL)
        }
        # a run killed mid-write leaves zarr's local-store temporaries ("<key>.<uuid>.partial")
        for k in list_prefix(store, out_path):
            if k.endswith(_PARTIAL):
                sync(store.delete(f"{out_path}/{k}"))
        targets = [
            zarr.open_array(store, path=f"{out_path}/{lv.path}", mode="r+") for lv in plan.levels
        ]
    else:
        delete_prefix(store, journal)
        if out_path in subject.images:  # overwrite: unpublish first, so a failure hides nothing
            images = {k: v for k, v in subject.images.items() if k != out_path}
            subject = subject.model_copy(update={"images": images})
            edges = [t for t in scene_transforms(store) if not _touches(t, out_path)]
            publish_subject(store, subject, edges, scene_systems(store))
            invalidate(store)
        if key_exists(store, f"{out_path}/zarr.json"):
            delete_prefix(store, f"{out_path}")
        targets = create_level_arrays(store, out_path, plan, compressor)
        put_bytes(store, f"{journal}/{fp}/params.json", json.dumps(params).encode())
    grid = tuple(params["grid"])
    counts = [int(np.ceil(n / g)) for n, g in zip(full_shape, grid, strict=True)]
    indices = [tuple(int(v) for v in ix) for ix in np.ndindex(*counts)]
    todo = []
    boxes = [pl.box() for pl in places]
    for ix in indices:
        name = ".".join(map(str, ix))
        if name in done:
            continue
        box_lo = np.array([i * g for i, g in zip(ix, grid, strict=True)][len(lead) :])
        box_hi = np.minimum(box_lo + np.array(grid[len(lead) :]), shape)
        touching = [
            pl
            for pl, (lo, hi) in zip(places, boxes, strict=True)
            if np.all(lo <= box_hi) and np.all(hi >= box_lo - 1)
        ]
        todo.append(
            (store, out_path, touching, ix, grid, params, ff, f"{journal}/{fp}/done/{name}")
        )
    skipped = len(indices) - len(todo)

    def report(k: int, total: int) -> None:
        if progress is not None:
            progress(skipped + k, len(indices))

    run_tasks(_shard_task, todo, progress=report, client=client)
    write_tail_levels(targets, plan, n_fused, "mean")
    meta = ImageMetadata(
        path=out_path,
        modality=subject.images[scan.tiles[0].path].modality,
        session=out_path.split("/")[1] if out_path.count("/") >= 2 else None,
        source=scan.path,
        channel_names=scan.channel_names,
        acquisition=Acquisition(pixel_size_um=scan.spacing_um),
        provenance=Provenance.now(
            "fuse",
            inputs=(scan.path,),
            image=out_path,
            fingerprint=fp,
            **{k: v for k, v in params.items() if k not in {"levels", "steps"}},
        ),
    )
    ome = multiscales_attrs(plan, name=out_path.rsplit("/", 1)[-1], unit="micrometer")
    _publish_group_attrs(
        store, out_path, {"ome": ome, ATTRS_KEY: meta.model_dump(mode="json", exclude_none=True)}
    )
    images = dict(subject.images)
    images[out_path] = meta
    subject = subject.model_copy(
        update={"images": images, "provenance": (*subject.provenance, meta.provenance)}
    )
    use_reg = positions != "stage" and all(t.registered_um is not None for t in scan.tiles)
    layout = Identity().with_io(
        CoordinateSystemRef(name=INTRINSIC, path=out_path),
        CoordinateSystemRef(name=system_name(scan.path, REGISTERED if use_reg else STAGE)),
    )
    edges = [
        *(t for t in scene_transforms(store) if not _touches(t, out_path)),
        layout.model_copy(update={"name": f"{out_path}:layout"}),
    ]
    publish_subject(store, subject, edges, scene_systems(store))
    invalidate(store)
    delete_prefix(store, journal)
    return FuseResult(meta, len(indices), len(todo), skipped, fp, time.perf_counter() - t_start)


def _default_blend(rel: np.ndarray, shapes: list[tuple[int, ...]]) -> tuple[float, float]:
    """Half the median side overlap along y and x (voxels), from the positions used."""
    from bridge_xr.tiles.layout import overlaps

    found = overlaps(rel, shapes, (1.0, 1.0, 1.0))
    out = []
    for ax in (1, 2):
        sizes = [
            o.size_px[ax]
            for o in found
            if o.size_px[ax] < 0.5 * min(shapes[o.i][ax], shapes[o.j][ax])
        ]
        out.append(max(1.0, float(np.median(sizes)) / 2) if sizes else 1.0)
    return out[0], out[1]
