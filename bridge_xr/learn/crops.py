"""Crops of the nnU-Net export: automatic tiles, folds by subject, diameters and TRE on the grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bridge_xr._constants import tre_map_path
from bridge_xr.errors import InvalidInputError
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import add_image, read_subject
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.model.pointmaps import LinearModel
from bridge_xr.model.units import conversion_factor
from bridge_xr.register.registration import register


def group_splits(
    cases: Sequence[Case], n_folds: int, seed: int = 12345
) -> list[dict[str, list[str]]]:
    """``n_folds`` train/val splits with whole subjects in validation (round robin, shuffled)."""
    subjects = sorted({c.subject for c in cases})
    if len(subjects) < 2:
        raise InvalidInputError("cross-validation needs crops from at least two subjects")
    n_folds = min(n_folds, len(subjects))
    order = list(np.random.default_rng(seed).permutation(subjects))
    fold_of = {s: i % n_folds for i, s in enumerate(order)}
    splits = []
    for f in range(n_folds):
        val = sorted(c.case for c in cases if fold_of[c.subject] == f)
        train = sorted(c.case for c in cases if fold_of[c.subject] != f)
        splits.append({"train": train, "val": val})
    return splits


def _link_identity(st: Any, fixed: str, moving: str, name: str) -> None:
    """A scene edge saying two images share one physical space (identity registration)."""
    ident = LinearModel.identity()
    pts = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100]], dtype=float)
    lm = pd.DataFrame(
        {
            "name": [f"I{i}" for i in range(4)],
            **{f"moving_{a}": pts[:, i] for i, a in enumerate("xyz")},
            **{f"fixed_{a}": pts[:, i] for i, a in enumerate("xyz")},
        }
    )
    register(st, fixed=fixed, moving=moving, landmarks=lm, model="rigid", name=name,
             precomputed=(ident, {"model": "identity"}), overwrite=True)  # fmt: skip


def microscopy_diameter(st: Any, truth: str, session: str, threshold: float | None) -> str:
    """Write the truth microscopy's local vessel diameter map; return its path.

    The truth microscopy's local vessel diameter (µm, local thickness, at its own resolution)
    as ``learn/<session>/<name>_diameter``, linked to it by an identity edge; returns the path.
    """
    from bridge_xr.learn.vessels import local_diameter
    from bridge_xr.model.image import make_image

    path = f"learn/{session}/{truth.rsplit('/', 1)[-1]}_diameter"
    known = read_subject(st).images.get(path)
    params = {"threshold": threshold, "method": DIAMETER_METHOD}
    if known is not None and all(
        known.provenance.parameters.get(k) == v for k, v in params.items()
    ):
        return path  # made before from the same truth, threshold and method
    img = read_image(st, truth)
    if "c" in img.dims:
        img = img.isel(c=0)
    data = img.data
    if threshold is not None:
        mask = data > threshold
    elif np.issubdtype(img.dtype, np.floating):
        mask = data >= 0.5
    else:
        mask = data > 0
    sp_um = [float(img.attrs["spacing"][d]) for d in "zyx"]
    fac = conversion_factor(img.attrs["unit"], "micrometer")
    diam = local_diameter(mask, [s * fac for s in sp_um])
    out = make_image(
        diam,
        dims="zyx",
        spacing=tuple(sp_um),
        origin=tuple(float(img.attrs["origin"][d]) for d in "zyx"),
        unit=img.attrs["unit"],
    )
    add_image(
        st,
        out,
        ImageMetadata(
            path=path,
            modality="derived",
            session=session,
            source=f"local vessel diameter (µm) of {truth}",
            provenance=Provenance.now("learn vessel diameter", inputs=(truth,), **params),
        ),
        shards=False,
        overwrite=known is not None,
    )
    _link_identity(st, path, truth, f"learn_{session}_diameter")
    return path


def _auto_crops(
    covered: np.ndarray,
    label: np.ndarray,
    crop_yx: int,
    min_vessel: int,
    tre: np.ndarray | None = None,
    max_tre_um: float | None = None,
) -> list[tuple[int, ...]]:
    """Automatic crops: fully covered tiles, best first.

    Non-overlapping crop_yx x crop_yx tiles, each over the z range where it is fully covered,
    the best-covered first (a tilted field of view covers fewer slices near its edges), then the
    lowest mean registration error (``tre``, µm per voxel, when known), then the most vessel.
    """
    _nz, ny, nx = label.shape
    step = max(1, crop_yx // 4)
    candidates = []
    for y0 in range(0, ny - crop_yx + 1, step):
        for x0 in range(0, nx - crop_yx + 1, step):
            window = (slice(y0, y0 + crop_yx), slice(x0, x0 + crop_yx))
            zs = np.nonzero(covered[(slice(None), *window)].all(axis=(1, 2)))[0]
            if len(zs) == 0:
                continue
            z0, z1 = int(zs.min()), int(zs.max()) + 1
            if z1 - z0 != len(zs):  # keep a contiguous run only
                continue
            n_vessel = int(label[z0:z1, window[0], window[1]].sum())
            err = float(np.mean(tre[z0:z1, window[0], window[1]])) if tre is not None else 0.0
            if max_tre_um is not None and err > max_tre_um:
                continue
            if n_vessel >= min_vessel:
                box = (z0, z1, y0, y0 + crop_yx, x0, x0 + crop_yx)
                candidates.append((z1 - z0, err, n_vessel, box))
    taken = np.zeros((ny, nx), dtype=bool)
    crops: list[tuple[int, ...]] = []
    for _, _, _, box in sorted(candidates, key=lambda c: (-c[0], c[1], -c[2])):
        _, _, y0, y1, x0, x1 = box
        if not taken[y0:y1, x0:x1].any():
            taken[y0:y1, x0:x1] = True
            crops.append(box)
    return sorted(crops)


def tre_on_grid(st: Any, grid: str, microscopy: str) -> np.ndarray | None:
    """The registration error (µm) on the export grid, or None.

    Registration error (µm) of the chain from the export ``grid`` to ``microscopy``, per grid
    voxel: the bootstrap TRE maps (``qc/<registration>/tre_map``) of the hops that have one,
    sampled (linear) at the voxel centres mapped into each map's space and added in quadrature;
    None when no hop has a TRE map.
    """
    from scipy.ndimage import map_coordinates

    from bridge_xr.scene.chains import apply_hops, model_from_record
    from bridge_xr.scene.mapping import graph_of

    images = read_subject(st).images
    g = read_image(st, grid)
    fac = conversion_factor(g.attrs["unit"], "micrometer")
    axes = [
        (g.attrs["origin"][d] + np.arange(g.sizes[d]) * g.attrs["spacing"][d]) * fac for d in "zyx"
    ]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    q = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)  # zyx µm, hop by hop
    total = None
    for rec, forward in graph_of(st).chain(grid, microscopy):
        step = [(model_from_record(rec), forward)]
        if not forward:  # the map lives in the fixed image: after walking moving -> fixed
            q = apply_hops(step, q, strict=False)
        path = tre_map_path(rec.name)
        if path in images:
            tre = read_image(st, path)
            tfac = conversion_factor(tre.attrs["unit"], "micrometer")
            idx = [
                (q[:, i] / tfac - tre.attrs["origin"][d]) / tre.attrs["spacing"][d]
                for i, d in enumerate("zyx")
            ]
            vals = map_coordinates(
                np.asarray(tre.values, dtype=np.float64), np.nan_to_num(np.stack(idx)), order=1,
                mode="nearest",
            )  # fmt: skip
            sq = vals.reshape(zz.shape) ** 2
            total = sq if total is None else total + sq
        if forward:
            q = apply_hops(step, q, strict=False)
    return None if total is None else np.sqrt(total)


def _derangement(images: list[tuple[Case, np.ndarray, np.ndarray]], seed: int) -> list[int]:
    """The paper's negative control: each image gets another crop's label of the same shape."""
    rng = np.random.default_rng(seed)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, (_, _, lab) in enumerate(images):
        by_shape.setdefault(lab.shape, []).append(i)
    out = list(range(len(images)))
    for idx in by_shape.values():
        if len(idx) < 2:
            raise InvalidInputError(
                "the negative control needs at least two crops of each shape to swap labels"
            )
        perm = [int(v) for v in rng.permutation(len(idx))]
        # rotate a random order by one: no crop keeps its own label
        for a, b in zip(perm, perm[1:] + perm[:1], strict=True):
            out[idx[a]] = idx[b]
    return out


#: how microscopy diameters are measured (kept in provenance; a stored map made otherwise is redone)
DIAMETER_METHOD = "local thickness, 10 % radius bands"


CROP_COLUMNS = ("subject", "session", "z0", "z1", "y0", "y1", "x0", "x1")


@dataclass(frozen=True)
class Case:
    """One exported crop: which subject, session and image it comes from, and its box."""

    case: str
    subject: str
    session: str
    store: str
    crop: tuple[int, ...]
    tre_um: float | None = None  # mean bootstrap TRE over the crop, when a TRE map exists
