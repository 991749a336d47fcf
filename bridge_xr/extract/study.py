"""A study = a folder of subject stores (``<subject>.ome.zarr``) plus ``tables/``.

``plan_study`` finds, in every store, each MRI image that microscopy is registered to and the
microscopy of that session, the analysis mask ``masks/<session>/analysis`` and the normalised
MRI ``<mri>_z`` when they exist. ``extract_study`` turns every plan into one lazy table and
writes them in one dask computation (on whatever scheduler is active: threads, or a
dask-distributed cluster).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.dataframe as dd

from bridge_xr.errors import InvalidInputError
from bridge_xr.extract.footprint import Method
from bridge_xr.extract.tables import extract_table, write_table
from bridge_xr.io._store import resolve_store
from bridge_xr.io.study import subject_name, subject_stores
from bridge_xr.io.subject import read_subject
from bridge_xr.scene.chains import Via, using
from bridge_xr.stats.categories import DENSITY_BINS


@dataclass(frozen=True)
class SessionPlan:
    """What to extract for one MRI image of one subject."""

    store: str
    subject: str
    session: str
    mri: str
    microscopy: tuple[str, ...]
    mask: str | None = None
    mri_z: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def plan_subject(store_path: str | Path) -> list[SessionPlan]:
    """One plan per MRI image that has microscopy registered to it."""
    st = resolve_store(str(store_path))
    meta = read_subject(st)
    subject = subject_name(st, str(store_path))
    by_mri: dict[str, list[str]] = {}
    for rec in meta.registrations.values():
        fixed, moving = meta.images.get(rec.fixed), meta.images.get(rec.moving)
        if not (fixed and moving and moving.kind == "image"):
            continue
        if fixed.modality == "mri" and moving.modality != "mri":
            by_mri.setdefault(rec.fixed, []).append(rec.moving)
    plans = []
    for mri, mics in sorted(by_mri.items()):
        session = meta.images[mri].session or "none"
        mask = f"masks/{session}/analysis"
        mri_z = f"{mri}_z"
        plans.append(
            SessionPlan(
                store=str(store_path),
                subject=subject,
                session=session,
                mri=mri,
                microscopy=tuple(sorted(set(mics))),
                mask=mask if mask in meta.images else None,
                mri_z=mri_z if mri_z in meta.images else None,
            )
        )
    return plans


def extract_study(
    study: str | Path,
    output: str | Path,
    *,
    thresholds: Mapping[str, float] | None = None,
    method: Method = "exact",
    bins: Sequence[float] = DENSITY_BINS,
    overwrite: bool = False,
    via: Via = None,
    live: bool = False,
) -> tuple[list[SessionPlan], list[Any]]:
    """Extract every subject and session of a study into ``output`` (Parquet, partitioned).

    ``via``: registration names preferred where several chains join an image to its MRI (each
    name applies to the chains it lies on); the names used go into the tables' provenance.

    Parameters
    ----------
    study : str or path
        Folder of subject stores, or an archived study's ``s3://`` prefix.
    output : str or path
        Tables folder (Parquet, ``subject=/session=``), on disk or ``s3://``.
    thresholds : mapping channel -> float, optional
        Binarisation per microscopy channel (``"*"``: all).
    method : {'exact', 'resliced', 'bilinear'}
        Density method.
    bins : sequence of float
        Density category edges.
    overwrite : bool
        Replace existing partitions.
    via : str or list of str, optional
        Preferred registration names.
    live : bool
        Read an ``s3://`` study that has no archive manifest (see :func:`subject_stores`).

    Returns
    -------
    (list of SessionPlan, list of Path)
        What was extracted, and the partitions written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing import tiny_scene
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = tiny_scene(registered=True, where=root / "study" / "M001.ome.zarr")
    >>> plans, written = extract_study(root / "study", root / "tables", thresholds={"*": 100})
    >>> [(p.subject, p.mri) for p in plans]
    [('M001', 'mri')]
    """
    plans = [p for s in subject_stores(study, live=live) for p in plan_subject(s)]
    if not plans:
        raise InvalidInputError(
            f"no MRI image in {str(study)!r} has registered microscopy; run `bridge register` first"
        )
    with using(via) as used:
        tables = [
            extract_table(
                p.store,
                mri=p.mri,
                microscopy=p.microscopy,
                mask=p.mask,
                mri_z=p.mri_z,
                thresholds=thresholds,
                method=method,
                subject=p.subject,
                session=p.session,
                bins=bins,
            )
            for p in plans
        ]
    prov = {"study": str(study), "registrations": list(used)}
    return plans, write_table(dd.concat(tables), output, overwrite=overwrite, provenance=prov)
