"""Segmentation metrics in physical units: Dice, the paper's Dilated Dice, MASD and HD95.

Definitions (``A`` truth, ``B`` prediction, binary masks on the same grid, ``spacing`` in µm):

* Dice = 2 |A ∩ B| / (|A| + |B|).
* Dilated Dice (paper) = (|A ∩ D(B)| + |B ∩ D(A)|) / (|A| + |B|), where ``D(X)`` is the set of voxels
  whose centre lies within Euclidean distance ``radius`` of a voxel centre of ``X`` (anisotropic
  spacing honoured, distance <= radius counts, with a 1e-6 relative tolerance because NIfTI
  headers store voxel sizes in float32).
* Boundary of ``X`` = ``X`` minus its erosion by the 6-connected (face) structuring element.
* Directed mean surface distance d(A -> B) = mean over boundary voxels of A of the distance from
  their centre to the nearest boundary voxel centre of B (MedPy / MONAI's voxel-centre convention).
* MASD = (d(A -> B) + d(B -> A)) / 2 (the mean of the two directed means, not the pooled ASSD).
* HD95 = max(95th percentile of A -> B distances, 95th percentile of B -> A distances) (MedPy).

Empty masks: both empty -> Dice = Dilated Dice = 1, MASD = HD95 = 0; exactly one empty ->
Dice = Dilated Dice = 0, MASD = HD95 = NaN (no surface to measure to).

Examples
--------
>>> a = np.zeros((1, 10, 10), bool); a[0, 2:5, 2:5] = True
>>> round(dice(a, a), 3), round(masd(a, a, (100.0, 25.0, 25.0)), 3)
(1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from bridge_xr.errors import InvalidInputError


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    if a.shape != b.shape:
        raise InvalidInputError(f"truth {a.shape} and prediction {b.shape} are on different grids")
    return a, b


def dice(truth: Any, prediction: Any) -> float:
    """2 |A ∩ B| / (|A| + |B|); 1 when both are empty.

    Parameters
    ----------
    truth, prediction : array of bool
        Masks of the same shape.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((1, 8, 8), bool); t[0, 2:6, 2:6] = True
    >>> dice(t, np.roll(t, 1, axis=2))
    0.75
    """
    a, b = _pair(truth, prediction)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def dilate(mask: np.ndarray, radius_um: float, spacing: Sequence[float]) -> np.ndarray:
    """Voxels within ``radius_um`` (Euclidean, physical) of the mask."""
    if not mask.any():
        return np.zeros_like(mask, dtype=bool)
    dist = ndimage.distance_transform_edt(~mask, sampling=spacing)
    # relative tolerance: NIfTI stores voxel sizes as float32 (25 µm reads as 25.0000004)
    return np.asarray(dist <= radius_um * (1 + 1e-6) + 1e-9)


def dilated_dice(truth: Any, prediction: Any, radius_um: float, spacing: Sequence[float]) -> float:
    """The paper's (|A ∩ D(B)| + |B ∩ D(A)|) / (|A| + |B|).

    Parameters
    ----------
    truth, prediction : array of bool
        Masks of the same shape.
    radius_um : float
        Dilation radius.
    spacing : sequence of float
        Voxel size (µm) per axis.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((1, 8, 8), bool); t[0, 2:6, 2:6] = True
    >>> dilated_dice(t, np.roll(t, 1, axis=2), 25.0, (25.0, 25.0, 25.0))
    1.0
    """
    a, b = _pair(truth, prediction)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    hits = int((a & dilate(b, radius_um, spacing)).sum()) + int(
        (b & dilate(a, radius_um, spacing)).sum()
    )
    return hits / total


def boundary(mask: np.ndarray) -> np.ndarray:
    """Mask minus its erosion by the 6-connected structuring element (image edges count)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distances (µm) from every boundary voxel centre of ``a`` to the boundary of ``b``."""
    sa, sb = boundary(a), boundary(b)
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    return np.asarray(dist_to_b[sa], dtype=np.float64)


def masd(truth: Any, prediction: Any, spacing: Sequence[float]) -> float:
    """Mean of the two directed mean surface distances (µm).

    Parameters
    ----------
    truth, prediction : array of bool
        Masks of the same shape.
    spacing : sequence of float
        Voxel size (µm) per axis.

    Returns
    -------
    float
        µm.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((1, 8, 8), bool); t[0, 2:6, 2:6] = True
    >>> masd(t, np.roll(t, 1, axis=2), (25.0, 25.0, 25.0))
    6.25
    """
    a, b = _pair(truth, prediction)
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float("nan")
    return 0.5 * (
        float(surface_distances(a, b, spacing).mean())
        + float(surface_distances(b, a, spacing).mean())
    )


def hd95(truth: Any, prediction: Any, spacing: Sequence[float]) -> float:
    """Max of the two directed 95th-percentile surface distances (µm).

    Parameters
    ----------
    truth, prediction : array of bool
        Masks of the same shape.
    spacing : sequence of float
        Voxel size (µm) per axis.

    Returns
    -------
    float
        µm.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((1, 8, 8), bool); t[0, 2:6, 2:6] = True
    >>> hd95(t, np.roll(t, 1, axis=2), (25.0, 25.0, 25.0))
    25.0
    """
    a, b = _pair(truth, prediction)
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float("nan")
    return max(
        float(np.percentile(surface_distances(a, b, spacing), 95)),
        float(np.percentile(surface_distances(b, a, spacing), 95)),
    )


def evaluate(
    truth: Any, prediction: Any, spacing: Sequence[float], *, dilation_um: float = 50.0
) -> dict[str, Any]:
    """All metrics of one case as a JSON-ready dict (the ``bridge learn evaluate`` contract).

    Parameters
    ----------
    truth, prediction : array of bool
        Masks of the same shape.
    spacing : sequence of float
        Voxel size (µm) per axis.
    dilation_um : float
        Dilated Dice radius.

    Returns
    -------
    dict
        ``dice``, ``dilated_dice``, ``masd_um``, ``hd95_um``, voxel counts and definitions.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((1, 8, 8), bool); t[0, 2:6, 2:6] = True
    >>> evaluate(t, t, (25.0, 25.0, 25.0))["dice"]
    1.0
    """
    a, b = _pair(truth, prediction)
    return {
        "dice": dice(a, b),
        "dilated_dice": dilated_dice(a, b, dilation_um, spacing),
        "masd_um": masd(a, b, spacing),
        "hd95_um": hd95(a, b, spacing),
        "n_truth_voxels": int(a.sum()),
        "n_prediction_voxels": int(b.sum()),
        "dilation_um": float(dilation_um),
        "spacing_um": [float(s) for s in spacing],
        "definitions": {
            "dilated_dice": "(|A∩D(B)|+|B∩D(A)|)/(|A|+|B|), D = Euclidean dilation, distance <= radius",
            "masd_um": "mean of the two directed mean boundary-voxel-centre distances",
            "boundary": "mask minus its 6-connected erosion",
            "empty": "both empty: dice 1, masd 0; one empty: dice 0, masd/hd95 NaN",
        },
    }
