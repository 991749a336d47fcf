"""One subject, opened once: images, transform graph and bridge_xr metadata (:class:`Scene`).

A :class:`Scene` is what a notebook works with. Opening one reads the store's root metadata
once; images are read lazily (dask) and their metadata cached, until a write through the scene
(or through any bridge_xr function given the scene) makes it read again. Every bridge_xr
function that takes a store also takes a scene, and then reads nothing twice.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from zarr.abc.store import Store

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import (
    StoreLike,
    cached,
    describe_store,
    hold_cache,
    invalidate,
    key_exists,
    resolve_store,
)
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import add_image, read_subject
from bridge_xr.model.metadata import (
    ImageMetadata,
    LandmarkSet,
    Modality,
    Provenance,
    Registration,
    SubjectMetadata,
)
from bridge_xr.model.pointmaps import Model
from bridge_xr.scene.chains import Via
from bridge_xr.scene.edges import add_registration, set_current
from bridge_xr.scene.graph import TransformGraph

__all__ = ["Scene", "open_scene"]

_XYZ = ["x", "y", "z"]


class Scene(Mapping[str, xr.DataArray]):
    """A subject store: images (a read-only mapping path -> DataArray) plus its transform graph.

    Use :func:`open_scene` to make one.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> scene = tiny_scene(registered=True)
    >>> sorted(scene)
    ['micro', 'mri']
    >>> scene["mri"].attrs["unit"]
    'micrometer'
    >>> scene.registrations["micro_to_mri"].model
    'rigid'
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        hold_cache(store)

    # -- what it holds ---------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The zarr store (local, ``s3://``, memory ...)."""
        return self._store

    @property
    def subject(self) -> SubjectMetadata:
        """The ``bridge_xr`` metadata block (images, registrations, provenance)."""
        return read_subject(self._store)

    @property
    def registrations(self) -> Mapping[str, Registration]:
        """Stored registrations by name."""
        return self.subject.registrations

    @property
    def graph(self) -> TransformGraph:
        """The transform graph (built once per state of the store: any write rebuilds it)."""
        return cached(self._store, ("scene", "graph"), lambda: TransformGraph(self._store))

    def __getitem__(self, path: str) -> xr.DataArray:
        """The image at ``path`` (full resolution), lazy; see :meth:`image` for other levels."""
        return self.image(path)

    def __iter__(self) -> Iterator[str]:
        return iter(self.subject.images)

    def __len__(self) -> int:
        return len(self.subject.images)

    def image(self, path: str, *, level: int = 0) -> xr.DataArray:
        """One pyramid level of an image as a lazy, calibrated DataArray.

        Examples
        --------
        >>> from bridge_xr.testing import tiny_scene
        >>> tiny_scene().image("mri", level=0).shape
        (4, 8, 8)
        """
        if path not in self.subject.images:
            known = ", ".join(sorted(self.subject.images)) or "none"
            msg = f"no image {path!r} in {describe_store(self._store)}; images: {known}"
            raise KeyError(msg)
        return read_image(self._store, path, level=level)

    # -- points --------------------------------------------------------------------------------
    def map_points(
        self,
        points: pd.DataFrame | np.ndarray,
        *,
        src: str,
        dst: str,
        via: Via = None,
    ) -> pd.DataFrame | np.ndarray:
        """Map points from one image (or coordinate system) into another, exactly.

        Parameters
        ----------
        points : DataFrame with columns x, y, z (µm), or ndarray of shape (N, 3) z, y, x (µm)
            Points in ``src``'s space. A frame keeps its other columns.
        src, dst : str
            ``IMAGE``, ``IMAGE#SYSTEM`` or a scene system name.
        via : str or list of str, optional
            Edge (registration) names in chain order, when several routes join them.

        Returns
        -------
        DataFrame or ndarray
            The same type as ``points``; NaN where a folded TPS has no inverse.

        Examples
        --------
        >>> import pandas as pd
        >>> from bridge_xr.testing import tiny_scene
        >>> scene = tiny_scene(registered=True)   # micro = mri + 5 µm in x
        >>> pts = pd.DataFrame({"name": ["a"], "x": [0.0], "y": [0.0], "z": [0.0]})
        >>> scene.map_points(pts, src="mri", dst="micro")[["x", "y", "z"]].round(6).values.tolist()
        [[5.0, 0.0, 0.0]]
        """
        if isinstance(points, pd.DataFrame):
            missing = [c for c in _XYZ if c not in points.columns]
            if missing:
                raise InvalidInputError(f"`points` lacks columns {missing}; give x, y, z in µm")
            xyz = points[_XYZ].to_numpy(dtype=np.float64)
            mapped, _ = self.graph.map_points(xyz, src, dst, via=via)
            out = points.copy()
            out[_XYZ] = mapped
            return out
        arr = np.asarray(points, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise InvalidInputError(f"`points` must have shape (N, 3) z, y, x; got {arr.shape}")
        mapped, _ = self.graph.map_points(arr[:, ::-1], src, dst, via=via)
        return mapped[:, ::-1]

    # -- writing -------------------------------------------------------------------------------
    def refresh(self) -> Scene:
        """Forget what was read (after another process changed the store)."""
        invalidate(self._store)
        return self

    def add_registration(
        self,
        model: Model,
        *,
        fixed: str,
        moving: str,
        name: str,
        landmarks: LandmarkSet | None = None,
        report: dict[str, Any] | None = None,
        overwrite: bool = False,
        current: bool = False,
    ) -> Registration:
        """Store a fitted model (fixed -> moving, see :func:`bridge_xr.register.fit`).

        Examples
        --------
        >>> import numpy as np, bridge_xr as bx
        >>> from bridge_xr.testing import tiny_scene
        >>> scene = tiny_scene()
        >>> fixed = np.array([[0, 0, 0], [80, 0, 0], [0, 80, 0], [0, 0, 40.0]])
        >>> reg = bx.register.fit("rigid", fixed, fixed + [5.0, 0, 0])
        >>> scene.add_registration(reg, fixed="mri", moving="micro", name="shift").name
        'shift'
        >>> [e.name for e, _ in scene.graph.path("micro", "mri")]
        ['shift']
        """
        lms = landmarks or LandmarkSet(fixed=fixed, moving=moving, landmarks=())
        rec = add_registration(
            self._store, model, fixed=fixed, moving=moving, name=name, landmarks=lms,
            report=report, overwrite=overwrite, current=current,
        )  # fmt: skip
        return rec

    def set_current(self, name: str) -> Registration:
        """Mark registration ``name`` the one to use for its image pair."""
        rec = set_current(self._store, name)
        return rec

    def write_image(
        self,
        image: xr.DataArray,
        path: str,
        *,
        modality: Modality = "derived",
        source: str | None = None,
        overwrite: bool = False,
        labels: bool = False,
        **storage: Any,
    ) -> ImageMetadata:
        """Write a DataArray (e.g. from :func:`bridge_xr.resample`) as a new image of the scene.

        ``storage`` goes to :func:`bridge_xr.io.add_image` (levels, chunks, shards, compressor).
        Provenance records ``attrs["resample"]`` when the image carries it.

        Examples
        --------
        >>> import bridge_xr as bx
        >>> from bridge_xr.testing import tiny_scene
        >>> scene = tiny_scene(registered=True)
        >>> out = bx.resample(scene, moving="micro", onto="mri")
        >>> scene.write_image(out, "registered/micro").path
        'registered/micro'
        >>> "registered/micro" in scene
        True
        """
        how = dict(image.attrs.get("resample", {}))
        meta = ImageMetadata(
            path=path,
            modality="labels" if labels else modality,
            kind="labels" if labels else "image",
            source=source or (f"{how['moving']} resampled onto {how['onto']}" if how else None),
            provenance=Provenance.now(
                "resample" if how else "write image",
                inputs=tuple(v for v in (how.get("moving"), how.get("onto")) if v),
                **how,
            ),
        )
        storage.setdefault("method", "mode" if labels else "mean")
        subject = add_image(self._store, image, meta, overwrite=overwrite, **storage)
        return subject.images[meta.path]

    # -- display -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Everything ``bridge info`` shows, as a dict."""
        from bridge_xr.scene.info import describe

        return describe(self)

    def _rows(self) -> list[tuple[str, str, str, str]]:
        rows = []
        for path, meta in sorted(self.subject.images.items()):
            img = read_image(self._store, path)
            sp = img.attrs["spacing"]
            spacing = "×".join(f"{sp[d]:.4g}" for d in "zyx" if d in sp)
            shape = "×".join(str(n) for n in img.shape)
            rows.append(
                (
                    path,
                    f"{meta.modality} {'(' + ','.join(map(str, img.dims)) + ')'}",
                    shape,
                    f"{spacing} {img.attrs['unit']}",
                )
            )
        return rows

    def __repr__(self) -> str:
        subject = self.subject
        lines = [
            f"<bridge_xr.Scene {describe_store(self._store)}: {len(subject.images)} images, {len(subject.registrations)} registrations>"
        ]
        for path, kind, shape, spacing in self._rows():
            lines.append(f"  {path:<36} {kind:<22} {shape:<16} {spacing}")
        for rec in subject.registrations.values():
            mark = " (current)" if rec.name in subject.current_registrations else ""
            lines.append(f"  reg {rec.name}: {rec.moving} -> {rec.fixed} [{rec.model}]{mark}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        e = html.escape
        head = "<tr><th>image</th><th>modality (dims)</th><th>shape</th><th>spacing</th></tr>"
        body = "".join(
            f"<tr>{''.join(f'<td>{e(c)}</td>' for c in row)}</tr>" for row in self._rows()
        )
        regs = "".join(
            f"<li><b>{e(r.name)}</b>: {e(r.moving)} → {e(r.fixed)} ({e(r.model)})</li>"
            for r in self.subject.registrations.values()
        )
        return (
            f"<div><b>bridge_xr.Scene</b> {e(describe_store(self._store))}"
            f"<table>{head}{body}</table><ul>{regs}</ul></div>"
        )


def open_scene(where: StoreLike, *, storage_options: dict[str, Any] | None = None) -> Scene:
    """Open a subject store (local path, ``s3://`` URL or zarr store) as a :class:`Scene`.

    Parameters
    ----------
    where : str, path or zarr store
        The subject store. A path that does not exist is refused (use ``bridge convert`` or
        :func:`bridge_xr.io.add_image` to make one).
    storage_options : dict, optional
        fsspec options for URLs (endpoint, credentials); by default from the environment.

    Returns
    -------
    Scene

    Raises
    ------
    InvalidInputError
        No such store, or not a zarr v3 store.

    Examples
    --------
    >>> import bridge_xr as bx
    >>> from bridge_xr.testing import tiny_scene
    >>> scene = bx.open_scene(tiny_scene().store)
    >>> len(scene)
    2
    """
    if isinstance(where, Scene):
        return where
    store = resolve_store(where, storage_options=storage_options)
    if not key_exists(store, "zarr.json"):
        raise InvalidInputError(
            f"{describe_store(store)} is not a subject store (no zarr.json); "
            "make one with `bridge convert`"
        )
    return Scene(store)
