"""Local intensity refinement moves noisy landmarks onto the true correspondence."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from zarr.storage import MemoryStore

from bridge_xr.io.subject import add_image
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import ImageMetadata, Provenance
from bridge_xr.register.refine import refine_landmarks


def test_refinement_recovers_a_known_shift() -> None:
    rng = np.random.default_rng(0)
    tex = ndimage.gaussian_filter(rng.normal(size=(28, 72, 72)), 2.0).astype(np.float32)
    shift_zyx = np.array([1.5, -2.25, 3.0])  # voxels; spacing 4 µm -> (6, -9, 12) µm
    moving = ndimage.shift(tex, shift_zyx, order=3, mode="nearest").astype(np.float32)
    store = MemoryStore()
    for path, data in (("mri/a", tex), ("twop/b", moving)):
        img = make_image(data * 1000 + 5000, dims="zyx", spacing=(4.0, 4.0, 4.0), unit="um")
        add_image(
            store, img, ImageMetadata(path=path, modality="other", provenance=Provenance.now("t"))
        )
    f = rng.uniform([80, 80, 30], [200, 200, 80], size=(8, 3))  # xyz µm, away from the borders
    truth = f + shift_zyx[::-1] * 4.0
    noisy = truth + rng.normal(0, 4.0, size=truth.shape)
    lm = pd.DataFrame(
        {
            "name": [f"L{i}" for i in range(8)],
            "fixed_x": f[:, 0],
            "fixed_y": f[:, 1],
            "fixed_z": f[:, 2],
            "moving_x": noisy[:, 0],
            "moving_y": noisy[:, 1],
            "moving_z": noisy[:, 2],
        }
    )
    refined, moves = refine_landmarks(
        store, fixed="mri/a", moving="twop/b", landmarks=lm, radius_um=40.0, model="rigid"
    )
    before = np.linalg.norm(noisy - truth, axis=1)
    after = np.linalg.norm(refined[["moving_x", "moving_y", "moving_z"]].to_numpy() - truth, axis=1)
    assert moves["accepted"].sum() >= 6
    assert np.median(after) < 0.3 * np.median(before)


def _warp_phantom() -> tuple[MemoryStore, np.ndarray, pd.DataFrame]:
    """A texture and its non-affine warp (sinusoidal in-plane shifts, period 120 µm, 10 µm)."""
    rng = np.random.default_rng(1)
    sp = 4.0
    tex = ndimage.gaussian_filter(rng.normal(size=(28, 72, 72)), 2.0).astype(np.float32)

    def u(p: np.ndarray) -> np.ndarray:  # zyx µm -> displacement zyx µm (fixed -> moving)
        z, y, x = p
        return np.stack(
            [0 * z + 2.0, 10 * np.sin(2 * np.pi * x / 120.0), 10 * np.sin(2 * np.pi * y / 120.0)]
        )

    grid = np.indices(tex.shape).astype(float) * sp
    f = grid.copy()
    for _ in range(30):  # moving(x) = tex(f) with f + u(f) = x
        f = grid - u(f)
    moving = ndimage.map_coordinates(tex, f / sp, order=3, mode="nearest").astype(np.float32)
    store = MemoryStore()
    for path, data in (("mri/a", tex), ("twop/b", moving)):
        img = make_image(data * 1000 + 5000, dims="zyx", spacing=(sp,) * 3, unit="um")
        add_image(
            store, img, ImageMetadata(path=path, modality="other", provenance=Provenance.now("t"))
        )
    fx = rng.uniform([80, 80, 40], [200, 200, 70], size=(6, 3))
    truth = fx + u(fx[:, ::-1].T).T[:, ::-1]
    noisy = truth + rng.normal(0, 4.0, size=truth.shape)
    lm = pd.DataFrame(
        {
            "name": [f"L{i}" for i in range(len(fx))],
            **{f"fixed_{a}": fx[:, i] for i, a in enumerate("xyz")},
            **{f"moving_{a}": noisy[:, i] for i, a in enumerate("xyz")},
        }
    )
    return store, truth, lm


def test_bspline_refinement_follows_a_local_warp_an_affine_cannot() -> None:
    store, truth, lm = _warp_phantom()
    before = np.linalg.norm(lm[["moving_x", "moving_y", "moving_z"]].to_numpy() - truth, axis=1)
    err = {}
    for model in ("affine", "bspline"):
        refined, moves = refine_landmarks(
            store,
            fixed="mri/a",
            moving="twop/b",
            landmarks=lm,
            radius_um=40.0,
            model=model,
            iterations=30,
            mesh=2,
        )
        assert moves["accepted"].all()
        moved = refined[["moving_x", "moving_y", "moving_z"]].to_numpy()
        err[model] = np.linalg.norm(moved - truth, axis=1)
    assert np.median(err["bspline"]) < 0.3 * np.median(before)
    assert np.median(err["bspline"]) < 0.5 * np.median(err["affine"])
