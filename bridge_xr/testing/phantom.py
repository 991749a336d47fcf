"""A synthetic subject with known ground truth, used by ``bridge demo`` and the tests.

What is made (all seeded, all in physical units):

* a **vessel tree**: a root vessel entering from the cortical surface that branches
  recursively (Murray's law, ``r^3 = r1^3 + r2^3``) from ~150 µm down to ~5 µm diameter, stored as
  capsule segments ``(a, b, radius)`` in the two-photon (2P) frame;
* a **glioma density field**: a smooth blob of tumour-cell density in [0, 1];
* a **2P volume** (default 1.2 µm in-plane, 3 µm z) with a vessel channel (bright lumen,
  depth attenuation, noise) and a tumour channel (density plus noise), uint16;
* **MRI volumes** (T2w, T2*w, default 25 µm isotropic, in millimetres with a scanner affine) where
  every voxel's signal follows its exact partial volume of vessel (hypointense) and its mean glioma
  density (hyperintense), plus Gaussian noise. The partial volumes are computed by supersampling
  each MRI voxel through the ground-truth transform and are returned as truth;
* the **ground-truth transform** ``g``: MRI intrinsic µm -> 2P µm, a rotation, scaling and
  translation plus a smooth sinusoidal warp (the resampling direction, fixed -> moving);
* **landmarks** at vessel bifurcations inside the 2P field of view, with the MRI position found by
  inverting ``g`` (Newton), and per-rater Gaussian noise on the MRI side (``rater_sigma_um``).

Examples
--------
>>> ph = make_phantom(PhantomConfig.tiny())
>>> ph.twophoton.dims, ph.mri["T2w"].dims
(('c', 'z', 'y', 'x'), ('z', 'y', 'x'))
>>> bool(ph.vessel_fraction.max() > 0.5)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from bridge_xr.model.image import make_image

Array = NDArray[np.float64]


@dataclass(frozen=True)
class PhantomConfig:
    """Sizes, resolutions and effect sizes of the phantom."""

    seed: int = 0
    twop_fov_um: tuple[float, float, float] = (150.0, 420.0, 420.0)  # z, y, x
    twop_spacing_um: tuple[float, float, float] = (3.0, 1.2, 1.2)
    mri_spacing_um: float = 25.0
    mri_margin_um: float = 100.0
    root_diameter_um: float = 150.0
    min_diameter_um: float = 5.0
    capillary_spacing_um: float = 40.0
    max_depth: int = 7
    rotation_deg: tuple[float, float, float] = (2.0, -3.0, 8.0)
    scale: tuple[float, float, float] = (1.0, 1.02, 0.98)
    warp_amplitude_um: float = 8.0
    warp_wavelength_um: float = 600.0
    glioma_sigma_um: float = 90.0
    noise_sd: float = 0.02
    #: amplitude of a smooth multiplicative MRI intensity bias (coil sensitivity), 0 = none
    bias_field: float = 0.0
    supersample: int = 5
    n_raters: int = 2
    rater_sigma_um: float = 20.0
    mri_origin_mm: tuple[float, float, float] = (-1.0, 2.0, -0.5)  # S, A, R of voxel 0

    @classmethod
    def small(cls, seed: int = 0) -> PhantomConfig:
        """Large enough for per-voxel statistics (a few hundred covered MRI voxels), seconds."""
        return cls(
            seed=seed,
            twop_fov_um=(90.0, 300.0, 300.0),
            twop_spacing_um=(3.0, 2.0, 2.0),
            mri_spacing_um=25.0,
            mri_margin_um=50.0,
            max_depth=6,
            supersample=3,
        )

    @classmethod
    def learning(cls, seed: int = 0) -> PhantomConfig:
        """For the nnU-Net path: a deep, coarse 2P field (cheap) and an MRI with a coil bias."""
        return cls(
            seed=seed,
            twop_fov_um=(200.0, 800.0, 800.0),
            twop_spacing_um=(4.0, 4.0, 4.0),
            mri_spacing_um=25.0,
            mri_margin_um=50.0,
            max_depth=6,
            supersample=3,
            bias_field=0.3,
            noise_sd=0.05,
        )

    @classmethod
    def tiny(cls, seed: int = 0) -> PhantomConfig:
        """A fast configuration for tests (well under a second)."""
        return cls(
            seed=seed,
            twop_fov_um=(60.0, 240.0, 240.0),
            twop_spacing_um=(4.0, 2.0, 2.0),
            mri_spacing_um=30.0,
            mri_margin_um=60.0,
            max_depth=5,
            supersample=3,
        )


@dataclass(frozen=True)
class GroundTruthTransform:
    """``g(p) = M (p - c_mri) + c_2p + w(p)``: MRI intrinsic µm (z, y, x) -> 2P µm."""

    matrix: Array
    c_mri: Array
    c_2p: Array
    amplitude: float
    wavelength: float

    def _warp(self, p: Array) -> Array:
        k = 2 * np.pi / self.wavelength
        q = p - self.c_mri
        return self.amplitude * np.stack(
            [np.sin(k * q[:, 1]), np.sin(k * q[:, 2]), np.sin(k * q[:, 0])], axis=1
        )

    def _jacobian(self, p: Array) -> Array:
        k = 2 * np.pi / self.wavelength
        q = p - self.c_mri
        jac = np.repeat(self.matrix[None], len(p), axis=0)
        jac[:, 0, 1] += self.amplitude * k * np.cos(k * q[:, 1])
        jac[:, 1, 2] += self.amplitude * k * np.cos(k * q[:, 2])
        jac[:, 2, 0] += self.amplitude * k * np.cos(k * q[:, 0])
        return jac

    def __call__(self, p: Array) -> Array:
        """Map MRI points (N, 3) to 2P points."""
        p = np.asarray(p, dtype=np.float64)
        return (p - self.c_mri) @ self.matrix.T + self.c_2p + self._warp(p)

    def inverse(self, q: Array, *, tol: float = 1e-9, max_iter: int = 50) -> Array:
        """Map 2P points (N, 3) to MRI points by Newton iteration with the analytic Jacobian."""
        q = np.asarray(q, dtype=np.float64).reshape(-1, 3)
        if len(q) == 0:
            return q.copy()
        p = (q - self.c_2p) @ np.linalg.inv(self.matrix).T + self.c_mri
        for _ in range(max_iter):
            r = self(p) - q
            if np.max(np.abs(r)) < tol:
                break
            p = p - np.linalg.solve(self._jacobian(p), r[..., None])[..., 0]
        return p


@dataclass(frozen=True)
class Phantom:
    """Everything the phantom makes, with its ground truth."""

    config: PhantomConfig
    segments: Array  # (S, 7): a(zyx), b(zyx), radius (2P µm)
    bifurcations: Array  # (B, 3) in 2P µm (z, y, x)
    twophoton: xr.DataArray  # (c, z, y, x), channels vessel, tumour; µm
    mri: dict[str, xr.DataArray]  # name -> (z, y, x) in mm
    mri_scanner_affine: Array  # 4x4 intrinsic(zyx mm) -> RAS (S, A, R) mm
    vessel_fraction: Array  # on the MRI grid
    glioma_fraction: Array  # on the MRI grid
    truth: GroundTruthTransform
    landmarks: list[pd.DataFrame] = field(default_factory=list)


def _rotation(deg: tuple[float, float, float]) -> Array:
    a, b, c = np.deg2rad(deg)
    rz = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def vessel_tree(cfg: PhantomConfig, rng: np.random.Generator) -> tuple[Array, Array]:
    """Capsule segments and bifurcation points of a random branching tree (2P µm, z, y, x)."""
    fov = np.asarray(cfg.twop_fov_um)
    segs: list[list[float]] = []
    bifs: list[Array] = []
    start = np.array([0.1 * fov[0], fov[1] * 0.05, fov[2] * 0.9])
    stack: list[tuple[Array, Array, float, int]] = [
        (start, np.array([0.08, 0.7, -0.7]), cfg.root_diameter_um / 2, 0)
    ]
    while stack:
        a, d, r, depth = stack.pop()
        d = d / np.linalg.norm(d)
        length = float(np.clip(0.6 * r + 0.1 * fov[1], 12.0, 0.25 * fov[1]))
        b = a + d * length
        segs.append([*a, *b, r])
        if depth >= 1:  # capillaries sprouting off: diameters down to min_diameter_um
            for _ in range(1):
                cd = rng.normal(size=3)
                cd[0] = abs(cd[0])
                cd /= np.linalg.norm(cd)
                start = a + rng.uniform(0.2, 0.8) * (b - a)
                cr = rng.uniform(1.0, 1.6) * cfg.min_diameter_um / 2
                segs.append([*start, *(start + cd * (r + 0.06 * fov[1])), cr])
        if depth >= cfg.max_depth or r < cfg.min_diameter_um:
            continue
        bifs.append(b)
        # asymmetric split (Murray's law): the trunk keeps most of the flow, side branches thin
        share = rng.uniform(0.03, 0.35)
        r1 = r * (1 - share) ** (1 / 3)
        r2 = r * share ** (1 / 3)
        r1, r2 = max(r1, cfg.min_diameter_um / 2), max(r2, cfg.min_diameter_um / 2)
        perp = np.cross(d, rng.normal(size=3))
        perp /= np.linalg.norm(perp)
        for sign, rr, angle in (
            (1.0, r1, rng.uniform(0.1, 0.35)),
            (-1.0, r2, rng.uniform(0.7, 1.2)),
        ):
            nd = np.cos(angle) * d + sign * np.sin(angle) * perp
            nd[0] = abs(nd[0]) * 0.3 + (0.05 if sign > 0 else 0.6)  # side branches dive
            stack.append((b, nd, rr, depth + 1))
    # a capillary bed filling the field of view (about one capillary per capillary_spacing_um^3)
    n_cap = int(np.prod(fov) / cfg.capillary_spacing_um**3)
    starts = rng.uniform(0, 1, size=(n_cap, 3)) * fov
    dirs = rng.normal(size=(n_cap, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    ends = starts + dirs * rng.uniform(20.0, 60.0, size=(n_cap, 1))
    radii = rng.uniform(1.0, 1.6, size=(n_cap, 1)) * cfg.min_diameter_um / 2
    segs.extend(np.hstack([starts, ends, radii]).tolist())
    return np.asarray(segs), np.asarray(bifs)


def inside_vessels(points: Array, segments: Array) -> NDArray[np.bool_]:
    """Whether each point (N, 3) lies inside any capsule segment."""
    out = np.zeros(len(points), dtype=bool)
    for a0, a1, a2, b0, b1, b2, r in segments:
        a, b = np.array([a0, a1, a2]), np.array([b0, b1, b2])
        lo, hi = np.minimum(a, b) - r, np.maximum(a, b) + r
        sel = np.flatnonzero(np.all((points >= lo) & (points <= hi), axis=1) & ~out)
        if sel.size == 0:
            continue
        p = points[sel]
        d = b - a
        t = np.clip(((p - a) @ d) / max(float(d @ d), 1e-12), 0.0, 1.0)
        dist2 = np.sum((p - a - t[:, None] * d) ** 2, axis=1)
        out[sel[dist2 <= r * r]] = True
    return out


def inside_vessels_grid(q: Array, segments: Array, locate: Any) -> NDArray[np.bool_]:
    """Vessel indicator on a grid of points ``q`` (shape (*grid, 3)).

    ``locate(lo, hi)`` returns the index box (tuple of slices) of the grid points whose image can
    fall in the box ``[lo, hi]``; only those are tested against each segment.
    """
    out = np.zeros(q.shape[:-1], dtype=bool)
    for a0, a1, a2, b0, b1, b2, r in segments:
        a, b = np.array([a0, a1, a2]), np.array([b0, b1, b2])
        box = locate(np.minimum(a, b) - r, np.maximum(a, b) + r)
        if box is None:
            continue
        p = q[box]
        d = b - a
        t = np.clip(((p - a) @ d) / max(float(d @ d), 1e-12), 0.0, 1.0)
        dist2 = np.sum((p - a - t[..., None] * d) ** 2, axis=-1)
        out[box] |= dist2 <= r * r
    return out


def _box_locator(
    shape: tuple[int, ...], spacing: Array, origin: Array, pre: Any, margin: float
) -> Any:
    n = np.asarray(shape)

    def locate(lo: Array, hi: Array) -> tuple[slice, ...] | None:
        corners = np.array(
            [
                [lo[0] if i & 1 else hi[0], lo[1] if i & 2 else hi[1], lo[2] if i & 4 else hi[2]]
                for i in range(8)
            ]
        )
        pc = pre(corners)
        i0 = np.floor((pc.min(axis=0) - margin - origin) / spacing).astype(int)
        i1 = np.ceil((pc.max(axis=0) + margin - origin) / spacing).astype(int) + 1
        i0, i1 = np.clip(i0, 0, n), np.clip(i1, 0, n)
        if np.any(i1 <= i0):
            return None
        return tuple(slice(int(x), int(y)) for x, y in zip(i0, i1, strict=True))

    return locate


def glioma_density(points: Array, centre: Array, sigma: float) -> Array:
    """Tumour-cell density in [0, 1]: a smooth, slightly anisotropic blob."""
    q = (points - centre) / np.array([sigma * 0.8, sigma, sigma * 1.2])
    return np.clip(1.3 * np.exp(-0.5 * np.sum(q * q, axis=1)) - 0.05, 0.0, 1.0)


def _grid_points(shape: tuple[int, ...], spacing: Array, origin: Array) -> Array:
    axes = [origin[i] + np.arange(n) * spacing[i] for i, n in enumerate(shape)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    return np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)


def _twophoton(
    cfg: PhantomConfig, segs: Array, centre: Array, rng: np.random.Generator
) -> xr.DataArray:
    sp = np.asarray(cfg.twop_spacing_um)
    shape = tuple(int(round(f / s)) for f, s in zip(cfg.twop_fov_um, sp, strict=True))
    pts = _grid_points(shape, sp, np.zeros(3))
    locate = _box_locator(shape, sp, np.zeros(3), lambda c: c, 0.0)
    vessel = inside_vessels_grid(pts.reshape(*shape, 3), segs, locate).astype(np.float64)
    density = glioma_density(pts, centre, cfg.glioma_sigma_um).reshape(shape)
    depth = np.exp(-np.arange(shape[0]) * sp[0] / 400.0)[:, None, None]
    v = (100 + 2400 * vessel * depth) * rng.normal(1.0, 0.08, size=shape)
    t = (80 + 1500 * density * (0.6 + 0.4 * rng.random(shape))) * depth
    data = np.stack([v, t]).clip(0, 65535).astype(np.uint16)
    return make_image(
        data,
        dims=("c", "z", "y", "x"),
        spacing=tuple(float(v) for v in sp),
        unit="um",
        channel_names=("vessel", "tumour"),
    )


def make_phantom(cfg: PhantomConfig | None = None) -> Phantom:
    """Build a phantom subject (see module docstring)."""
    cfg = cfg or PhantomConfig()
    rng = np.random.default_rng(cfg.seed)
    segs, bifs = vessel_tree(cfg, rng)
    fov = np.asarray(cfg.twop_fov_um)
    glioma_centre = fov * np.array([0.55, 0.35, 0.65])
    twop = _twophoton(cfg, segs, glioma_centre, rng)
    # MRI grid: covers the 2P field of view plus a margin, at mri_spacing_um
    msp = cfg.mri_spacing_um
    extent = fov.max() + 2 * cfg.mri_margin_um
    mshape = tuple(int(np.ceil(e / msp)) for e in (fov[0] + 2 * cfg.mri_margin_um, extent, extent))
    c_mri = (np.asarray(mshape) - 1) * msp / 2
    truth = GroundTruthTransform(
        matrix=_rotation(cfg.rotation_deg) @ np.diag(cfg.scale),
        c_mri=c_mri,
        c_2p=fov / 2,
        amplitude=cfg.warp_amplitude_um,
        wavelength=cfg.warp_wavelength_um,
    )
    k = cfg.supersample
    fine_shape = tuple(n * k for n in mshape)
    fine_sp = np.full(3, msp / k)
    fine_origin = np.full(3, -msp / 2 + msp / (2 * k))
    pts = _grid_points(fine_shape, fine_sp, fine_origin)
    q = truth(pts)
    margin = 2 * cfg.warp_amplitude_um + msp
    locate = _box_locator(fine_shape, fine_sp, fine_origin, truth.inverse, margin)
    vfine = inside_vessels_grid(q.reshape(*fine_shape, 3), segs, locate).astype(np.float64)
    gfine = glioma_density(q, glioma_centre, cfg.glioma_sigma_um).reshape(fine_shape)

    def block_mean(a: Array) -> Array:
        return a.reshape(mshape[0], k, mshape[1], k, mshape[2], k).mean(axis=(1, 3, 5))

    vf, gf = block_mean(vfine), block_mean(gfine)
    u = [np.linspace(-1.0, 1.0, n) for n in mshape]
    bias = 1.0 + cfg.bias_field * (u[2][None, None, :] + 0.5 * u[1][None, :, None])
    mri = {}
    for name, (vessel_sig, glioma_gain) in {"T2w": (0.3, 0.6), "T2star": (0.1, 0.3)}.items():
        sig = (1 - vf) * (1 + glioma_gain * gf) + vf * vessel_sig
        sig = 1000 * (sig * bias + rng.normal(0, cfg.noise_sd, size=mshape))
        mri[name] = make_image(
            sig.astype(np.float32), dims=("z", "y", "x"), spacing=(msp / 1000,) * 3, unit="mm"
        )
    scanner = np.eye(4)
    scanner[:3, :3] = np.diag([1.0, -1.0, 1.0])  # A runs against y, as often on rodent scanners
    scanner[:3, 3] = cfg.mri_origin_mm
    landmarks = _landmarks(cfg, bifs, truth, rng)
    return Phantom(cfg, segs, bifs, twop, mri, scanner, vf, gf, truth, landmarks)


def _landmarks(
    cfg: PhantomConfig, bifs: Array, truth: GroundTruthTransform, rng: np.random.Generator
) -> list[pd.DataFrame]:
    fov = np.asarray(cfg.twop_fov_um)
    ok = np.all((bifs >= 0) & (bifs <= fov), axis=1)
    moving = bifs[ok]
    fixed = truth.inverse(moving)
    out = []
    for _rater in range(cfg.n_raters):
        fx = fixed + rng.normal(0, cfg.rater_sigma_um, size=fixed.shape)
        mv = moving + rng.normal(0, cfg.rater_sigma_um / 10, size=moving.shape)
        out.append(
            pd.DataFrame(
                {
                    "name": [f"bif{i:03d}" for i in range(len(moving))],
                    "moving_x": mv[:, 2],
                    "moving_y": mv[:, 1],
                    "moving_z": mv[:, 0],
                    "fixed_x": fx[:, 2],
                    "fixed_y": fx[:, 1],
                    "fixed_z": fx[:, 0],
                    "active": True,
                }
            )
        )
    return out


def phantom_summary(ph: Phantom) -> dict[str, Any]:
    """Numbers worth printing about a phantom."""
    return {
        "segments": len(ph.segments),
        "diameter_range_um": (
            float(2 * ph.segments[:, 6].min()),
            float(2 * ph.segments[:, 6].max()),
        ),
        "twophoton_shape": tuple(int(v) for v in ph.twophoton.shape),
        "mri_shape": tuple(int(v) for v in ph.mri["T2w"].shape),
        "landmarks": len(ph.landmarks[0]) if ph.landmarks else 0,
    }
