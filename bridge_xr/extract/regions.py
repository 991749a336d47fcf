"""Microscopy volume fractions per region of an MRI (e.g. tumour core vs infiltration zone).

For the clinical branch: a Nestin-positive (or any thresholded) microscopy channel integrated
into every voxel of a clinical MRI (:func:`~bridge_xr.extract.densities.density`, through any
chain of registrations), then summed per region of a label image on that MRI's grid. Per region:
the voxels, the volume the microscopy covers, the positive volume and their ratio (the region's
positive volume fraction, weighting each voxel by how much of it the microscopy covers), and the
mean and SD of the per-voxel fractions over fully covered voxels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd

from bridge_xr._dask import rechunk_method, scheduler
from bridge_xr.errors import InvalidInputError
from bridge_xr.extract.densities import density
from bridge_xr.extract.footprint import Method
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.model.image import um_factor

__all__ = ["region_densities"]


def _block_sums(lab: np.ndarray, frac: np.ndarray, cov: np.ndarray, n: int) -> np.ndarray:
    lab = lab.ravel().astype(np.int64)
    f, c = frac.ravel(), cov.ravel()
    ok = (lab > 0) & (lab < n)
    fin = ok & np.isfinite(f) & (c > 0)
    full = fin & (c >= 1.0)
    out = np.zeros((6, n))
    out[0] = np.bincount(lab[ok], minlength=n)
    out[1] = np.bincount(lab[fin], weights=c[fin], minlength=n)
    out[2] = np.bincount(lab[fin], weights=(f * c)[fin], minlength=n)
    out[3] = np.bincount(lab[full], minlength=n)
    out[4] = np.bincount(lab[full], weights=f[full], minlength=n)
    out[5] = np.bincount(lab[full], weights=(f * f)[full], minlength=n)
    return out


def region_densities(
    where: StoreLike,
    *,
    microscopy: str,
    mri: str,
    regions: str,
    channel: str | int | None = None,
    threshold: float | None = None,
    method: Method = "resliced",
    names: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """Positive volume fraction of ``microscopy`` per region label of ``regions`` on ``mri``.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    microscopy : str
        Microscopy image, chained to ``mri`` by registrations.
    mri : str
        The MRI whose grid the regions are drawn on.
    regions : str
        Label image on ``mri``'s grid (0 = no region).
    channel : str or int, optional
        Channel of a multichannel microscopy image.
    threshold : float, optional
        Positive above this value (volume fraction); else the mean intensity.
    method : {'resliced', 'exact', 'bilinear'}
        As for :func:`~bridge_xr.extract.densities.density`.
    names : mapping of int to str, optional
        Region names (e.g. ``{1: "core", 2: "infiltration"}``).

    Returns
    -------
    DataFrame
        ``region, name, voxels, covered_voxels, covered_volume_um3, positive_volume_um3,
        volume_fraction, mean_fraction, sd_fraction, full_voxels``.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> from bridge_xr.io.subject import add_image
    >>> from bridge_xr.model.image import make_image
    >>> from bridge_xr.model.metadata import ImageMetadata, Provenance
    >>> import numpy as np
    >>> scene = tiny_scene(registered=True)
    >>> lab = np.zeros((4, 8, 8), np.uint8); lab[1:3, 2:6, 2:6] = 1; lab[0] = 2
    >>> _ = add_image(scene, make_image(lab, dims="zyx", spacing=(10, 10, 10), origin=(5, 5, 5),
    ...     unit="um"), ImageMetadata(path="regions", modality="labels", kind="labels",
    ...     provenance=Provenance.now("example")), levels=1)
    >>> t = region_densities(scene, microscopy="micro", mri="mri", regions="regions",
    ...                      threshold=100, method="exact")
    >>> t[["region", "volume_fraction"]].round(6).values.tolist()  # 3/4 of the cube in region 1
    [[1.0, 0.75], [2.0, 0.0]]
    """
    store = resolve_store(where)
    mr, lab = read_image(store, mri), read_image(store, regions)
    for d in ("t", "c"):
        if d in lab.dims:
            raise InvalidInputError(f"region labels {regions!r} must be one 3D label image")
    same = lab.shape == tuple(mr.sizes[d] for d in "zyx") and all(
        np.isclose(lab.attrs["spacing"][d] * um_factor(lab), mr.attrs["spacing"][d] * um_factor(mr))
        and np.isclose(
            lab.attrs["origin"][d] * um_factor(lab), mr.attrs["origin"][d] * um_factor(mr)
        )
        for d in "zyx"
    )
    if not same:
        raise InvalidInputError(
            f"region labels {regions!r} are not on the grid of {mri!r}; draw them on it or "
            "`bridge resample --labels` them onto it first"
        )
    ds = density(store, microscopy=microscopy, mri=mri, channel=channel, threshold=threshold,
                 method=method)  # fmt: skip
    ids = [int(v) for v in da.unique(lab.data).compute(scheduler=scheduler()) if v > 0]
    if not ids:
        raise InvalidInputError(f"region labels {regions!r} hold no label > 0")
    n = max(ids) + 1
    chunks = lab.data.chunks
    frac = ds["fraction"].data.rechunk(chunks, method=rechunk_method())
    cov = ds["coverage"].data.rechunk(chunks, method=rechunk_method())
    parts = [dask.delayed(_block_sums)(a, b, c, n) for a, b, c in zip(
        lab.data.to_delayed().ravel(), frac.to_delayed().ravel(), cov.to_delayed().ravel(),
        strict=True)]  # fmt: skip
    tot = np.sum(dask.compute(*parts, scheduler=scheduler()), axis=0)
    vox_um3 = float(np.prod([mr.attrs["spacing"][d] * um_factor(mr) for d in "zyx"]))
    rows: list[dict[str, Any]] = []
    for r in ids:
        covered, pos, nfull = tot[1, r], tot[2, r], tot[3, r]
        mean = tot[4, r] / nfull if nfull else float("nan")
        var = (tot[5, r] - nfull * mean * mean) / (nfull - 1) if nfull > 1 else float("nan")
        rows.append({
            "region": r,
            "name": (names or {}).get(r, ""),
            "voxels": int(tot[0, r]),
            "covered_voxels": covered,
            "covered_volume_um3": covered * vox_um3,
            "positive_volume_um3": pos * vox_um3,
            "volume_fraction": pos / covered if covered else float("nan"),
            "mean_fraction": mean,
            "sd_fraction": float(np.sqrt(max(var, 0.0))) if nfull > 1 else float("nan"),
            "full_voxels": int(nfull),
        })  # fmt: skip
    out = pd.DataFrame(rows)
    out.attrs["density"] = ds.attrs["density"]
    return out
