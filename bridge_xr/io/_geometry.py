"""Exact conversions between MRI header geometry and bridge_xr's ``intrinsic -> scanner_ras``.

``intrinsic`` coordinates are ``(k*sz, j*sy, i*sx)`` (array order z, y, x) and ``scanner_ras``
axes are ordered ``(S, A, R)``. With ``P`` the order-reversing matrix and ``F = diag(-1, -1, 1)``
(LPS <-> RAS):

* NIfTI (voxel -> RAS affine ``A``, zooms ``s``): ``M = P A3 diag(1/s) P``, ``t = P A[:3, 3]``;
* ITK/DICOM (spacing ``s``, origin ``o``, direction ``D``, LPS): ``M = P F D P``, ``t = P F o``.

Examples
--------
>>> import numpy as np
>>> a = np.diag([0.1, 0.1, 0.5, 1.0]); a[:3, 3] = [1, 2, 3]
>>> m = nifti_to_scanner(a, (0.1, 0.1, 0.5))
>>> np.allclose(scanner_to_nifti(m, (0.1, 0.1, 0.5)), a)
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

P3 = np.eye(3)[::-1]
F3 = np.diag([-1.0, -1.0, 1.0])
Array = NDArray[np.float64]


def nifti_to_scanner(affine: Any, zooms: Any) -> Array:
    """NIfTI voxel->RAS (4x4) to the homogeneous intrinsic(zyx)->RAS(SAR) matrix."""
    a = np.asarray(affine, dtype=np.float64)
    z = np.asarray(zooms, dtype=np.float64)[:3]
    m = np.eye(4)
    m[:3, :3] = P3 @ a[:3, :3] @ np.diag(1.0 / z) @ P3
    m[:3, 3] = P3 @ a[:3, 3]
    return m


def scanner_to_nifti(matrix: Any, zooms: Any) -> Array:
    """Inverse of :func:`nifti_to_scanner`."""
    m = np.asarray(matrix, dtype=np.float64)
    z = np.asarray(zooms, dtype=np.float64)[:3]
    a = np.eye(4)
    a[:3, :3] = P3 @ m[:3, :3] @ P3 @ np.diag(z)
    a[:3, 3] = P3 @ m[:3, 3]
    return a


def itk_to_scanner(direction: Any, origin: Any) -> Array:
    """ITK/DICOM direction (3x3, row-major as SimpleITK gives) and origin (LPS) to the matrix."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    o = np.asarray(origin, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = P3 @ F3 @ d @ P3
    m[:3, 3] = P3 @ F3 @ o
    return m


def scanner_to_itk(matrix: Any) -> tuple[Array, Array]:
    """Inverse of :func:`itk_to_scanner`: ``(direction 3x3, origin)`` in LPS."""
    m = np.asarray(matrix, dtype=np.float64)
    d = F3 @ P3 @ m[:3, :3] @ P3
    o = F3 @ P3 @ m[:3, 3]
    return d, o
