"""``bridge colocalize``: nuclei from a DAPI channel, each nucleus' marker positivity, agreement.

Nuclei are the connected components (exact across chunks, :func:`component_table`) of
``DAPI >= threshold``; each nucleus' mean intensity in every marker channel decides its
positivity (``mean >= the marker's threshold``). A threshold is a number in the channel's values
or ``"otsu"``: Otsu's threshold of the voxel histogram (nuclei) or of the per-nucleus means
(markers), computed and reported, never assumed. Touching nuclei that share a face are one
object: there is no watershed split.

The summary holds, per marker, the positive count and, for each ordered pair (reference, test),
the double positives and the test's sensitivity (positive among the reference's positives:
the paper's "94.0 % of Nestin-positive cells exhibited GFP"), specificity and precision.

Examples
--------
>>> import pandas as pd
>>> nuclei = pd.DataFrame({"positive_nestin": [True, True, False, False],
...                        "positive_gfp": [True, False, False, True]})
>>> s = agreement(nuclei, ["nestin", "gfp"])
>>> s.set_index(["reference", "test"]).loc[("nestin", "gfp"), "sensitivity"].item()
0.5
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd

from bridge_xr._dask import scheduler
from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.lesions.components import component_table

__all__ = ["Colocalization", "agreement", "colocalize", "otsu_of"]

Threshold = float | str


@dataclass
class Colocalization:
    """What :func:`colocalize` measured.

    ``nuclei``: ``nucleus, voxels, volume_um3, centroid_*, mean_<m>, positive_<m>``;
    ``summary``: per (reference, test) marker pair; ``thresholds``: those used, by name.
    """

    nuclei: pd.DataFrame
    summary: pd.DataFrame
    thresholds: dict[str, float]


def otsu_of(values: Any, bins: int = 1024) -> float:
    """Otsu's threshold of an array (dask or numpy), from its histogram (one pass over blocks)."""
    from skimage.filters import threshold_otsu

    arr = values if isinstance(values, da.Array) else da.from_array(np.asarray(values))
    lo, hi = (float(v) for v in da.compute(arr.min(), arr.max(), scheduler=scheduler()))
    if not hi > lo:
        raise InvalidInputError("Otsu's threshold needs at least two distinct values")
    counts, edges = da.histogram(arr, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    return float(threshold_otsu(hist=(np.asarray(counts.compute(scheduler=scheduler())), centres)))


def _name(image: str) -> str:
    return image.rstrip("/").rsplit("/", 1)[-1]


def agreement(nuclei: pd.DataFrame, markers: list[str]) -> pd.DataFrame:
    """Counts and agreement of each ordered marker pair (see the module doc)."""
    n = len(nuclei)
    rows = []
    for ref, test in itertools.permutations(markers, 2):
        r, t = nuclei[f"positive_{ref}"].to_numpy(bool), nuclei[f"positive_{test}"].to_numpy(bool)
        tp, fn, fp, tn = (int((r & t).sum()), int((r & ~t).sum()), int((~r & t).sum()),
                          int((~r & ~t).sum()))  # fmt: skip
        rows.append({
            "reference": ref,
            "test": test,
            "nuclei": n,
            "reference_positive": int(r.sum()),
            "test_positive": int(t.sum()),
            "double_positive": tp,
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
        })  # fmt: skip
    return pd.DataFrame(rows)


def colocalize(
    where: StoreLike,
    *,
    nuclei: str,
    nuclei_threshold: Threshold,
    markers: Mapping[str, Threshold],
    min_volume_um3: float = 0.0,
    output: str | Path | None = None,
) -> Colocalization:
    """Segment nuclei, score each nucleus for every marker, and compare the markers.

    Parameters
    ----------
    where : str, path or store
        The subject store.
    nuclei : str
        The nuclear stain (e.g. ``exvivo/slab03/DAPI``), a z, y, x image.
    nuclei_threshold : float or "otsu"
        Voxels at or above it are nucleus.
    markers : mapping image -> float or "otsu"
        Marker channels on the same grid and the mean intensity that makes a nucleus positive.
    min_volume_um3 : float
        Drop smaller objects (debris) before scoring.
    output : str or path, optional
        CSV (or ``.parquet``) of the nuclei; the summary goes beside it as ``<stem>_summary.csv``.
    """
    if not markers:
        raise InvalidInputError("give at least one --marker IMAGE=THRESHOLD (or IMAGE=otsu)")
    names = [_name(m) for m in markers]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"marker images must end in distinct names; got {names}")
    store = resolve_store(where)
    img = read_image(store, nuclei)
    if tuple(str(d) for d in img.dims) != ("z", "y", "x"):
        raise InvalidInputError(f"{nuclei!r} has dims {img.dims}; nuclei need one z, y, x image")
    chans = {}
    for image in markers:
        m = read_image(store, image)
        if tuple(m.shape) != tuple(img.shape):
            raise InvalidInputError(
                f"marker {image!r} has shape {tuple(m.shape)} but {nuclei!r} has "
                f"{tuple(img.shape)}; both channels must be on one grid"
            )
        chans[_name(image)] = m.data
    thresholds = {"nuclei": _threshold(nuclei_threshold, img.data, "nuclei")}
    from bridge_xr.lesions.tables import _spacing_um

    table = component_table(img.data >= thresholds["nuclei"], _spacing_um(img), values=chans)
    table = table[table["volume_um3"] >= min_volume_um3].rename(columns={"lesion": "nucleus"})
    if table.empty:
        raise InvalidInputError(
            f"no nuclei in {nuclei!r} at threshold {thresholds['nuclei']:.4g} "
            f"(min volume {min_volume_um3} µm³); lower the threshold"
        )
    table = table.reset_index(drop=True).assign(nucleus=lambda d: np.arange(1, len(d) + 1))
    for image, thr in markers.items():
        name = _name(image)
        thresholds[name] = _threshold(thr, table[f"mean_{name}"].to_numpy(), name)
        table[f"positive_{name}"] = table[f"mean_{name}"] >= thresholds[name]
    summary = agreement(table, names) if len(names) > 1 else pd.DataFrame()
    if output is not None:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".parquet":
            table.to_parquet(out, index=False)
        else:
            table.to_csv(out, index=False)
        summary.to_csv(out.with_name(f"{out.stem}_summary.csv"), index=False)
    return Colocalization(table, summary, thresholds)


def _threshold(value: Threshold, data: Any, what: str) -> float:
    if isinstance(value, str):
        if value.strip().lower() != "otsu":
            raise InvalidInputError(f"{what}: a threshold is a number or 'otsu'; got {value!r}")
        return otsu_of(data)
    return float(value)
