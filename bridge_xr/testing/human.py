"""A human tissue phantom: a resected sample navigated into a patient's clinical MRI.

* ``clinical/T2w``: 1 mm clinical MRI (NIfTI, an oblique scanner affine with flips, as scanners
  write), with ``masks/regions`` on its grid: region 1 ("core") and 2 ("infiltration") split at
  a clinical voxel face, both only around the sample;
* ``exvivo_mri/sample``: the sample's 9.4 T MRI (0.1 mm, 4 mm cube), placed in the patient by a
  known rigid ``pose`` (sample mm -> scanner RAS mm);
* ``exvivo/sample/nestin``: a binary Nestin channel (20 µm voxels) over the sample's centre,
  registered onto the sample MRI by exact landmarks; a voxel is positive with probability
  ``p_core`` where its tissue lies in a core clinical voxel, ``p_infiltration`` in an
  infiltration one (decided through the known geometry, independently of the registrations).

Examples
--------
>>> h = human_scene()
>>> sorted(h.scene.subject.images)
['clinical/T2w', 'exvivo/sample/nestin', 'exvivo_mri/sample', 'masks/regions']
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.convert import convert_mri
from bridge_xr.io.subject import add_image
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.scene.core import Scene

__all__ = ["HumanPhantom", "human_scene"]


def _rot(axis: int, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@dataclass(frozen=True)
class HumanPhantom:
    """The subject and the truth it was made from."""

    scene: Scene
    pose: np.ndarray  # sample x, y, z mm -> scanner RAS mm
    clinical_affine: np.ndarray  # clinical voxel i, j, k -> RAS mm (the NIfTI affine)
    split_i: int  # clinical voxels with i < split_i are "core"
    p_core: float
    p_infiltration: float
    navigated_point_ras_mm: np.ndarray  # where the sample's centre is
    sample_centre_um: np.ndarray  # x, y, z in the sample image


def human_scene(where: StoreLike | None = None, *, seed: int = 0) -> HumanPhantom:
    """Write the phantom (in a temporary folder, or at ``where``) and return it with its truth.

    Parameters
    ----------
    where : str or path, optional
        Subject store to write (default: a new temporary folder).
    seed : int
        Seeds the Nestin pattern.

    Returns
    -------
    HumanPhantom

    Examples
    --------
    >>> h = human_scene()
    >>> h.p_core, h.pose.shape
    (0.6, (4, 4))
    """
    # long by design: three images, their geometry and the truth that links them, in order
    tmp = Path(tempfile.mkdtemp(prefix="bridge_xr_human_"))
    store_path = tmp / "P001.ome.zarr" if where is None else where
    store = resolve_store(store_path)
    # clinical MRI: 1 mm voxels, 32^3, oblique with flipped axes
    n = 32
    aff = np.eye(4)
    aff[:3, :3] = _rot(2, 20.0) @ np.diag([-1.0, -1.0, 1.0])
    aff[:3, 3] = [40.0, 30.0, -10.0]
    vol = np.zeros((n, n, n), np.int16) + 100
    nib.save(nib.Nifti1Image(vol, aff), tmp / "clinical.nii.gz")
    convert_mri(tmp / "clinical.nii.gz", store, "clinical/T2w")
    # the sample: 4 mm cube at 0.1 mm; its pose places its centre at the clinical voxel (16,16,16)
    centre_ras = aff[:3, :3] @ np.array([16.0, 16.0, 16.0]) + aff[:3, 3]
    ns = 40
    sample_centre_mm = np.full(3, (ns - 1) * 0.1 / 2)  # the image centre (voxel centres 0..3.9)
    pose = np.eye(4)
    pose[:3, :3] = _rot(0, 25.0) @ _rot(1, -15.0)
    pose[:3, 3] = centre_ras - pose[:3, :3] @ sample_centre_mm
    nib.save(nib.Nifti1Image(np.full((ns, ns, ns), 50, np.int16), np.diag([0.1, 0.1, 0.1, 1.0])),
             tmp / "sample.nii.gz")  # fmt: skip
    convert_mri(tmp / "sample.nii.gz", store, "exvivo_mri/sample")
    for source in ("clinical.nii.gz", "sample.nii.gz"):  # converted: the store holds them now
        (tmp / source).unlink()
    if where is not None:
        tmp.rmdir()
    # regions on the clinical grid (NIfTI voxel i, j, k = array axes 0, 1, 2 there)
    split = 16
    lab = np.zeros((n, n, n), np.uint8)
    lab[12:split, 12:21, 12:21] = 1
    lab[split:21, 12:21, 12:21] = 2
    from bridge_xr.io.read import read_image

    clin = read_image(store, "clinical/T2w")
    # the store's z, y, x are the NIfTI's k, j, i
    labels = make_image(lab.transpose(2, 1, 0), dims="zyx",
                        spacing=tuple(clin.attrs["spacing"][d] for d in "zyx"),
                        origin=tuple(clin.attrs["origin"][d] for d in "zyx"),
                        unit=clin.attrs["unit"])  # fmt: skip
    add_image(store, labels, ImageMetadata(path="masks/regions", modality="labels", kind="labels",
              provenance=Provenance.now("human phantom")), levels=1)  # fmt: skip
    # Nestin at 20 µm over the sample's central 2.4 x 2.4 x 0.4 mm, in its own frame shifted by
    # (0.8, 0.8, 1.8) mm from the sample's
    sp = 20.0
    shape = (20, 120, 120)
    shift_um = np.array([800.0, 800.0, 1800.0])  # x, y, z of the microscopy origin in the sample
    zz, yy, xx = np.meshgrid(*[(np.arange(k) + 0.5) * sp for k in shape], indexing="ij")
    sample_um = np.column_stack([xx.ravel(), yy.ravel(), zz.ravel()]) + shift_um
    ras = (sample_um / 1000.0) @ pose[:3, :3].T + pose[:3, 3]
    ijk = (ras - aff[:3, 3]) @ np.linalg.inv(aff[:3, :3]).T + 0.5  # continuous, voxel faces at ints
    core = np.floor(ijk[:, 0]) < split
    rng = np.random.default_rng(seed)
    p_core, p_inf = 0.6, 0.15
    pos = rng.uniform(size=len(core)) < np.where(core, p_core, p_inf)
    nestin = pos.reshape(shape).astype(np.uint8) * 255
    img = make_image(nestin, dims="zyx", spacing=(sp, sp, sp), origin=(sp / 2,) * 3, unit="um")
    add_image(store, img, ImageMetadata(path="exvivo/sample/nestin", modality="widefield",
              provenance=Provenance.now("human phantom")), levels=1)  # fmt: skip
    from bridge_xr.register.registration import register

    f = np.array([[0, 0, 0], [2400, 0, 0], [0, 2400, 0], [0, 0, 400], [2400, 2400, 400.0]])
    frame: dict[str, object] = {"name": [f"N{i}" for i in range(len(f))]}
    for side, pts in (("fixed", f + shift_um), ("moving", f)):
        for a, axis in enumerate("xyz"):
            frame[f"{side}_{axis}"] = pts[:, a]
    register(store, fixed="exvivo_mri/sample", moving="exvivo/sample/nestin",
             landmarks=pd.DataFrame(frame), model="rigid", name="nestin_to_sample")  # fmt: skip
    return HumanPhantom(Scene(store), pose, aff, split, p_core, p_inf, centre_ras,
                        sample_centre_mm * 1000.0)  # fmt: skip
