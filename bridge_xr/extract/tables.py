"""Per-voxel tables: MRI intensity, normalised MRI and microscopy density for every MRI voxel.

Also the two MRI-grid images the tables need: the analysis mask (normal-appearing grey matter vs
glioma, minus vessels and artefacts, as the paper builds it from the 2P signal) and the MRI
z-normalised to the normal-appearing grey matter (Shinohara et al. 2014).

Examples
--------
>>> density_category(np.array([0.0, 0.01, 0.3, 1.0])).tolist()
['w/o', '0-5%', '25-50%', '75-100%']
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd

from bridge_xr._constants import SCANNER_RAS
from bridge_xr._dask import rechunk_method
from bridge_xr.errors import InvalidInputError
from bridge_xr.extract.densities import density
from bridge_xr.extract.footprint import Method
from bridge_xr.extract.masks import NAGM, _is_analysis, _mask_on_grid, _mask_values
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.io.study import subject_name
from bridge_xr.io.subject import read_subject
from bridge_xr.model.metadata import Provenance
from bridge_xr.scene.chains import Via, with_via
from bridge_xr.stats.categories import DENSITY_BINS, density_category


def channel_name(path: str) -> str:
    """``twophoton/d060/glioma`` -> ``glioma`` (a column-safe name)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", path.rstrip("/").rsplit("/", 1)[-1])


def _scanner_um(store: Any, mri: str) -> np.ndarray:
    """4x4 (zyx) MRI intrinsic physical -> reference µm (scanner RAS axes, z y x = S A R)."""
    img = read_image(store, mri)
    t = img.attrs["transforms"].get(SCANNER_RAS)
    from bridge_xr.model.units import conversion_factor

    fac = conversion_factor(img.attrs["unit"], "micrometer")
    m = np.eye(4) if t is None else np.asarray(t.to_affine(3), dtype=np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0, 0, 0, 1]])
    scale = np.diag([fac, fac, fac, 1.0])
    return scale @ m  # input in the image's unit; output µm


def _block_table(
    offset: tuple[int, int, int],
    keep: np.ndarray,
    label: np.ndarray | None,
    columns: dict[str, np.ndarray],
    fixed: dict[str, Any],
    spacing: np.ndarray,
    origin: np.ndarray,
    to_ref: np.ndarray,
    categories: Sequence[str],
    bins: Sequence[float],
) -> pd.DataFrame:
    idx = np.nonzero(keep)
    z, y, x = (idx[a] + offset[a] for a in range(3))
    frame: dict[str, Any] = {k: pd.Categorical([v] * len(z)) for k, v in fixed.items()}
    frame.update({"z": z.astype(np.int32), "y": y.astype(np.int32), "x": x.astype(np.int32)})
    for name, arr in columns.items():
        frame[name] = arr[idx].astype(np.float64)
    phys = np.stack([z, y, x], axis=1) * spacing + origin
    ref = phys @ to_ref[:3, :3].T + to_ref[:3, 3]
    frame["ref_z_um"], frame["ref_y_um"], frame["ref_x_um"] = ref[:, 0], ref[:, 1], ref[:, 2]
    if label is not None:
        frame["mask_label"] = label[idx].astype(np.int16)
    for ch in categories:
        frame[f"category_{ch}"] = density_category(frame[f"fraction_{ch}"], bins)
    return pd.DataFrame(frame)


@with_via
def extract_table(
    store: StoreLike,
    *,
    mri: str,
    microscopy: Sequence[str],
    mask: str | None = None,
    mri_z: str | None = None,
    reference_mask: str | None = None,
    thresholds: Mapping[str, float] | None = None,
    method: Method = "exact",
    subject: str | None = None,
    session: str | None = None,
    bins: Sequence[float] = DENSITY_BINS,
    via: Via = None,
) -> dd.DataFrame:
    """The per-voxel table of one MRI image and its microscopy, as a lazy dask DataFrame.

    ``mri_z`` is an already normalised image on the MRI grid; with ``reference_mask`` instead,
    the MRI is z-normalised on the fly (mean and SD over that mask's voxels). ``via`` names the
    registrations to use where several chains join a microscopy image to the MRI; inside
    ``with bridge_xr.scene.chains.using(via) as used:`` the names used are collected, for
    :func:`write_table`'s ``provenance``.

    Parameters
    ----------
    store : Scene, str, path or zarr store
        The subject.
    mri : str
        The MRI image (one table row per voxel).
    microscopy : sequence of str
        Microscopy images; each gives ``fraction_<ch>``, ``coverage_<ch>``, ``category_<ch>``
        (``<ch>`` the image's last path part, or ``CHANNEL`` of ``IMAGE#CHANNEL``, one channel
        of a multichannel image).
    mask : str, optional
        Label image on the MRI grid; rows where it is 0 are dropped.
    mri_z, reference_mask : str, optional
        A z-normalised image, or a mask to z-normalise over on the fly.
    thresholds : mapping channel -> float, optional
        Binarisation per channel (``"*"``: all).
    method : {'exact', 'resliced', 'bilinear'}
        Density method.
    subject, session : str, optional
        Table columns (default: from the store).
    bins : sequence of float
        Density category edges.
    via : str or list of str, optional
        Registration names in chain order.

    Returns
    -------
    dask.dataframe.DataFrame

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> t = extract_table(tiny_scene(registered=True), mri="mri", microscopy=["micro"],
    ...                   thresholds={"*": 100})
    >>> df = t.compute()
    >>> len(df), float(df["fraction_micro"].max())
    (256, 1.0)
    """
    # long by design: one column per input, built lazily in table order
    st = resolve_store(store)
    ref = read_image(st, mri)
    thresholds = dict(thresholds or {})
    chunks = ref.data.chunks
    columns: dict[str, da.Array] = {"mri": ref.data.astype(np.float64)}
    if mri_z:
        zimg = read_image(st, mri_z)
        if tuple(zimg.shape) != tuple(ref.shape):
            raise InvalidInputError(f"{mri_z!r} is not on the grid of {mri!r}")
        columns["mri_z"] = zimg.data.astype(np.float64).rechunk(chunks, method=rechunk_method())
    elif reference_mask:
        sel = _mask_values(
            st, reference_mask, mri, NAGM if _is_analysis(st, reference_mask) else None
        )
        vals = columns["mri"]
        n = sel.sum()
        mean = da.where(sel, vals, 0).sum() / n
        sd = da.sqrt((da.where(sel, (vals - mean) ** 2, 0).sum()) / (n - 1))
        columns["mri_z"] = (vals - mean) / sd
    names = []
    for item in microscopy:
        # IMAGE#CHANNEL: one channel of a multichannel image (e.g. a section stack)
        path, _, channel = item.partition("#")
        ch = channel_name(channel or path)
        if ch in names:
            raise InvalidInputError(f"two microscopy images are both called {ch!r}; rename one")
        names.append(ch)
        thr = thresholds.get(ch, thresholds.get("*"))
        ds = density(st, microscopy=path, mri=mri, threshold=thr, method=method,
                     channel=channel or None)  # fmt: skip
        columns[f"fraction_{ch}"] = ds["fraction"].data.rechunk(chunks, method=rechunk_method())
        columns[f"coverage_{ch}"] = ds["coverage"].data.rechunk(chunks, method=rechunk_method())
    keep = da.ones(ref.shape, dtype=bool, chunks=chunks)
    label = None
    if mask:
        label = _mask_on_grid(st, mask, mri).rechunk(chunks, method=rechunk_method())
        keep = label > 0
    meta_img = read_subject(st).images.get(mri)
    fixed = {
        "subject": subject or subject_name(st, store),
        "session": session or (meta_img.session if meta_img and meta_img.session else "none"),
        "image": mri,
    }
    spacing = np.array([ref.attrs["spacing"][d] for d in "zyx"])
    origin = np.array([ref.attrs["origin"][d] for d in "zyx"])
    to_ref = _scanner_um(st, mri)
    offsets = [np.cumsum((0, *c)) for c in chunks]
    parts = []
    for bidx in itertools.product(*(range(len(c)) for c in chunks)):
        off = tuple(int(offsets[a][i]) for a, i in enumerate(bidx))
        cols = {k: v.blocks[bidx] for k, v in columns.items()}
        parts.append(
            dask.delayed(_block_table)(
                off,
                keep.blocks[bidx],
                None if label is None else label.blocks[bidx],
                cols,
                fixed,
                spacing,
                origin,
                to_ref,
                names,
                bins,
            )
        )
    meta = _block_table(
        (0, 0, 0),
        np.zeros((1, 1, 1), bool),
        None if label is None else np.zeros((1, 1, 1)),
        {k: np.zeros((1, 1, 1)) for k in columns},
        fixed,
        spacing,
        origin,
        to_ref,
        names,
        bins,
    )
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


def write_table(
    table: dd.DataFrame,
    output: str | Path,
    *,
    overwrite: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Parquet partitioned by subject and session (hive style: ``subject=M001/session=d060``).

    Written by dask block by block into a hidden folder, then each (subject, session) partition
    is moved into place as a whole; partitions of other subjects and sessions are left alone.
    ``provenance`` (e.g. the registrations used) goes to ``_provenance.json`` in every partition
    (Parquet readers skip files whose names start with ``_``).

    Parameters
    ----------
    table : dask.dataframe.DataFrame
        A table from :func:`extract_table`.
    output : str or path
        Tables folder.
    overwrite : bool
        Replace the (subject, session) partitions already there.
    provenance : mapping, optional
        Written next to each partition as ``_provenance.json``.

    Returns
    -------
    list of Path, or of str for an object-store ``output`` (``s3://``)
        The Parquet files written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing import tiny_scene
    >>> t = extract_table(tiny_scene(registered=True), mri="mri", microscopy=["micro"], subject="M1",
    ...                   session="d1")
    >>> sorted({p.parent.name for p in write_table(t, pathlib.Path(tempfile.mkdtemp()))})
    ['session=d1']
    """
    import shutil
    import tempfile
    import uuid

    from bridge_xr.io.locations import is_remote

    remote = is_remote(output)
    out = Path(tempfile.mkdtemp(prefix="bridge_xr-tables-")) if remote else Path(output)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".tmp-{uuid.uuid4().hex[:8]}"
    table = table.assign(
        subject=table["subject"].astype(str),
        session=table["session"].astype(str),
        image=table["image"].astype(str),
    )
    try:
        table.to_parquet(tmp, partition_on=["subject", "session"], write_index=False)
        parts = sorted(p for p in tmp.glob("subject=*/session=*") if p.is_dir())
        if not parts:
            raise InvalidInputError("the table is empty: the mask keeps no voxel; check `mask`")
        stamp = Provenance.now("extract", **dict(provenance or {}))
        if remote:
            return _upload_partitions(
                parts, str(output), stamp.model_dump_json(indent=2), overwrite
            )
        for part in parts:
            dest = out / part.parent.name / part.name
            if dest.exists() and not overwrite:
                raise InvalidInputError(
                    f"{dest} already exists; pass `overwrite` to replace that subject/session"
                )
        written: list[Any] = []
        for part in parts:
            (part / "_provenance.json").write_text(stamp.model_dump_json(indent=2))
            dest = out / part.parent.name / part.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                shutil.rmtree(dest)
            part.rename(dest)
            written.extend(sorted(dest.glob("*.parquet")))
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if remote:
            shutil.rmtree(out, ignore_errors=True)


def _upload_partitions(parts: list[Path], output: str, stamp: str, overwrite: bool) -> list[Any]:
    """Send finished partitions to an object-store tables prefix; their Parquet URLs.

    Every destination is checked before anything is sent; a replaced partition is removed first.
    """
    from bridge_xr.io.locations import filesystem, join

    fs, base = filesystem(output)
    base = base.rstrip("/")
    names = [f"{part.parent.name}/{part.name}" for part in parts]
    if not overwrite:
        for name in names:
            if fs.exists(f"{base}/{name}"):
                raise InvalidInputError(
                    f"{join(output, name)} already exists; pass `overwrite` to replace that "
                    "subject/session"
                )
    written: list[Any] = []
    for part, name in zip(parts, names, strict=True):
        (part / "_provenance.json").write_text(stamp)
        dest, path = join(output, name), f"{base}/{name}"
        if fs.exists(path):
            fs.rm(path, recursive=True)
        for f in sorted(part.iterdir()):
            fs.put_file(str(f), f"{path}/{f.name}")
            if f.suffix == ".parquet":
                written.append(f"{dest}/{f.name}")
    fs.invalidate_cache()
    return written


def read_tables(tables: str | Path, *, where: str | None = None) -> pd.DataFrame:
    """Every partition of a tables folder as one DataFrame (subject and session as columns).

    Parameters
    ----------
    tables : str or path
        A tables folder written by :func:`write_table` / :func:`extract_study`, or one table
        file (``.parquet``, ``.csv``, ``.tsv``: a lesion table, per-vessel ratings).
    where : str, optional
        Keep only the rows of this pandas query (e.g. ``"mask_label == 2"``).

    Returns
    -------
    DataFrame

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bridge_xr.testing import tiny_scene
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "tables"
    >>> t = extract_table(tiny_scene(registered=True), mri="mri", microscopy=["micro"], subject="M1",
    ...                   session="d1")
    >>> _ = write_table(t, out)
    >>> read_tables(out)[["subject", "session"]].drop_duplicates().values.tolist()
    [['M1', 'd1']]
    """
    from bridge_xr.io.locations import filesystem, is_remote

    if not is_remote(tables) and Path(tables).suffix.lower() in _TABLE_FILES:
        return _query(_read_table_file(Path(tables)), where)
    fs: Any = None
    if is_remote(tables):
        fs, base = filesystem(str(tables))
        fs.invalidate_cache()
        found = [Path(p) for p in fs.glob(f"{base.rstrip('/')}/subject=*/session=*") if fs.isdir(p)]
    else:
        found = [p for p in Path(tables).glob("subject=*/session=*") if p.is_dir()]
    folders = sorted(found)
    if not folders:
        raise InvalidInputError(
            f"no Parquet tables under {str(tables)!r}; run `bridge extract` first"
        )
    frames = []
    for folder in folders:
        if fs is None:
            part = pd.read_parquet(folder)
        else:
            files = sorted(p for p in fs.ls(str(folder), detail=False) if p.endswith(".parquet"))
            part = pd.concat([pd.read_parquet(f, filesystem=fs) for f in files], ignore_index=True)
        part.insert(0, "session", folder.name.split("=", 1)[1])
        part.insert(0, "subject", folder.parent.name.split("=", 1)[1])
        frames.append(part)
    return _query(pd.concat(frames, ignore_index=True), where)


_TABLE_FILES = (".parquet", ".csv", ".tsv")


def _read_table_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InvalidInputError(f"no such table file: {str(path)!r}; check the path")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InvalidInputError(f"cannot read table {str(path)!r}: {exc}") from None


def _query(df: pd.DataFrame, where: str | None) -> pd.DataFrame:
    if not where:
        return df
    try:
        return df.query(where)
    except Exception as exc:  # pandas raises many kinds for a bad expression
        raise InvalidInputError(f"`where` {where!r} is not a valid query: {exc}") from None


#: the name the Python API uses: ``bx.extract.table(scene, mri=..., microscopy=[...])``
table = extract_table
