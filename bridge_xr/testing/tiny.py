"""A tiny in-memory scene for examples and quick tests: two images, optionally registered.

``mri``: 4 x 8 x 8 voxels of 10 x 10 x 10 µm, a bright cube in the middle. ``micro``: the same
field of view at 5 µm, shifted by +5 µm in x (its intrinsic x = the MRI's x + 5 µm).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from zarr.storage import MemoryStore

from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.subject import add_image
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.scene.core import Scene

__all__ = ["tiny_landmarks", "tiny_scene"]

#: x shift (µm) from the MRI's intrinsic space to the microscopy's
SHIFT_X_UM = 5.0


def tiny_landmarks() -> pd.DataFrame:
    """Five exact landmark pairs of the tiny scene (``micro`` = ``mri`` + 5 µm in x).

    Examples
    --------
    >>> list(tiny_landmarks().columns)[:4]
    ['name', 'fixed_x', 'fixed_y', 'fixed_z']
    """
    fixed = np.array(
        [[10, 10, 5], [70, 10, 5], [10, 70, 5], [10, 10, 35], [60, 60, 30.0]], dtype=np.float64
    )
    moving = fixed + [SHIFT_X_UM, 0.0, 0.0]
    frame: dict[str, object] = {"name": [f"L{i + 1}" for i in range(len(fixed))]}
    for side, pts in (("fixed", fixed), ("moving", moving)):
        for k, axis in enumerate("xyz"):
            frame[f"{side}_{axis}"] = pts[:, k]
    return pd.DataFrame(frame)


def tiny_scene(*, registered: bool = False, where: StoreLike | None = None) -> Scene:
    """A new :class:`Scene` (in memory, or at ``where``) with images ``mri`` and ``micro``.

    Parameters
    ----------
    registered : bool
        Also a rigid registration ``micro_to_mri`` (fixed ``mri``) from :func:`tiny_landmarks`.
    where : str, path or zarr store, optional
        Write the scene there (default: a new in-memory store).

    Examples
    --------
    >>> scene = tiny_scene()
    >>> scene["micro"].shape
    (8, 16, 16)
    """
    store = MemoryStore() if where is None else resolve_store(where)
    mri = np.zeros((4, 8, 8), dtype=np.uint16)
    mri[1:3, 2:6, 2:6] = 1000
    micro = np.zeros((8, 16, 16), dtype=np.uint16)
    micro[2:6, 4:12, 3:11] = 200  # the same cube, seen 5 µm (one voxel) further along x
    for path, data, sp, mod in (("mri", mri, 10.0, "mri"), ("micro", micro, 5.0, "twophoton")):
        img = make_image(data, dims="zyx", spacing=(sp, sp, sp), origin=(sp / 2,) * 3, unit="um")
        meta = ImageMetadata(
            path=path,
            modality=mod,
            provenance=Provenance.now("tiny scene"),
        )
        add_image(store, img, meta, levels=1)
    scene = Scene(store)
    if registered:
        from bridge_xr.register.registration import register

        register(scene, fixed="mri", moving="micro", landmarks=tiny_landmarks(), model="rigid",
                 name="micro_to_mri")  # fmt: skip
    return scene
