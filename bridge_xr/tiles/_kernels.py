"""Compiled blending kernel of tile fusion: sample one tile and add it, weighted, in one pass.

A tile is placed by a translation, so along each axis output voxel ``k`` of the tile's run
reads tile indices ``s + k`` and ``s + k + 1`` with one constant weight ``t`` (the fractional
part of the translation; nearest sampling and whole-voxel positions have ``t = 0`` and read one
index). The kernel reads the crop in its own dtype, interpolates (up to trilinearly), multiplies
by the separable blend weight ``wz * wy * wx`` and adds to the float32 accumulators: one pass,
contiguous reads, no temporaries, no GIL (the shard tasks run it in parallel). numpy would make
three interpolated copies of the crop and two more for the weighting.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np


@nb.njit(nogil=True, cache=True, boundscheck=False, fastmath=True)
def accumulate(
    acc: Any,
    wsum: Any,
    crop: Any,
    off: Any,
    count: Any,
    start: Any,
    frac: Any,
    wz: Any,
    wy: Any,
    wx: Any,
    add_weight: bool,
) -> None:
    """``acc[off + k] += w(k) * tile(start + k + frac)`` over the run ``count`` (z, y, x).

    The interpolation weights are the four (eight with a z fraction) products of ``frac``; for
    whole voxels they are 1 and 0s, so a tile's value passes unchanged.
    """
    oz, oy, ox = off[0], off[1], off[2]
    sz, sy, sx = start[0], start[1], start[2]
    tz, ty, tx = frac[0], frac[1], frac[2]
    dz = 1 if tz > 0.0 else 0
    dy = 1 if ty > 0.0 else 0
    dx = 1 if tx > 0.0 else 0
    w00 = np.float32((1.0 - ty) * (1.0 - tx))
    w01 = np.float32((1.0 - ty) * tx)
    w10 = np.float32(ty * (1.0 - tx))
    w11 = np.float32(ty * tx)
    n = count[2]
    for a in range(count[0]):
        za = sz + a
        for b in range(count[1]):
            r0 = crop[za, sy + b, sx : sx + n + dx]
            r1 = crop[za, sy + b + dy, sx : sx + n + dx]
            wab = np.float32(wz[a] * wy[b])
            ra = acc[oz + a, oy + b, ox : ox + n]
            rw = wsum[oz + a, oy + b, ox : ox + n]
            if dz:
                q0 = crop[za + 1, sy + b, sx : sx + n + dx]
                q1 = crop[za + 1, sy + b + dy, sx : sx + n + dx]
                fz0 = np.float32(1.0 - tz)
                fz1 = np.float32(tz)
                for c in range(n):
                    v0 = w00 * r0[c] + w01 * r0[c + dx] + w10 * r1[c] + w11 * r1[c + dx]
                    v1 = w00 * q0[c] + w01 * q0[c + dx] + w10 * q1[c] + w11 * q1[c + dx]
                    w = wab * wx[c]
                    ra[c] += w * (fz0 * v0 + fz1 * v1)
                    if add_weight:
                        rw[c] += w
            else:
                for c in range(n):
                    v = w00 * r0[c] + w01 * r0[c + dx] + w10 * r1[c] + w11 * r1[c + dx]
                    w = wab * wx[c]
                    ra[c] += w * v
                    if add_weight:
                        rw[c] += w


@nb.njit(nogil=True, cache=True, boundscheck=False, fastmath=True)
def finish(acc: Any, wsum: Any, out: Any, lo: float, hi: float, is_int: bool) -> None:
    """``out = acc / wsum`` (0 where no tile), rounded half to even and clipped for integers."""
    for a in range(acc.shape[0]):
        for b in range(acc.shape[1]):
            for c in range(acc.shape[2]):
                w = wsum[a, b, c]
                v = acc[a, b, c] / w if w > 0 else np.float32(0.0)
                if is_int:
                    v = min(max(round(v), lo), hi)
                out[a, b, c] = v
