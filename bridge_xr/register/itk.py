"""ITK transform files (SimpleITK, ANTs, Slicer) from stored registrations.

Frame: each image's intrinsic physical space in **micrometres**, axes x, y, z (ITK order), identity
direction - the space of the landmark CSV. Direction: ITK's resampling convention (fixed -> moving),
which is how bridge_xr fits and stores registrations. Linear models become an ``AffineTransform``
(``.tfm``/``.txt``/``.mat``); a TPS becomes a ``DisplacementFieldTransform`` rasterised from the exact
TPS on the stored field grid (``.h5``/``.nii.gz``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.read import read_image
from bridge_xr.io.subject import read_subject
from bridge_xr.model.pointmaps import LinearModel
from bridge_xr.scene.chains import model_from_record


def export_itk(where: StoreLike, name: str, output: str | os.PathLike[str]) -> Path:
    """Write registration ``name`` as an ITK transform file; returns the path.

    Parameters
    ----------
    where : Scene, str, path or zarr store
        The subject.
    name : str
        A stored registration.
    output : path
        ``.tfm``/``.txt``/``.mat`` (linear) or ``.h5`` (any; a TPS as a displacement field).

    Returns
    -------
    Path

    Examples
    --------
    >>> import tempfile, pathlib, SimpleITK as sitk
    >>> from bridge_xr.testing import tiny_scene
    >>> out = export_itk(tiny_scene(registered=True), "micro_to_mri",
    ...                  pathlib.Path(tempfile.mkdtemp()) / "t.tfm")
    >>> sitk.ReadTransform(str(out)).GetDimension()
    3
    """
    store = resolve_store(where)
    regs = read_subject(store).registrations
    if name not in regs:
        raise InvalidInputError(f"no registration {name!r}; the store has {sorted(regs)}")
    rec = regs[name]
    model = model_from_record(rec)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(model, LinearModel):
        if not out.name.endswith((".tfm", ".txt", ".mat", ".h5")):
            raise InvalidInputError(
                f"`output` {str(out)!r}: use .tfm, .txt, .mat or .h5 for a linear transform"
            )
        tx = sitk.AffineTransform(3)
        tx.SetMatrix(model.matrix.ravel().tolist())
        tx.SetTranslation(model.translation.tolist())
        sitk.WriteTransform(tx, str(out))
        return out
    if not out.name.endswith((".h5", ".hdf5", ".nii.gz", ".nii", ".nrrd")):
        raise InvalidInputError(f"`output` {str(out)!r}: use .h5 for a TPS (displacement field)")
    assert rec.field_path is not None
    grid = read_image(store, rec.field_path)
    sp = [grid.attrs["spacing"][d] for d in "xyz"]
    org = [grid.attrs["origin"][d] for d in "xyz"]
    shape = [grid.sizes[d] for d in "zyx"]
    axes = [org[i] + np.arange(n) * sp[i] for i, n in zip((2, 1, 0), shape, strict=True)]
    gz, gy, gx = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)
    disp = (model.forward_points(pts) - pts).reshape(*shape, 3)
    field = sitk.GetImageFromArray(disp, isVector=True)
    field.SetSpacing(sp)
    field.SetOrigin(org)
    field = sitk.Cast(field, sitk.sitkVectorFloat64)
    if out.name.endswith((".nii.gz", ".nii", ".nrrd")):
        sitk.WriteImage(field, str(out))
    else:
        sitk.WriteTransform(sitk.DisplacementFieldTransform(field), str(out))
    return out
