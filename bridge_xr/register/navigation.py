"""A resected human sample placed in the patient's clinical MRI from neuronavigation.

The paper's clinical branch: tissue extracted under neuronavigation is imaged ex vivo (9.4 T MRI,
then microscopy registered onto that MRI); neuronavigation says where it came from in the
patient's scanner space (RAS, mm). :func:`place_sample` turns that into an ordinary registration
of the sample's ex vivo MRI (moving) onto a clinical MRI (fixed), so microscopy densities reach
the clinical grid through the chain microscopy -> sample MRI -> clinical MRI.

Two kinds of navigation record:

* a **pose**: a 4 x 4 matrix taking the sample image's own coordinates (x, y, z mm, its intrinsic
  space) to scanner RAS mm: a full rigid placement;
* a **point**: the RAS position of one sample point (default its image centre): a translation
  only, the sample's axes taken along R, A, S. The orientation is then unknown; the report says
  so, and it is never presented as a pose.

A stated navigation error (``navigation_error_um``) becomes the registration's error figure, so
chains through it accumulate it; without one the accumulated error is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, describe_store, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject
from bridge_xr.model.image import physical_extent, um_factor
from bridge_xr.model.metadata import LandmarkSet, Provenance, Registration
from bridge_xr.model.pointmaps import fit
from bridge_xr.register.landmarks import world_to_intrinsic
from bridge_xr.scene.edges import add_registration, check_new_registration

__all__ = ["place_sample", "read_pose"]


def read_pose(text: str) -> np.ndarray:
    """A 4 x 4 matrix from 16 numbers (row by row; commas, spaces or new lines between them).

    Examples
    --------
    >>> read_pose("1 0 0 10  0 1 0 0  0 0 1 0  0 0 0 1")[:3, 3].tolist()
    [10.0, 0.0, 0.0]
    """
    try:
        vals = [float(v) for v in text.replace(",", " ").split()]
    except ValueError as exc:
        raise InvalidInputError(f"a pose is 16 numbers (4 x 4, row by row): {exc}") from exc
    if len(vals) != 16:
        raise InvalidInputError(f"a pose is 16 numbers (4 x 4, row by row); got {len(vals)}")
    m = np.array(vals).reshape(4, 4)
    if not np.allclose(m[3], [0, 0, 0, 1]):
        raise InvalidInputError(f"a pose's last row is 0 0 0 1; got {m[3].tolist()}")
    rot = m[:3, :3]
    if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-4) or np.linalg.det(rot) < 0:
        raise InvalidInputError(
            "the pose's 3 x 3 part is not a rotation (a navigation pose is rigid); check the file"
        )
    return m


def place_sample(
    where: StoreLike,
    *,
    clinical: str,
    sample: str,
    position_ras_mm: Sequence[float] | None = None,
    pose: np.ndarray | None = None,
    sample_point_um: Sequence[float] | None = None,
    navigation_error_um: float | None = None,
    name: str = "navigation",
    overwrite: bool = False,
) -> tuple[Registration, dict[str, Any]]:
    """Register a sample's ex vivo MRI onto a clinical MRI from a navigation point or pose.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject (the patient).
    clinical : str
        Clinical MRI with its scanner affine (converted from NIfTI/DICOM).
    sample : str
        The sample's ex vivo MRI.
    position_ras_mm : (R, A, S), optional
        Navigated position of ``sample_point_um`` in scanner RAS (mm). Give this or ``pose``.
    pose : ndarray (4, 4), optional
        Sample coordinates (x, y, z mm) -> scanner RAS mm, rigid.
    sample_point_um : (x, y, z), optional
        With ``position_ras_mm``: the navigated point in the sample image (µm; default its
        centre).
    navigation_error_um : float, optional
        The navigation system's error, kept as the registration's error figure.
    name : str
        Registration name.
    overwrite : bool
        Replace a registration of that name.

    Returns
    -------
    (Registration, dict)
        The stored record and its report (``orientation``: ``pose`` or ``unknown``).

    Examples
    --------
    >>> from bridge_xr.testing.human import human_scene
    >>> h = human_scene()
    >>> rec, rep = place_sample(h.scene, clinical="clinical/T2w", sample="exvivo_mri/sample",
    ...                         pose=h.pose)
    >>> rec.model, rep["orientation"]
    ('affine', 'pose')
    """
    store = resolve_store(where)
    check_new_registration(read_subject(store), fixed=clinical, moving=sample, name=name,
                           overwrite=overwrite, where=describe_store(store))  # fmt: skip
    if (pose is None) == (position_ras_mm is None):
        raise InvalidInputError("give the navigated position (R,A,S mm) or a pose, exactly one")
    cimg, simg = read_image(store, clinical), read_image(store, sample)
    if "scanner_ras" not in cimg.attrs.get("transforms", {}):
        raise InvalidInputError(
            f"{clinical!r} has no scanner affine; convert the clinical MRI from NIfTI or DICOM"
        )
    if pose is not None:
        m = np.asarray(pose, dtype=np.float64)
        orientation = "pose"
    else:
        pos = np.asarray(position_ras_mm, dtype=np.float64)
        if pos.shape != (3,) or not np.isfinite(pos).all():
            raise InvalidInputError(f"a navigated position is R,A,S in mm; got {position_ras_mm}")
        if sample_point_um is None:
            ext = physical_extent(simg)
            f = um_factor(simg)
            sample_point_um = [(ext[d][0] + ext[d][1]) / 2 * f for d in "xyz"]
        m = np.eye(4)
        m[:3, 3] = pos - np.asarray(sample_point_um, dtype=np.float64) / 1000.0
        orientation = "unknown (navigated point only: translation, sample axes along R, A, S)"
    # fixed (clinical intrinsic µm) -> RAS µm -> sample intrinsic µm, exactly affine: fit it on
    # the corners of a cube (a consistent affine map is recovered to rounding)
    cube = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float) * 1e4
    ras_um = _intrinsic_to_ras_um(cimg, cube)
    inv = np.linalg.inv(m)
    sample_um = (ras_um / 1000.0 @ inv[:3, :3].T + inv[:3, 3]) * 1000.0
    model = fit("affine", cube, sample_um)
    res = float(np.abs(model.forward_points(cube) - sample_um).max())
    report: dict[str, Any] = {
        "model": "affine",
        "source": "neuronavigation",
        "orientation": orientation,
        "pose_sample_mm_to_ras_mm": m.tolist(),
        "n_landmarks": 0,
        "rmse_um": navigation_error_um,
        "loo_tre_rms_um": navigation_error_um,
        "navigation_error_um": navigation_error_um,
        "composition_residual_um": res,
    }
    rec = add_registration(
        store, model, fixed=clinical, moving=sample, name=name,
        landmarks=LandmarkSet(moving=sample, fixed=clinical, landmarks=()), report=report,
        overwrite=overwrite,
        provenance=Provenance.now("place sample (neuronavigation)", inputs=(clinical, sample),
                                  orientation="pose" if pose is not None else "unknown"),
    )  # fmt: skip
    return rec, dict(rec.report)


def _intrinsic_to_ras_um(img: Any, xyz_um: np.ndarray) -> np.ndarray:
    """The inverse of :func:`world_to_intrinsic`: intrinsic x, y, z µm -> scanner RAS µm."""
    from bridge_xr.model.units import conversion_factor

    t = img.attrs["transforms"]["scanner_ras"]
    to_unit = conversion_factor("micrometer", img.attrs["unit"])
    sar = t.transform_points(xyz_um[:, ::-1] * to_unit)  # (S, A, R) in the image unit
    ras = sar[:, ::-1] / to_unit
    back = world_to_intrinsic(ras, img)
    if not np.allclose(back, xyz_um, atol=1e-6):  # pragma: no cover - a broken affine
        raise InvalidInputError("the clinical MRI's scanner affine does not invert")
    return ras
