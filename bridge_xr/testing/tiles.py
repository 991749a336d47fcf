"""Synthetic tile scans with known truth: a volume, cut into overlapping tiles at known offsets.

The stage reports the nominal grid; the true tile origins differ from it by a known integer
jitter (the stage error), so stitching must recover the jitter. Options add what real scans do:
noise, vignetting (one multiplicative field for every tile), zig-zag (serpentine) acquisition
order, a stage that reports x flipped, and one tile with no content. ``rotation_deg`` and
``scale`` give every tile its own small rotation (about its centre, in y/x) and magnification,
which no translation can fit (``bridge stitch --model affine``); ``true_affine`` then holds each
tile's map from its voxels to the volume's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage


@dataclass
class SyntheticScan:
    """A tile scan and its truth (all positions (z, y, x), voxels of ``spacing_um``)."""

    volume: np.ndarray  # the source (z, y, x) uint16, before vignetting and noise
    tiles: list[np.ndarray]  # (z, y, x) uint16 each, in acquisition order
    true_origin_px: np.ndarray  # (n, 3) first voxel of each tile in the volume
    stage_um: np.ndarray  # (n, 3) what the stage reports (x flipped when asked)
    spacing_um: tuple[float, float, float]
    vignette: np.ndarray  # (y, x) multiplicative field applied to every tile
    empty: int | None = None  # index of the tile with no content
    grid: tuple[int, int] = (2, 2)
    order: list[tuple[int, int]] = field(default_factory=list)  # (row, col) of each tile
    true_affine: np.ndarray | None = None  # (n, 3, 4): tile voxel (z, y, x) -> volume voxel

    def true_points(self, k: int, points_px: np.ndarray) -> np.ndarray:
        """Volume voxel coordinates of tile ``k``'s voxel coordinates ``points_px`` (m, 3)."""
        p = np.asarray(points_px, float)
        if self.true_affine is None:
            return p + self.true_origin_px[k]
        m = self.true_affine[k]
        return p @ m[:, :3].T + m[:, 3]

    def write_tiffs(self, folder: Path, *, ome_positions: bool = False) -> list[Path]:
        """One ImageJ/OME-TIFF per tile, and ``positions.csv`` (file,x_um,y_um,z_um)."""
        import tifffile

        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        rows = ["file,x_um,y_um,z_um"]
        dz, dy, dx = self.spacing_um
        for k, tile in enumerate(self.tiles):
            p = folder / f"tile_{k:03d}.ome.tif"
            z, y, x = self.stage_um[k]
            meta: dict[str, object] = {
                "axes": "ZYX",
                "PhysicalSizeX": dx,
                "PhysicalSizeY": dy,
                "PhysicalSizeZ": dz,
            }
            if ome_positions:
                meta["Plane"] = {
                    "PositionX": [float(x)] * tile.shape[0],
                    "PositionY": [float(y)] * tile.shape[0],
                    "PositionZ": [float(z)] * tile.shape[0],
                    "PositionXUnit": ["µm"] * tile.shape[0],
                    "PositionYUnit": ["µm"] * tile.shape[0],
                    "PositionZUnit": ["µm"] * tile.shape[0],
                }
            tifffile.imwrite(p, tile, ome=True, metadata=meta)
            rows.append(f"{p.name},{float(x)!r},{float(y)!r},{float(z)!r}")
            paths.append(p)
        (folder / "positions.csv").write_text("\n".join(rows) + "\n")
        return paths

    def write_czi(self, path: Path) -> Path:
        """One CZI with one mosaic subblock per (tile, z); stage positions as subblock starts."""
        from bridge_xr.testing.formats import write_czi

        dz, dy, dx = self.spacing_um
        px = np.round(self.stage_um[:, 1:] / np.array([dy, dx])).astype(int)
        px -= px.min(axis=0)
        data = np.stack(self.tiles)[:, None]
        return write_czi(
            path,
            data,
            pixel_size_um=(dx, dy, dz),
            mosaic=[(int(a), int(b)) for a, b in px],
        )


def synthetic_scan(
    *,
    grid: tuple[int, int] = (2, 3),
    tile_shape: tuple[int, int, int] = (8, 96, 128),
    overlap: float = 0.2,
    spacing_um: tuple[float, float, float] = (5.0, 1.2, 1.2),
    jitter_px: int = 3,
    noise: float = 20.0,
    vignetting: float = 0.3,
    zigzag: bool = True,
    flip_x: bool = False,
    empty_tile: int | None = None,
    subpixel: bool = False,
    rotation_deg: float = 0.0,
    scale: float = 0.0,
    seed: int = 0,
) -> SyntheticScan:
    """A ``grid`` = (rows, cols) tile scan of a vessel-like random volume; see the module doc."""
    rng = np.random.default_rng(seed)
    nz, ty, tx = tile_shape
    sy, sx = round(ty * (1 - overlap)), round(tx * (1 - overlap))
    rows, cols = grid
    order: list[tuple[int, int]] = []
    for r in range(rows):
        cs = range(cols) if not zigzag or r % 2 == 0 else range(cols - 1, -1, -1)
        order.extend((r, c) for c in cs)
    n = len(order)
    nominal = np.array([(0.0, r * sy, c * sx) for r, c in order], dtype=np.float64)
    jitter = rng.integers(-jitter_px, jitter_px + 1, size=(n, 3)).astype(float)
    jitter[:, 0] = 0
    if subpixel:  # true offsets off the voxel grid: tiles are sampled by linear interpolation
        jitter[:, 1:] += rng.uniform(-0.5, 0.5, size=(n, 2))
    if empty_tile is not None:
        jitter[empty_tile] = 0
    true = nominal + jitter
    true[:, 1:] += jitter_px + 1  # keep every tile inside the volume
    shape = (nz, (rows - 1) * sy + ty + 2 * jitter_px + 3, (cols - 1) * sx + tx + 2 * jitter_px + 3)
    base = ndimage.gaussian_filter(rng.standard_normal(shape), (1.0, 2.0, 2.0))
    vessels = np.clip(base / base.std() - 0.6, 0, None)
    vol = 300.0 + 2500.0 * vessels
    if empty_tile is not None:  # a region without content: background only, around that tile
        z0, y0, x0 = true[empty_tile].astype(int)
        vol[:, y0 : y0 + ty + 1, x0 : x0 + tx + 1] = 300.0
    volume = np.clip(np.rint(vol), 0, 65535).astype(np.uint16)
    yy, xx = np.meshgrid(np.linspace(-1, 1, ty), np.linspace(-1, 1, tx), indexing="ij")
    vig = (1.0 - vignetting * (yy**2 + xx**2) / 2).astype(np.float64)
    tiles = []
    affines = []
    for z0, y0, x0 in true:
        ang = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg)) if rotation_deg else 0.0
        mag = 1.0 + (rng.uniform(-scale, scale) if scale else 0.0)
        lin = mag * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        centre = np.array([(ty - 1) / 2, (tx - 1) / 2])
        m = np.zeros((3, 4))
        m[0, 0], m[0, 3] = 1.0, z0
        m[1:, 1:3] = lin
        m[1:, 3] = np.array([y0, x0]) + centre - lin @ centre  # rotate about the tile centre
        affines.append(m)
        if ang or scale:
            grid_idx = np.indices((nz, ty, tx)).reshape(3, -1).T.astype(float)
            src = grid_idx @ m[:, :3].T + m[:, 3]
            region = ndimage.map_coordinates(vol, src.T, order=3, mode="nearest")
            region = region.reshape(nz, ty, tx)
        else:
            iz, iy, ix = int(z0), int(np.floor(y0)), int(np.floor(x0))
            region = volume[iz : iz + nz, iy : iy + ty + 1, ix : ix + tx + 1].astype(float)
            frac = (0.0, y0 - iy, x0 - ix)
            if any(frac):
                region = ndimage.shift(region, tuple(-f for f in frac), order=1, mode="nearest")
            region = region[:, :ty, :tx]
        t = region * vig
        t += rng.normal(0, noise, t.shape) if noise else 0
        tiles.append(np.clip(np.rint(t), 0, 65535).astype(np.uint16))
    if rotation_deg or scale:
        true = np.array([m[:, 3] for m in affines])
    stage = nominal * np.asarray(spacing_um)
    if flip_x:
        stage[:, 2] = -stage[:, 2]
    return SyntheticScan(
        volume=volume,
        tiles=tiles,
        true_origin_px=true,
        stage_um=stage,
        spacing_um=spacing_um,
        vignette=vig,
        empty=empty_tile,
        grid=grid,
        order=order,
        true_affine=np.array(affines) if (rotation_deg or scale) else None,
    )
