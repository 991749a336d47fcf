"""Expansion microscopy images in the scene: gel µm scaled back to tissue µm by the factor.

An expanded sample is imaged in gel micrometres (e.g. 59.54 nm pixels on an Airyscan); the
tissue it shows was ``factor`` times smaller. :func:`convert_expansion` writes the image in
tissue micrometres (every length divided by the factor), keeps the gel's own micrometres as
the image's ``gel`` coordinate system (a ``scale`` edge by the factor), and records the factor
with its source and uncertainty under ``acquisition`` (``expansion_factor``, and
``extra.expansion``). The factor is given (``expansion_factor``), or estimated from landmarks
between a pre-expansion image and this one (``landmarks``: canonical CSV, fixed = pre-expansion
image in tissue µm, moving = this image in gel µm); never assumed.

Examples
--------
>>> import tempfile, pathlib, numpy as np, tifffile
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> tifffile.imwrite(tmp / "gel.tif", np.zeros((4, 8, 8), np.uint16), imagej=True,
...                  resolution=(1 / 0.05954, 1 / 0.05954), metadata={"spacing": 0.2, "unit": "um", "axes": "ZYX"})
>>> meta = convert_expansion(tmp / "gel.tif", tmp / "M.ome.zarr", "exm/roi1", expansion_factor=4.0)
>>> meta.acquisition.expansion_factor, [round(v, 6) for v in meta.acquisition.pixel_size_um]
(4.0, [0.05, 0.014885, 0.014885])
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from bridge_xr.errors import EstimationError, InvalidInputError
from bridge_xr.io._store import StoreLike
from bridge_xr.io.convert import convert_microscopy
from bridge_xr.model.expansion import estimate_expansion
from bridge_xr.model.metadata import ImageMetadata

__all__ = ["convert_expansion"]

_COLS = [f"{side}_{a}" for side in ("fixed", "moving") for a in "xyz"]


def convert_expansion(
    source: str | os.PathLike[str],
    where: StoreLike,
    image_path: str,
    *,
    expansion_factor: float | None = None,
    landmarks: pd.DataFrame | str | os.PathLike[str] | None = None,
    pixel_size: str | None = None,
    z_step: str | None = None,
    channel_names: tuple[str, ...] | None = None,
    overwrite: bool = False,
    progress: Any = None,
    scene: int | None = None,
) -> ImageMetadata:
    """Convert an expansion microscopy image into tissue µm, by a given or estimated factor.

    Parameters
    ----------
    source : path
        The post-expansion image (TIFF/OME-TIFF, CZI, LIF), calibrated in gel µm.
    where : str, path or zarr store
        The subject store.
    image_path : str
        Image path, e.g. ``exm/roi1``.
    expansion_factor : float, optional
        The factor (e.g. 4.1); or give ``landmarks``. Exactly one of the two.
    landmarks : DataFrame or path, optional
        Landmark pairs (canonical CSV columns): fixed = pre-expansion image (tissue µm), moving =
        this image (gel µm); at least 4.
    pixel_size, z_step, channel_names, overwrite, progress, scene
        As for :func:`~bridge_xr.io.convert.convert_microscopy`.

    Returns
    -------
    ImageMetadata

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, tifffile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> tifffile.imwrite(tmp / "gel.tif", np.zeros((8, 8), np.uint16), resolution=(10, 10))
    >>> convert_expansion(tmp / "gel.tif", tmp / "M.ome.zarr", "exm/r", expansion_factor=4.0,
    ...                   pixel_size="0.1um").acquisition.pixel_size_um
    (0.025, 0.025)
    """
    if (expansion_factor is None) == (landmarks is None):
        raise InvalidInputError(
            "give the expansion factor (--expansion-factor 4.1) or landmarks to estimate it "
            "(--estimate-from pre_post_landmarks.csv), exactly one"
        )
    if expansion_factor is not None:
        if not expansion_factor > 1.0:
            raise InvalidInputError(
                f"--expansion-factor {expansion_factor:g}: an expanded gel is larger than the "
                "tissue, so the factor is above 1 (typically about 4)"
            )
        info: dict[str, Any] = {"factor": float(expansion_factor), "source": "given"}
    else:
        frame = landmarks if isinstance(landmarks, pd.DataFrame) else _read(landmarks)
        missing = [c for c in _COLS if c not in frame.columns]
        if missing:
            raise InvalidInputError(
                f"expansion landmarks lack columns {missing} (fixed = pre-expansion, moving = gel)"
            )
        if "active" in frame.columns:
            frame = frame[frame["active"].astype(bool)]
        try:
            est = estimate_expansion(
                frame[_COLS[:3]].to_numpy(float), frame[_COLS[3:]].to_numpy(float)
            )
        except EstimationError as exc:
            raise InvalidInputError(f"cannot estimate the expansion factor: {exc}") from exc
        info = {**est, "source": "estimated from landmarks"}
    return convert_microscopy(
        source, where, image_path, pixel_size=pixel_size, z_step=z_step,
        channel_names=channel_names, modality="expansion", overwrite=overwrite,
        progress=progress, scene=scene, expansion=info,
    )  # fmt: skip


def _read(path: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read landmarks {str(path)!r}: {exc}") from exc
