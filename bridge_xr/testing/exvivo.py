"""An ex vivo phantom study made in code: sections with known per-slice warps, two MRIs.

The tissue is an analytic function of physical position (µm): Gaussian "nuclei" clusters and a
"tumour" region whose shape changes with depth. From it:

* ``exvivo_mri/T2w``: the resliced ex vivo MRI, ``n`` slices of ``thickness`` µm, 25 µm pixels;
* ``exvivo/slab03``: the sections (channels DAPI and tumour, 5 µm pixels), section ``k`` showing
  the tissue of MRI slice ``k`` through a known 2D map (fixed -> moving:
  ``p_moving = A_k p_fixed + t_k``, a few degrees of rotation, a shear and a shift; with
  ``nonlinear`` a smooth bend added);
* with ``invivo``: ``invivo_mri/T2w``, the in vivo MRI (50 µm voxels) whose tissue is the ex
  vivo tissue moved by a known smooth 3D deformation, and exact landmarks between the two MRIs.

Landmarks are exact (computed from the truth) unless ``noise_um`` is given.

Examples
--------
>>> scene, lms = slice_scene()
>>> scene["exvivo/slab03"].dims, len(lms)
(('c', 'z', 'y', 'x'), 18)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from zarr.storage import MemoryStore

from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.subject import add_image
from bridge_xr.model.image import make_image
from bridge_xr.model.metadata import Acquisition, ImageMetadata, Provenance
from bridge_xr.scene.core import Scene

__all__ = [
    "MRIPair",
    "SliceTruth",
    "exvivo_tissue",
    "invivo_landmarks",
    "invivo_tumour_fraction",
    "mri_pair",
    "slice_scene",
    "slice_truth",
]

FIELD_UM = 800.0  # in-plane field of view (µm)


@dataclass(frozen=True)
class SliceTruth:
    """The known maps of the phantom (µm, x, y)."""

    thickness_um: float
    matrices: np.ndarray  # (n, 2, 2) fixed -> moving per section
    translations: np.ndarray  # (n, 2)
    bend_um: float  # amplitude of the smooth in-plane bend (0: affine)

    def to_moving(self, k: int, xy: np.ndarray) -> np.ndarray:
        """Fixed (MRI) x, y of slice ``k`` -> section x, y."""
        p = np.asarray(xy, dtype=np.float64)
        out = p @ self.matrices[k].T + self.translations[k]
        if self.bend_um:
            out = out + self.bend_um * np.stack(
                [np.sin(p[:, 1] / 160.0), np.cos(p[:, 0] / 200.0) - 1.0], axis=1
            )
        return out

    def to_fixed(self, k: int, uv: np.ndarray) -> np.ndarray:
        """Section x, y -> fixed x, y (Newton for the bend)."""
        q = np.asarray(uv, dtype=np.float64)
        inv = np.linalg.inv(self.matrices[k])
        p = (q - self.translations[k]) @ inv.T
        for _ in range(50 if self.bend_um else 0):
            p = p - (self.to_moving(k, p) - q) @ inv.T
        return p

    def invivo_to_exvivo(self, xyz: np.ndarray) -> np.ndarray:
        """In vivo MRI x, y, z -> ex vivo MRI x, y, z (the known smooth 3D deformation)."""
        p = np.asarray(xyz, dtype=np.float64)
        return np.stack(
            [
                0.97 * p[:, 0] + 0.02 * p[:, 1] + 15.0 + 6.0 * np.sin(p[:, 1] / 150.0),
                -0.02 * p[:, 0] + 0.98 * p[:, 1] + 10.0,
                p[:, 2] + 4.0 * np.cos(p[:, 0] / 250.0),
            ],
            axis=1,
        )


def slice_truth(n: int = 3, *, thickness_um: float = 100.0, nonlinear: bool = False,
                seed: int = 0) -> SliceTruth:  # fmt: skip
    """The per-section maps the phantom uses.

    Examples
    --------
    >>> slice_truth(2).matrices.shape
    (2, 2, 2)
    """
    rng = np.random.default_rng(seed)
    mats, shifts = [], []
    for _ in range(n):
        a = np.deg2rad(rng.uniform(-6, 6))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        shear = np.array([[1.0, rng.uniform(-0.03, 0.03)], [0.0, rng.uniform(0.97, 1.03)]])
        mats.append(rot @ shear)
        shifts.append(rng.uniform(20, 60, size=2))
    return SliceTruth(thickness_um, np.array(mats), np.array(shifts), 8.0 if nonlinear else 0.0)


def exvivo_tissue(x: np.ndarray, y: np.ndarray, z: np.ndarray, channel: str) -> np.ndarray:
    """The phantom tissue at physical points (µm): ``DAPI`` (nuclei texture) or ``tumour`` (0/1).

    Examples
    --------
    >>> float(exvivo_tissue(np.array([400.0]), np.array([400.0]), np.array([50.0]), "tumour")[0])
    1.0
    """
    if channel == "tumour":
        r = 180.0 + 0.4 * (z - 150.0)
        return ((x - 400.0) ** 2 / 1.3 + (y - 380.0) ** 2 < r**2).astype(np.float64)
    out = 200.0 + 80.0 * np.sin(x / 23.0) * np.cos(y / 31.0) + 0.3 * z
    for cx, cy, s in ((200, 250, 40), (560, 300, 55), (380, 600, 35), (620, 620, 45)):
        out += 900.0 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s**2))
    return out


def _landmarks(
    truth: SliceTruth, n: int, noise_um: float, rng: np.random.Generator
) -> pd.DataFrame:
    rows = []
    pts = np.array([[150, 150], [650, 160], [170, 640], [630, 650], [400, 420], [300, 520.0]])
    if truth.bend_um:  # a bend needs landmarks all over the section (4 x 4)
        g = np.linspace(120.0, 680.0, 4)
        pts = np.array([[x, y] for y in g for x in g]) + rng.uniform(-20, 20, size=(16, 2))
    for k in range(n):
        mov = (
            truth.to_moving(k, pts) + rng.normal(0, noise_um, size=pts.shape)
            if noise_um
            else (truth.to_moving(k, pts))
        )
        z = (k + 0.5) * truth.thickness_um
        for i, (f, m) in enumerate(zip(pts, mov, strict=True)):
            rows.append({"name": f"s{k + 1}_L{i + 1}", "fixed_x": f[0], "fixed_y": f[1],
                         "fixed_z": z, "moving_x": m[0], "moving_y": m[1], "moving_z": z})  # fmt: skip
    return pd.DataFrame(rows)


def slice_scene(
    n: int = 3,
    *,
    thickness_um: float = 100.0,
    nonlinear: bool = False,
    noise_um: float = 0.0,
    invivo: bool = False,
    where: StoreLike | None = None,
    seed: int = 0,
) -> tuple[Scene, pd.DataFrame]:
    """A subject with the ex vivo MRI and the sections (and the in vivo MRI), plus landmarks.

    Parameters
    ----------
    n : int
        Number of sections (= MRI slices).
    thickness_um : float
        Section thickness = MRI slice thickness.
    nonlinear : bool
        Add a smooth in-plane bend to each section's map (a TPS recovers it from landmarks).
    noise_um : float
        Landmark localisation noise (SD, µm) on the moving side.
    invivo : bool
        Also ``invivo_mri/T2w`` (deformed by :meth:`SliceTruth.invivo_to_exvivo`).
    where : str, path or zarr store, optional
        Default: in memory.
    seed : int
        Seeds the maps and the noise.

    Returns
    -------
    (Scene, DataFrame)
        The subject and the section landmarks (canonical CSV columns).

    Examples
    --------
    >>> scene, lms = slice_scene(2, invivo=True)
    >>> sorted(scene.subject.images)
    ['exvivo/slab03', 'exvivo_mri/T2w', 'invivo_mri/d060/T2w']
    """
    truth = slice_truth(n, thickness_um=thickness_um, nonlinear=nonlinear, seed=seed)
    store = MemoryStore() if where is None else resolve_store(where)
    # ex vivo MRI: 25 µm pixels, one slice per section
    m_px = 25.0
    ny = nx = int(FIELD_UM / m_px)
    yy, xx = np.meshgrid((np.arange(ny) + 0.5) * m_px, (np.arange(nx) + 0.5) * m_px, indexing="ij")
    mri = np.stack([exvivo_tissue(xx, yy, np.full_like(xx, (j + 0.5) * thickness_um), "DAPI")
                    for j in range(n)]).astype(np.float32)  # fmt: skip
    img = make_image(mri, dims="zyx", spacing=(thickness_um, m_px, m_px),
                     origin=(thickness_um / 2, m_px / 2, m_px / 2), unit="um")  # fmt: skip
    meta = ImageMetadata(path="exvivo_mri/T2w", modality="mri", acquisition=Acquisition(
        sequence="T2w", field_strength_T=9.4), provenance=Provenance.now("ex vivo phantom"))  # fmt: skip
    add_image(store, img, meta, levels=1)
    # sections: 5 µm pixels, a margin for the shifts
    s_px = 5.0
    sn = int((FIELD_UM + 80) / s_px)
    v, u = np.meshgrid((np.arange(sn) + 0.5) * s_px, (np.arange(sn) + 0.5) * s_px, indexing="ij")
    uv = np.stack([u.ravel(), v.ravel()], axis=1)
    sec = np.zeros((2, n, sn, sn), dtype=np.float32)
    for k in range(n):
        xy = truth.to_fixed(k, uv)
        z = np.full(len(xy), (k + 0.5) * thickness_um)
        for c, ch in enumerate(("DAPI", "tumour")):
            sec[c, k] = exvivo_tissue(xy[:, 0], xy[:, 1], z, ch).reshape(sn, sn)
    img = make_image(sec, dims="czyx", spacing=(thickness_um, s_px, s_px),
                     origin=(thickness_um / 2, s_px / 2, s_px / 2), unit="um",
                     channel_names=["DAPI", "tumour"])  # fmt: skip
    meta = ImageMetadata(path="exvivo/slab03", modality="widefield",
                         channel_names=("DAPI", "tumour"),
                         acquisition=Acquisition(extra={"slice_thickness_um": thickness_um}),
                         provenance=Provenance.now("ex vivo phantom"))  # fmt: skip
    add_image(store, img, meta, levels=1)
    if invivo:
        _add_invivo(store, truth, n)
    rng = np.random.default_rng(seed + 1)
    return Scene(store), _landmarks(truth, n, noise_um, rng)


def _add_invivo(store: object, truth: SliceTruth, n: int) -> None:
    sp = 50.0
    nz = max(1, int(n * truth.thickness_um / sp))
    ny = nx = int(FIELD_UM / sp)
    zz, yy, xx = np.meshgrid(*[(np.arange(k) + 0.5) * sp for k in (nz, ny, nx)], indexing="ij")
    ex = truth.invivo_to_exvivo(np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1))
    vals = exvivo_tissue(ex[:, 0], ex[:, 1], ex[:, 2], "DAPI").reshape(zz.shape)
    img = make_image(vals.astype(np.float32), dims="zyx", spacing=(sp, sp, sp),
                     origin=(sp / 2,) * 3, unit="um")  # fmt: skip
    meta = ImageMetadata(path="invivo_mri/d060/T2w", modality="mri", session="d060",
                         acquisition=Acquisition(sequence="T2w"),
                         provenance=Provenance.now("in vivo phantom"))  # fmt: skip
    add_image(store, img, meta, levels=1)  # type: ignore[arg-type]


def invivo_landmarks(
    truth: SliceTruth, *, n_slices: int = 3, n: int = 40, seed: int = 2
) -> pd.DataFrame:
    """Exact landmarks between the in vivo MRI (moving) and the ex vivo MRI (fixed).

    Examples
    --------
    >>> len(invivo_landmarks(slice_truth(3)))
    40
    """
    rng = np.random.default_rng(seed)
    zmax = n_slices * truth.thickness_um
    inv = np.column_stack([rng.uniform(60, 740, n), rng.uniform(60, 740, n),
                           rng.uniform(20, zmax - 20, n)])  # fmt: skip
    ex = truth.invivo_to_exvivo(inv)
    frame: dict[str, object] = {"name": [f"V{i + 1}" for i in range(n)]}
    for side, pts in (("fixed", ex), ("moving", inv)):
        for a, axis in enumerate("xyz"):
            frame[f"{side}_{axis}"] = pts[:, a]
    return pd.DataFrame(frame)


def invivo_tumour_fraction(
    truth: SliceTruth, shape: tuple[int, ...], *, voxel_um: float = 50.0, sub: int = 10
) -> np.ndarray:
    """The sections' tumour fraction in every in vivo voxel, through the known deformation.

    Each in vivo voxel is sampled ``sub`` times per axis; a sample's ex vivo position picks its
    section (slab), whose image shows the tumour at the slab's centre depth.

    Examples
    --------
    >>> invivo_tumour_fraction(slice_truth(3), (6, 16, 16), sub=2).shape
    (6, 16, 16)
    """
    from bridge_xr.model.slices import slice_index

    axes = [(np.arange(m * sub) + 0.5) * voxel_um / sub for m in shape]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    q = truth.invivo_to_exvivo(np.column_stack([xx.ravel(), yy.ravel(), zz.ravel()]))
    t_um = truth.thickness_um
    zc = (slice_index(q[:, 2], t_um / 2, t_um) + 0.5) * t_um
    t = exvivo_tissue(q[:, 0], q[:, 1], zc, "tumour").reshape(zz.shape)
    return t.reshape(shape[0], sub, shape[1], sub, shape[2], sub).mean(axis=(1, 3, 5))


@dataclass(frozen=True)
class MRIPair:
    """Ex vivo (fixed) and in vivo (moving) MRI of one textured tissue, a known map between them."""

    scene: Scene
    rotation: np.ndarray  # moving -> fixed: S(q) = R q + t + bump(q), x, y, z µm
    translation: np.ndarray
    bump_um: float
    extent_um: float  # both images cover 0..extent_um on every axis

    def to_fixed(self, q: np.ndarray) -> np.ndarray:
        """In vivo (moving) x, y, z µm -> ex vivo (fixed)."""
        q = np.asarray(q, dtype=np.float64)
        bump = self.bump_um * np.stack(
            [np.sin(q[:, 1] / 300.0), np.cos(q[:, 2] / 350.0), np.sin(q[:, 0] / 400.0)], axis=1
        )
        return q @ self.rotation.T + self.translation + bump

    def to_moving(self, p: np.ndarray) -> np.ndarray:
        """Ex vivo (fixed) x, y, z µm -> in vivo (moving): the truth a registration recovers."""
        p = np.asarray(p, dtype=np.float64)
        inv = np.linalg.inv(self.rotation)
        q = (p - self.translation) @ inv.T
        for _ in range(100):
            q = q - (self.to_fixed(q) - p) @ inv.T
        return q

    def landmarks(self, n: int, seed: int) -> pd.DataFrame:
        """``n`` exact landmark pairs inside the images (canonical columns)."""
        rng = np.random.default_rng(seed)
        f = rng.uniform(0.15, 0.85, size=(n, 3)) * self.extent_um
        m = self.to_moving(f)
        frame: dict[str, object] = {"name": [f"P{i + 1}" for i in range(n)]}
        for side, pts in (("fixed", f), ("moving", m)):
            for a, axis in enumerate("xyz"):
                frame[f"{side}_{axis}"] = pts[:, a]
        return pd.DataFrame(frame)


def mri_pair(*, n: int = 40, bump_um: float = 40.0, seed: int = 0,
             where: StoreLike | None = None) -> MRIPair:  # fmt: skip
    """Two 50 µm MRIs (``exvivo_mri/T2w`` fixed, ``invivo_mri/d060/T2w`` moving) of one tissue.

    The tissue is a smooth random texture; the in vivo image shows it through a small rotation,
    a shift and a smooth bump of ``bump_um`` (:meth:`MRIPair.to_fixed`).

    Examples
    --------
    >>> pair = mri_pair(n=16)
    >>> pair.scene["invivo_mri/d060/T2w"].shape
    (16, 16, 16)
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    fine = 25.0
    tex = ndimage.gaussian_filter(rng.standard_normal((2 * n + 20,) * 3), 3.0)
    tex = (tex - tex.mean()) / tex.std()

    def tissue(xyz: np.ndarray) -> np.ndarray:
        idx = (xyz[:, ::-1] + 250.0) / fine  # z, y, x fine-grid index
        return ndimage.map_coordinates(tex, idx.T, order=3, mode="nearest")

    a = np.deg2rad(3.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    pair = MRIPair(Scene(MemoryStore()), rot, np.array([30.0, -20.0, 10.0]), bump_um, n * 50.0)
    store = MemoryStore() if where is None else resolve_store(where)
    sp = 50.0
    g = (np.arange(n) + 0.5) * sp
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    grid = np.column_stack([xx.ravel(), yy.ravel(), zz.ravel()])
    for path, pts in (("exvivo_mri/T2w", grid), ("invivo_mri/d060/T2w", pair.to_fixed(grid))):
        vals = (1000 + 200 * tissue(pts)).reshape(n, n, n).astype(np.float32)
        img = make_image(vals, dims="zyx", spacing=(sp,) * 3, origin=(sp / 2,) * 3, unit="um")
        add_image(store, img, ImageMetadata(path=path, modality="mri",
                  provenance=Provenance.now("MRI pair phantom")), levels=1)  # fmt: skip
    return MRIPair(Scene(store), rot, pair.translation, bump_um, n * 50.0)
