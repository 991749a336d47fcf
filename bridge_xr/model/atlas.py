"""Section pixels to atlas coordinates: QuickNII anchoring and VisuAlign's nonlinear markers.

QuickNII stores, per section image of ``width`` x ``height`` pixels, an anchoring vector of nine
numbers ``o, u, v`` in atlas voxels: the image point ``(x, y)`` (pixels, continuous, the image's
top-left corner at 0) lies at ``o + (x / width) u + (y / height) v``. VisuAlign refines it with
markers ``(x0, y0, x1, y1)``: the atlas point first at ``(x0, y0)`` was moved onto the section's
``(x1, y1)``. Between markers the move is piecewise linear on the Delaunay triangulation of the
moved positions plus four fixed points 10 % outside the image corners, so an image point is taken
back to where the atlas had it (barycentric interpolation of the ``(x0, y0)``) before anchoring.

Examples
--------
>>> import numpy as np
>>> anchoring = [0, 0, 0, 100, 0, 0, 0, 0, -50]  # width -> 100 voxels in x, height -> -50 in z
>>> anchor_points(anchoring, 200, 100, np.array([[100.0, 50.0]])).tolist()
[[50.0, 0.0, -25.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bridge_xr.errors import InvalidInputError
from bridge_xr.model.pointmaps import Array

__all__ = ["anchor_points", "undo_markers"]


def anchor_points(anchoring: Sequence[float], width: float, height: float, xy: Array) -> Array:
    """Atlas voxel coordinates (N, 3) of image points ``xy`` (N, 2, pixels of the anchoring image).

    Parameters
    ----------
    anchoring : sequence of 9 floats
        ``ox, oy, oz, ux, uy, uz, vx, vy, vz``.
    width, height : float
        Size of the image the anchoring was made on (pixels).
    xy : array of shape (N, 2)
        Points, pixels (continuous: the first pixel's centre is at 0.5).

    Returns
    -------
    ndarray of shape (N, 3)
    """
    a = np.asarray(anchoring, dtype=np.float64)
    if a.shape != (9,) or not np.isfinite(a).all():
        raise InvalidInputError(f"an anchoring vector has 9 finite numbers; got {list(anchoring)}")
    p = np.asarray(xy, dtype=np.float64)
    return a[:3] + np.outer(p[:, 0] / width, a[3:6]) + np.outer(p[:, 1] / height, a[6:9])


def undo_markers(
    markers: Sequence[Sequence[float]], width: float, height: float, xy: Array
) -> Array:
    """Image points ``xy`` (pixels) taken back through VisuAlign markers to anchoring positions.

    Parameters
    ----------
    markers : sequence of (x0, y0, x1, y1)
        VisuAlign markers, pixels of the anchoring image.
    width, height : float
        The anchoring image's size.
    xy : array of shape (N, 2)
        Section points in that image's pixels.

    Returns
    -------
    ndarray of shape (N, 2)
        Positions before the markers' moves (points outside the frame 10 % beyond the image are
        left where they are).

    Examples
    --------
    >>> undo_markers([(50, 50, 60, 40)], 100, 100, np.array([[60.0, 40.0], [-10.0, -10.0]])).tolist()
    [[50.0, 50.0], [-10.0, -10.0]]
    """
    from scipy.spatial import Delaunay

    p = np.asarray(xy, dtype=np.float64)
    if not len(markers):
        return p.copy()
    m = np.asarray(markers, dtype=np.float64)
    corners = np.array([[-0.1 * width, -0.1 * height], [1.1 * width, -0.1 * height],
                        [-0.1 * width, 1.1 * height], [1.1 * width, 1.1 * height]])  # fmt: skip
    moved = np.vstack([corners, m[:, 2:4]])
    before = np.vstack([corners, m[:, 0:2]])
    tri = Delaunay(moved)
    simplex = tri.find_simplex(p)
    out = p.copy()
    inside = simplex >= 0
    t = tri.transform[simplex[inside]]  # (n, 3, 2): affine to barycentric
    b2 = np.einsum("nij,nj->ni", t[:, :2], p[inside] - t[:, 2])
    bary = np.column_stack([b2, 1.0 - b2.sum(axis=1)])
    out[inside] = np.einsum("nk,nkj->nj", bary, before[tri.simplices[simplex[inside]]])
    return out
