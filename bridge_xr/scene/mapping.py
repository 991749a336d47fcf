"""Points between images and coordinate systems, through the one :class:`TransformGraph`."""

from __future__ import annotations

from typing import Any

import numpy as np

from bridge_xr.io._store import StoreLike
from bridge_xr.model.metadata import Registration
from bridge_xr.scene.chains import (
    Via,
    apply_hops,
)
from bridge_xr.scene.graph import TransformGraph


def map_points_any(
    where: StoreLike, points_xyz_um: np.ndarray, src: str, dst: str, *, via: Any = None
) -> tuple[np.ndarray, list[str]]:
    """Map points between any two coordinate systems of a scene (see :class:`TransformGraph`).

    Between two images joined only by bridge_xr registrations this is
    :func:`bridge_xr.register.registration.map_points` (exact models; NaN where a TPS has no inverse).
    """
    return graph_of(where).map_points(points_xyz_um, src, dst, via=via)


def graph_of(where: StoreLike) -> TransformGraph:
    """The transform graph of a Scene (built once), or of a store (built now)."""
    graph = getattr(where, "graph", None)
    return graph if isinstance(graph, TransformGraph) else TransformGraph(where)


def path_between(
    where: StoreLike, src: str, dst: str, *, via: Via = None
) -> list[tuple[Registration, bool]]:
    """Registrations leading from image ``src`` to ``dst``: ``(record, forward?)`` per hop.

    Ambiguous chains (two registrations of one pair, two routes) need ``via`` (registration
    names in chain order) or a registration marked current; see :mod:`bridge_xr.scene.chains`.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    src, dst : str
        Image paths.
    via : str or list of str, optional
        Registration names in chain order.

    Returns
    -------
    list of (Registration, bool)

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> [(r.name, fwd) for r, fwd in path_between(tiny_scene(registered=True), "micro", "mri")]
    [('micro_to_mri', False)]
    """
    return graph_of(where).chain(src, dst, via=via)


def map_points(
    where: StoreLike,
    points_zyx_um: np.ndarray,
    src: str,
    dst: str,
    *,
    strict: bool = True,
    via: Via = None,
) -> np.ndarray:
    """Map ``(N, 3)`` points (z, y, x µm, ``src`` intrinsic) into ``dst``'s intrinsic space.

    Exact models all the way. Going against a TPS (moving -> fixed) needs its inverse; where the
    warp folds there is none: such points raise, or become NaN with ``strict=False``.

    Examples
    --------
    >>> import numpy as np
    >>> from bridge_xr.testing import tiny_scene
    >>> scene = tiny_scene(registered=True)  # micro = mri shifted by +5 µm in x
    >>> map_points(scene, np.zeros((1, 3)), "mri", "micro").round(6).tolist()
    [[0.0, 0.0, 5.0]]

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    points_zyx_um : ndarray of shape (N, 3)
        Points in ``src``'s intrinsic space, z, y, x micrometres.
    src, dst : str
        Image paths.
    strict : bool
        Raise where a folded TPS has no inverse (else NaN).
    via : str or list of str, optional
        Registration names in chain order, when several chains join the images.

    Returns
    -------
    ndarray of shape (N, 3)
        z, y, x micrometres in ``dst``.
    """
    hops = graph_of(where).models(src, dst, via=via)
    return apply_hops(hops, np.asarray(points_zyx_um, dtype=np.float64), strict=strict)


__all__ = ["graph_of", "map_points", "map_points_any", "path_between"]
