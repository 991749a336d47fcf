"""The ``bridge learn`` commands as library calls: filter, evaluate, train, predict, visibility.

Each reads its inputs, checks that they share one grid, runs the computation of
:mod:`bridge_xr.learn.vessels`, :mod:`bridge_xr.learn.metrics` or :mod:`bridge_xr.learn.nnunet`
and writes results back with provenance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge_xr._dask import scheduler
from bridge_xr.errors import InvalidInputError
from bridge_xr.extract.masks import write_on_grid_of
from bridge_xr.io._store import StoreLike
from bridge_xr.io.read import read_image
from bridge_xr.learn.masks import read_mask
from bridge_xr.learn.metrics import evaluate
from bridge_xr.learn.vessels import local_diameter, open_by_diameter, visibility_by_diameter
from bridge_xr.model.image import spacing_um

__all__ = ["evaluate_masks", "filter_vessels", "predict_into", "train_folds", "vessel_visibility"]


def filter_vessels(
    where: StoreLike,
    *,
    image: str,
    min_diameter_um: float,
    image_out: str,
    threshold: float = 0.0,
    diameter_out: str | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Keep vessels at least ``min_diameter_um`` wide (exact Euclidean opening, physical units).

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    image : str
        Vessel image (mask, probability map or angiogram), dims z, y, x.
    min_diameter_um : float
        Narrower vessels are removed.
    image_out : str
        The filtered mask (labels) to write, on ``image``'s grid.
    threshold : float
        Binarise ``image`` above this value first.
    diameter_out : str, optional
        Also write the local diameter map (µm) of what is kept.
    overwrite : bool
        Replace existing outputs.

    Returns
    -------
    dict
        ``voxels_in`` and ``voxels_kept``.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> filter_vessels(tiny_scene(), image="micro", min_diameter_um=10, image_out="thick",
    ...                threshold=100)  # the 20 µm cube loses its 5 µm-thin edges
    {'voxels_in': 256, 'voxels_kept': 192}
    """
    if min_diameter_um <= 0:
        raise InvalidInputError(f"`min_diameter_um` must be positive; got {min_diameter_um}")
    img = read_image(where, image)
    if tuple(str(d) for d in img.dims) != ("z", "y", "x"):
        raise InvalidInputError(f"{image!r} has dims {img.dims}; expected (z, y, x)")
    spacing = tuple(float(s) for s in spacing_um(img))
    mask = img.data > threshold
    kept = open_by_diameter(mask, min_diameter_um, spacing).astype("uint8")
    write_on_grid_of(where, image, kept, image_out, kind="labels",
                     operation="learn filter (opening)", overwrite=overwrite,
                     min_diameter_um=min_diameter_um, threshold=threshold)  # fmt: skip
    if diameter_out:
        cap = max(4 * min_diameter_um, 200.0)
        dmap = local_diameter(kept > 0, spacing, max_diameter_um=cap)
        write_on_grid_of(where, image, dmap, diameter_out, operation="learn local diameter",
                         overwrite=overwrite, source=image_out)  # fmt: skip
    return {
        "voxels_in": int(mask.sum().compute(scheduler=scheduler())),
        "voxels_kept": int(kept.sum().compute(scheduler=scheduler())),
    }


def _same_grid(a: tuple[np.ndarray, Sequence[float]], b: tuple[np.ndarray, Sequence[float]],
               what: str) -> None:  # fmt: skip
    (x, sx), (y, sy) = a, b
    if x.shape != y.shape or any(
        abs(p - q) > 1e-6 * max(p, q) for p, q in zip(sx, sy, strict=True)
    ):
        raise InvalidInputError(
            f"{what}: {x.shape} @ {tuple(sx)} µm and {y.shape} @ {tuple(sy)} µm are not on one "
            "grid; resample one onto the other first"
        )


def evaluate_masks(truth: str, prediction: str, *, dilation_um: float = 50.0) -> dict[str, Any]:
    """Dice, Dilated Dice (paper), MASD and HD95 (µm) between two masks on one grid.

    Parameters
    ----------
    truth, prediction : str
        NIfTI files or ``store.ome.zarr/image`` paths.
    dilation_um : float
        Dilated Dice radius.

    Returns
    -------
    dict
        :func:`bridge_xr.learn.evaluate`'s figures plus the two inputs.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing import tiny_scene
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "M.ome.zarr"
    >>> _ = tiny_scene(where=path)
    >>> evaluate_masks(f"{path}/mri", f"{path}/mri")["dice"]
    1.0
    """
    a, b = read_mask(truth), read_mask(prediction)
    _same_grid(a, b, "truth and prediction")
    result = evaluate(a[0], b[0], a[1], dilation_um=dilation_um)
    result.update({"truth": truth, "prediction": prediction})
    return result


def vessel_visibility(
    truth: str,
    prediction: str,
    *,
    mri: str | None = None,
    dilation_um: float = 50.0,
    diameters: str | None = None,
    segments: bool = True,
) -> tuple[list[dict[str, object]], list[dict[str, object]], tuple[float, float, float]]:
    """Vessel-wise comparison by diameter category: found by the model vs thresholded MRI.

    Parameters
    ----------
    truth, prediction : str
        Masks (NIfTI or ``store.ome.zarr/image``) on one grid.
    mri : str, optional
        MRI on the same grid: adds the thresholded-MRI baseline.
    dilation_um : float
        A truth voxel is found within this distance.
    diameters : str, optional
        Diameter map (µm) on the same grid (default: local thickness of the truth).
    segments : bool
        Count calibre segments (else whole connected vessels).

    Returns
    -------
    (list of dict, list of dict, spacing)
        Per vessel, per diameter category, and the voxel size (µm).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing import tiny_scene
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "M.ome.zarr"
    >>> _ = tiny_scene(where=path)
    >>> per_vessel, per_cat, _ = vessel_visibility(f"{path}/mri", f"{path}/mri")
    >>> len(per_vessel) > 0
    True
    """
    from bridge_xr.learn.nnunet import threshold_baseline

    a, b = read_mask(truth), read_mask(prediction)
    _same_grid(a, b, "truth and prediction")
    candidates = {"model": b[0] > 0}
    if mri:
        m = read_mask(mri)
        _same_grid(a, m, "truth and MRI")
        candidates["threshold"] = threshold_baseline(m[0], a[0] > 0)
    diam = None
    if diameters:
        d = read_mask(diameters)
        _same_grid(a, d, "truth and diameters")
        diam = d[0]
    vessels, cats = visibility_by_diameter(a[0] > 0, candidates, a[1], dilation_um=dilation_um,
                                           segments=segments, diameters=diam)  # fmt: skip
    return vessels, cats, a[1]


def train_folds(
    dataset: Path,
    *,
    folds: Sequence[int] = (0, 1, 2, 3, 4),
    device: str | None = None,
    epochs: int = 1000,
    iterations: int = 250,
    work: Path | None = None,
    progress: Callable[[int, Path, float], None] | None = None,
) -> Path:
    """Plan (once), preprocess and train nnU-Net's 2D configuration, fold by fold.

    Parameters
    ----------
    dataset : Path
        An exported raw dataset (``DatasetXXX_Name`` with ``dataset.json``).
    folds : sequence of int
        Folds to train.
    device : {'cuda', 'cpu', 'mps'}, optional
        Default: cuda when present, else cpu.
    epochs, iterations : int
        Epochs, and iterations per epoch.
    work : Path, optional
        Preprocessed + results folder (default: ``nnunet_work`` beside the raw folder).
    progress : callable, optional
        ``progress(fold, folder, seconds)`` after each fold.

    Returns
    -------
    Path
        The model folder (``…__2d``).

    Examples
    --------
    >>> train_folds(Path("nnunet_raw/Dataset501_BridgeVessel"), folds=[0])  # doctest: +SKIP
    """
    from bridge_xr.learn import nnunet

    if not (dataset / "dataset.json").is_file():
        raise InvalidInputError(f"{str(dataset)!r} has no dataset.json; export a dataset first")
    if not device:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    work = work or dataset.parent.parent / "nnunet_work"
    if not (work / "preprocessed" / dataset.name / "nnUNetPlans.json").exists():
        nnunet.plan(dataset, work)
    for f in folds:
        t0 = time.perf_counter()
        folder = nnunet.train(dataset, work, f, device=device, epochs=epochs, iterations=iterations)
        if progress is not None:
            progress(f, folder, time.perf_counter() - t0)
    return nnunet.model_folder(dataset, work)


def predict_into(
    model: Path,
    where: StoreLike,
    *,
    image: str,
    label_out: str,
    folds: Sequence[int] = (0,),
    checkpoint: str = "checkpoint_final.pth",
    device: str = "cpu",
    overwrite: bool = False,
) -> int:
    """Segment vessels in an MRI image; the label image goes back into the store with provenance.

    Parameters
    ----------
    model : Path
        A trained model folder (``…__2d``).
    where : Scene, str, path or zarr store
        The subject.
    image : str
        MRI image to segment (on the training grid).
    label_out : str
        Label image path to write.
    folds : sequence of int
        Folds to ensemble.
    checkpoint : str
        Checkpoint file name in each fold.
    device : {'cpu', 'cuda', 'mps'}
        Torch device.
    overwrite : bool
        Replace ``label_out``.

    Returns
    -------
    int
        Vessel voxels found.

    Examples
    --------
    >>> predict_into(Path("model__2d"), "M001.ome.zarr", image="invivo_mri/d060/T2w",
    ...              label_out="labels/d060/vessels")  # doctest: +SKIP
    """
    from bridge_xr.learn import nnunet

    img = read_image(where, image)
    spacing = tuple(float(s) for s in spacing_um(img))
    seg = nnunet.predict(model, np.asarray(img.values), spacing, folds=list(folds),
                         checkpoint=checkpoint, device=device)  # fmt: skip
    hashes = {f: nnunet.checkpoint_hash(model / f"fold_{f}" / checkpoint)[:16] for f in folds}
    write_on_grid_of(where, image, seg, label_out, kind="labels",
                     operation="learn predict (nnU-Net)", overwrite=overwrite, model=str(model),
                     folds=list(folds), checkpoint=checkpoint, checkpoint_sha256=hashes)  # fmt: skip
    return int(seg.sum())
