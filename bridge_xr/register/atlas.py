"""Atlas coordinates for sections and MRI voxels: QuickNII / VisuAlign alignments of a slice stack.

The paper anchors its ex vivo sections in the Allen CCFv3 with the QUINT workflow (QuickNII for
the linear anchoring of every section, VisuAlign for nonlinear refinement). :func:`import_atlas`
reads such a JSON (``slices``: ``filename``, ``nr``, ``width``, ``height``, ``anchoring``, and
VisuAlign's ``markers``), pairs each entry with a plane of a slice stack (by file name when the
names match the converted sections, else by section number ``nr``) and stores it in the subject.
:func:`atlas_points` then gives atlas coordinates (QuickNII's atlas voxels and µm) of points in
any image chained to the stack: section points directly, MRI points through the slice-by-slice
registration first; with an annotation volume (the atlas' label image on the same voxel grid,
supplied by the user) each point also gets its region label.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bridge_xr._dask import rechunk_method
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, describe_store, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import publish_subject, read_subject, scene_systems, scene_transforms
from bridge_xr.model.atlas import anchor_points, undo_markers
from bridge_xr.model.image import um_factor
from bridge_xr.model.metadata import AtlasAlignment, AtlasSection, Provenance
from bridge_xr.model.slices import slice_index

__all__ = ["atlas_image", "atlas_points", "import_atlas"]


def _stem(name: str) -> str:
    base = Path(str(name)).name.lower()
    for ext in (".ome.tiff", ".ome.tif"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base.rsplit(".", 1)[0]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read atlas alignment {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("slices"), list) or not data["slices"]:
        raise InvalidInputError(
            f"{str(path)!r} is not a QuickNII/VisuAlign alignment (no 'slices' list)"
        )
    return data


def import_atlas(
    where: StoreLike,
    alignment: str | os.PathLike[str],
    *,
    slices: str,
    voxel_um: float | None = None,
    by: str = "auto",
) -> AtlasAlignment:
    """Store a QuickNII/VisuAlign alignment of the slice stack ``slices``.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    alignment : path
        QuickNII or VisuAlign JSON.
    slices : str
        The slice stack (``bridge convert slices``) the alignment's sections belong to.
    voxel_um : float, optional
        Atlas voxel size; default from the atlas name in the file (``..._25um...``), refused
        when it names none.
    by : {'auto', 'filename', 'nr'}
        Pair entries with stack planes by file name, by section number (1 = first section), or
        by file name when every name matches a converted section's, else by number.

    Returns
    -------
    AtlasAlignment

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> from bridge_xr.testing.exvivo import slice_scene
    >>> scene, _ = slice_scene(2)
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "quicknii.json"
    >>> _ = f.write_text(json.dumps({"target": "ABA_Mouse_CCFv3_2017_25um.cutlas", "slices": [
    ...     {"filename": "s1.png", "nr": 1, "width": 176, "height": 176,
    ...      "anchoring": [100, 300, 250, 40, 0, 0, 0, 0, -40]}]}))
    >>> a = import_atlas(scene, f, slices="exvivo/slab03")
    >>> a.voxel_um, [s.stack_index for s in a.sections]
    (25.0, [0])
    """
    store = resolve_store(where)
    subject = read_subject(store)
    if slices not in subject.images:
        raise InvalidInputError(f"no image {slices!r} in {describe_store(store)}")
    meta = subject.images[slices]
    img = read_image(store, slices)
    n = int(img.sizes.get("z", 1))
    data = _read_json(Path(alignment))
    target = data.get("target")
    if voxel_um is None:
        m = re.search(r"(\d+(?:\.\d+)?)\s*um", str(target or ""))
        if not m:
            raise InvalidInputError(
                f"{str(alignment)!r} names no atlas resolution (target {target!r}); "
                "give the atlas voxel size (--atlas-voxel 25um)"
            )
        voxel_um = float(m.group(1))
    recorded = [_stem(s.get("source", "")) for s in meta.acquisition.extra.get("slices", [])]
    names = [_stem(s.get("filename", "")) for s in data["slices"]]
    by_name = bool(recorded) and all(recorded.count(nm) == 1 for nm in names)
    if by == "filename" and not by_name:
        raise InvalidInputError(
            f"the alignment's file names {names[:4]} do not each match one section of {slices!r}"
        )
    use_name = by_name if by == "auto" else by == "filename"
    sections = []
    for i, s in enumerate(data["slices"]):
        try:
            nr = int(s.get("nr", i + 1))
            k = recorded.index(names[i]) if use_name else nr - 1
            w, h = int(s["width"]), int(s["height"])
            anchoring = tuple(float(v) for v in s["anchoring"])
            markers = tuple(tuple(float(v) for v in mk[:4]) for mk in s.get("markers", []))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{str(alignment)!r}: section {i + 1} lacks width, height or anchoring ({exc})"
            ) from exc
        if len(anchoring) != 9 or not 0 <= k < n:
            raise InvalidInputError(
                f"{str(alignment)!r}: section {s.get('filename')!r} (nr {nr}) has "
                f"{len(anchoring)} anchoring numbers or no plane among the {n} of {slices!r}"
            )
        sections.append(AtlasSection(nr=nr, filename=str(s.get("filename", "")), stack_index=k,
                                     width=w, height=h, anchoring=anchoring, markers=markers))  # fmt: skip
    ks = [s.stack_index for s in sections]
    if len(set(ks)) != len(ks):
        raise InvalidInputError(f"two alignment entries anchor the same section of {slices!r}")
    res = data.get("target-resolution")
    rec = AtlasAlignment(
        image=slices,
        source=str(alignment),
        target=target,
        target_resolution=tuple(int(v) for v in res) if res else None,
        voxel_um=float(voxel_um),
        sections=tuple(sections),
        provenance=Provenance.now(
            "atlas import",
            inputs=(str(alignment), slices),
            paired_by="filename" if use_name else "nr",
        ),
    )
    subject = subject.model_copy(
        update={
            "atlas": {**subject.atlas, slices: rec},
            "provenance": (*subject.provenance, rec.provenance),
        }
    )
    publish_subject(store, subject, scene_transforms(store), scene_systems(store))
    return rec


def _section_px(img: Any, xy_um: np.ndarray) -> np.ndarray:
    """Section-image pixel coordinates (continuous, first pixel centre at 0.5) of x, y µm."""
    f = um_factor(img)
    sp = np.array([img.attrs["spacing"][d] for d in "xy"]) * f
    org = np.array([img.attrs["origin"][d] for d in "xy"]) * f
    return (xy_um - org) / sp + 0.5


def atlas_points(
    where: StoreLike,
    points_zyx_um: Any,
    *,
    src: str,
    slices: str | None = None,
    annotation: str | os.PathLike[str] | None = None,
    via: Any = None,
) -> pd.DataFrame:
    """Atlas coordinates of points in image ``src`` (the slice stack itself, or any image chained to it).

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    points_zyx_um : array of shape (N, 3)
        Points in ``src``'s intrinsic space, z, y, x µm.
    src : str
        Their image.
    slices : str, optional
        The aligned slice stack (default: the only one with an alignment).
    annotation : path, optional
        The atlas' label volume (NIfTI) on its voxel grid (x, y, z as the alignment's): adds
        ``region``.
    via : str or list of str, optional
        Registration names when several chains join ``src`` and the stack.

    Returns
    -------
    DataFrame
        ``section`` (1-based plane, NaN outside every aligned section), ``atlas_x/y/z``
        (voxels) and ``atlas_x/y/z_um``, and ``region`` with an annotation.

    Examples
    --------
    >>> import json, tempfile, pathlib, numpy as np
    >>> from bridge_xr.testing.exvivo import slice_scene
    >>> scene, _ = slice_scene(1)
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "q.json"
    >>> _ = f.write_text(json.dumps({"slices": [{"filename": "a.png", "nr": 1, "width": 176,
    ...     "height": 176, "anchoring": [0, 0, 0, 176, 0, 0, 0, 176, 0]}]}))
    >>> _ = import_atlas(scene, f, slices="exvivo/slab03", voxel_um=25.0)
    >>> atlas_points(scene, np.array([[50.0, 2.5, 2.5]]), src="exvivo/slab03")[
    ...     ["section", "atlas_x", "atlas_y"]].values.tolist()
    [[1.0, 0.5, 0.5]]
    """
    store = resolve_store(where)
    rec = _alignment(store, slices)
    ann = _load_annotation(annotation, rec) if annotation is not None else None
    return _place(store, points_zyx_um, src, rec, ann, via)


def _alignment(store: Any, slices: str | None) -> AtlasAlignment:
    """The stored alignment of ``slices`` (or of the only aligned stack)."""
    subject = read_subject(store)
    if slices is None:
        if len(subject.atlas) != 1:
            have = ", ".join(sorted(subject.atlas)) or "none"
            raise InvalidInputError(
                f"choose the aligned slice stack (slices); aligned stacks: {have}"
            )
        slices = next(iter(subject.atlas))
    if slices not in subject.atlas:
        raise InvalidInputError(
            f"{slices!r} has no atlas alignment; run `bridge atlas import` first"
        )
    return subject.atlas[slices]


def _place(
    store: Any, points_zyx_um: Any, src: str, rec: AtlasAlignment, ann: Any, via: Any
) -> pd.DataFrame:
    """:func:`atlas_points` once the alignment (and the annotation array) are at hand."""
    slices = rec.image
    pts = np.asarray(points_zyx_um, dtype=np.float64).reshape(-1, 3)
    if src != slices:
        from bridge_xr.scene.mapping import map_points

        pts = map_points(store, pts, src, slices, strict=False, via=via)
    img = read_image(store, slices)
    f = um_factor(img)
    k_of = slice_index(pts[:, 0], img.attrs["origin"]["z"] * f, img.attrs["spacing"]["z"] * f)
    shapes = {s["index"]: s["shape_yx"] for s in
              read_subject(store).images[slices].acquisition.extra.get("slices", [])}  # fmt: skip
    out = np.full((len(pts), 3), np.nan)
    section = np.full(len(pts), np.nan)
    px = _section_px(img, pts[:, [2, 1]])
    for s in rec.sections:
        sel = (k_of == s.stack_index) & np.isfinite(pts).all(axis=1)
        if not sel.any():
            continue
        hh, ww = shapes.get(s.stack_index, [img.sizes["y"], img.sizes["x"]])
        reg = px[sel] * [s.width / ww, s.height / hh]
        reg = undo_markers(s.markers, s.width, s.height, reg)
        out[sel] = anchor_points(s.anchoring, s.width, s.height, reg)
        section[sel] = s.stack_index + 1
    frame = pd.DataFrame({"section": section})
    for a, axis in enumerate("xyz"):
        frame[f"atlas_{axis}"] = out[:, a]
    for a, axis in enumerate("xyz"):
        frame[f"atlas_{axis}_um"] = out[:, a] * rec.voxel_um
    if ann is not None:
        frame["region"] = _regions(ann, out)
    return frame


def _load_annotation(path: Any, rec: AtlasAlignment) -> np.ndarray:
    """The atlas label volume, refused unless it is 3D on the alignment's atlas grid."""
    import nibabel as nib

    try:
        loaded: Any = nib.load(str(path))
        ann = np.asarray(loaded.dataobj)
    except Exception as exc:  # nibabel raises many kinds for a bad file
        raise InvalidInputError(f"cannot read annotation volume {str(path)!r}: {exc}") from exc
    if ann.ndim != 3:
        raise InvalidInputError(f"annotation {str(path)!r} is not a 3D label volume")
    if rec.target_resolution and tuple(ann.shape) != tuple(rec.target_resolution):
        raise InvalidInputError(
            f"annotation {str(path)!r} is {ann.shape} voxels, the alignment's atlas "
            f"{tuple(rec.target_resolution)}; give the annotation of the same atlas"
        )
    return ann


def _regions(ann: np.ndarray, vox: np.ndarray) -> np.ndarray:
    """Labels of ``ann`` at atlas voxel coordinates ``vox`` (N, 3); 0 outside or at NaN."""
    out = np.zeros(len(vox), dtype=np.int64)  # 0: outside the atlas (or no section)
    ok = np.isfinite(vox).all(axis=1)
    idx = np.zeros(vox.shape, dtype=np.int64)
    idx[ok] = np.floor(vox[ok]).astype(np.int64)  # atlas voxel i spans [i, i + 1)
    ok &= (idx >= 0).all(axis=1) & (idx < np.array(ann.shape)).all(axis=1)
    out[ok] = ann[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
    return out


def atlas_image(
    where: StoreLike,
    *,
    image: str,
    image_out: str,
    slices: str | None = None,
    annotation: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    chunks: tuple[int, int, int] = (8, 128, 128),
) -> list[str]:
    """Atlas coordinates of every voxel of ``image`` as an image (and region labels), block-wise.

    Writes ``image_out`` on ``image``'s grid: channels ``atlas_x``, ``atlas_y``, ``atlas_z`` in
    atlas µm (NaN where no aligned section lies), and with ``annotation`` also
    ``<image_out>_region`` (labels, 0 outside), looked up from the coordinates as written
    (float32), so the two images agree voxel for voxel.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    image : str
        The image whose voxels to place (a section stack, an MRI chained to it ...).
    image_out : str
        Path of the coordinate image.
    slices : str, optional
        The aligned slice stack (default: the only one).
    annotation : path, optional
        The atlas' label volume.
    overwrite : bool
        Replace existing images.
    chunks : (z, y, x)
        Voxels per task.

    Returns
    -------
    list of str
        The images written.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> from bridge_xr.testing.exvivo import slice_scene
    >>> scene, _ = slice_scene(1)
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "q.json"
    >>> _ = f.write_text(json.dumps({"slices": [{"filename": "a.png", "nr": 1, "width": 176,
    ...     "height": 176, "anchoring": [0, 0, 0, 176, 0, 0, 0, 176, 0]}]}))
    >>> _ = import_atlas(scene, f, slices="exvivo/slab03", voxel_um=25.0)
    >>> atlas_image(scene, image="exvivo/slab03", image_out="atlas/slab03")
    ['atlas/slab03']
    """
    import dask.array as da

    from bridge_xr.io.subject import add_image
    from bridge_xr.model.image import make_image
    from bridge_xr.model.metadata import ImageMetadata

    store = resolve_store(where)
    rec = _alignment(store, slices)
    ann = _load_annotation(annotation, rec) if annotation is not None else None
    _place(store, np.empty((0, 3)), image, rec, None, None)  # the chain resolves now, not in a task
    ref = read_image(store, image)
    f = um_factor(ref)
    shape = tuple(int(ref.sizes[d]) for d in "zyx")
    axes = [
        (ref.attrs["origin"][d] + np.arange(n) * ref.attrs["spacing"][d]) * f
        for d, n in zip("zyx", shape, strict=True)
    ]
    grid = da.zeros(shape, chunks=chunks, dtype=np.float32)

    def block(x: np.ndarray, block_info: Any = None) -> np.ndarray:
        loc = block_info[0]["array-location"]
        ax = [a[lo:hi] for a, (lo, hi) in zip(axes, loc, strict=True)]
        zz, yy, xx = np.meshgrid(*ax, indexing="ij")
        pts = np.column_stack([zz.ravel(), yy.ravel(), xx.ravel()])
        t = _place(store, pts, image, rec, None, None)
        cols = ["atlas_x_um", "atlas_y_um", "atlas_z_um"]
        return t[cols].to_numpy(np.float64).T.reshape(3, *x.shape)

    out = grid.map_blocks(block, new_axis=0, chunks=((3,), *grid.chunks), dtype=np.float64)
    kw = {
        "spacing": tuple(ref.attrs["spacing"][d] for d in "zyx"),
        "origin": tuple(ref.attrs["origin"][d] for d in "zyx"),
        "unit": ref.attrs["unit"],
    }
    prov = Provenance.now("atlas coordinates", inputs=(image,), slices=slices or "",
                          annotation=str(annotation or ""))  # fmt: skip
    coords = make_image(out.astype(np.float32), dims="czyx",
                        channel_names=["atlas_x", "atlas_y", "atlas_z"], **kw)  # fmt: skip
    add_image(store, coords, ImageMetadata(path=image_out, modality="derived",
              channel_names=("atlas_x", "atlas_y", "atlas_z"), source="atlas µm",
              provenance=prov), overwrite=overwrite, levels=1, shards=False)  # fmt: skip
    written = [image_out]
    if ann is not None:
        # regions from the coordinates just written, not by mapping every voxel again
        um = read_image(store, image_out).data
        vox_um = rec.voxel_um

        def regions(c: np.ndarray) -> np.ndarray:
            vox = c.reshape(3, -1).T.astype(np.float64) / vox_um
            return _regions(ann, vox).reshape(c.shape[1:]).astype(np.int32)

        labels = um.rechunk({0: 3}, method=rechunk_method()).map_blocks(
            regions, drop_axis=0, dtype=np.int32
        )
        lab = make_image(labels, dims="zyx", **kw)
        add_image(store, lab, ImageMetadata(path=f"{image_out}_region", modality="labels",
                  kind="labels", provenance=prov), overwrite=overwrite, levels=1, method="mode",
                  shards=False)  # fmt: skip
        written.append(f"{image_out}_region")
    return written
