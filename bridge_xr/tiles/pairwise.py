"""Pairwise registration of overlapping tiles: windowed phase correlation on the overlap.

For tiles ``i`` and ``j`` the stage says where their overlap is; both crops are read, flat-field
corrected when a flat field is known, mean-subtracted and Hann-windowed (the window removes the
crops' shared border, which would otherwise give a false peak at zero shift). The integer peak of
the normalised cross-power spectrum is searched **only within the stage error bound**; the crops
are then aligned at that integer shift and the sub-voxel rest in y and x comes from
:func:`skimage.registration.phase_cross_correlation` (upsampled DFT) on their z projections
(z steps of 2P stacks are several µm: z is registered to whole planes). The quality is the
normalised cross-correlation (NCC) of the aligned crops' (z-projected) fine detail (each minus its Gaussian
blur, so that shading and vignetting do not correlate): near 1 for a true match, near 0 for a
tile without content or a wrong layout.

Sign convention: ``shift`` = (true offset of ``j`` from ``i``) - (stage offset), in voxels
(z, y, x); ``crop_j[k] == crop_i[k + shift]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Least useful overlap (voxels) along z for a 3-D phase correlation; thinner stacks are
#: registered in y/x only.
MIN_Z_FOR_3D = 8
#: The quality (NCC) is measured on detail finer than this (voxels, y/x): smooth shading,
#: vignetting and background gradients correlate at any shift and must not count as a match.
HIGH_PASS_SIGMA = 4.0


@dataclass(frozen=True)
class PairResult:
    """The measured correction of one link."""

    shift_px: tuple[float, ...]
    quality: float
    reason: str = ""  # why the link cannot be used ('' when it can)


def _window(shape: tuple[int, ...]) -> np.ndarray:
    w = np.ones(shape)
    for ax, n in enumerate(shape):
        if n < 4:
            continue
        v = np.hanning(n + 2)[1:-1]
        w = w * v.reshape([-1 if a == ax else 1 for a in range(len(shape))])
    return w


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def _high_pass(a: np.ndarray) -> np.ndarray:
    """``a`` minus its Gaussian blur (σ 4 voxels in y/x): shading and vignetting do not count."""
    from scipy import ndimage

    sigma = (0.0,) * (a.ndim - 2) + (HIGH_PASS_SIGMA, HIGH_PASS_SIGMA)
    return a - ndimage.gaussian_filter(a, sigma, mode="nearest")


def _aligned(a: np.ndarray, b: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The parts of ``a`` and ``b`` where ``b[k] == a[k + shift]`` (integer shift)."""
    sa, sb = [], []
    for s, n in zip(shift.astype(int), a.shape, strict=True):
        k0, k1 = max(0, -s), min(n, n - s)
        sa.append(slice(k0 + s, k1 + s))
        sb.append(slice(k0, k1))
    return a[tuple(sa)], b[tuple(sb)]


def pair_shift(a: np.ndarray, b: np.ndarray, *, bound_px: Any, upsample: int = 20) -> PairResult:
    """The correction ``shift`` with ``b[k] == a[k + shift]``, searched within ``bound_px``.

    Parameters
    ----------
    a, b : ndarray
        The overlap of tile ``i`` and of tile ``j`` as the stage places them (same shape).
    bound_px : float or sequence of float
        Largest correction per axis (the stage error), voxels; never more than a third of the
        overlap (beyond that too little of it is shared to trust a peak).
    upsample : int
        Sub-voxel precision 1/``upsample``.

    Returns
    -------
    PairResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> v = rng.random((40, 60))
    >>> r = pair_shift(v[2:32, 5:45], v[0:30, 0:40], bound_px=8)
    >>> [round(s, 2) for s in r.shift_px], r.quality > 0.9
    ([-2.0, -5.0], True)
    """
    from skimage.registration import phase_cross_correlation

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    bound = np.broadcast_to(np.asarray(bound_px, float), (a.ndim,)).copy()
    bound = np.minimum(bound, np.asarray(a.shape) // 3)  # a larger shift leaves too little overlap
    if a.ndim == 3 and a.shape[0] < MIN_Z_FOR_3D:
        bound[0] = 0
    if min(a.shape[-2:]) < 8:
        return PairResult((0.0,) * a.ndim, 0.0, "overlap thinner than 8 voxels")
    if a.std() == 0 or b.std() == 0:
        return PairResult((0.0,) * a.ndim, 0.0, "no content (a constant overlap)")
    from scipy import fft

    w = _window(a.shape).astype(np.float32)
    fa = fft.rfftn(((a - a.mean()) * w).astype(np.float32))
    fb = fft.rfftn(((b - b.mean()) * w).astype(np.float32))
    cross = fa * np.conj(fb)
    cross /= np.maximum(np.abs(cross), 1e-12)
    r = fft.irfftn(cross, s=a.shape, axes=tuple(range(a.ndim)))
    for ax, n in enumerate(a.shape):  # keep only shifts within the bound
        k = np.arange(n)
        k = np.where(k > n // 2, k - n, k)
        keep = np.abs(k) <= bound[ax]
        r = np.where(keep.reshape([-1 if q == ax else 1 for q in range(a.ndim)]), r, -np.inf)
    peak = np.array(np.unravel_index(int(np.argmax(r)), r.shape))
    shape = np.array(a.shape)
    peak = np.where(peak > shape // 2, peak - shape, peak)
    ia, ib = _aligned(a, b, peak)
    if min(ia.shape[-2:]) < 8:
        return PairResult(tuple(map(float, peak)), 0.0, "aligned overlap too small")
    if ia.ndim == 3:  # z is settled by the integer peak; y, x sub-voxel on the z projection
        pa, pb = ia.mean(axis=0), ib.mean(axis=0)
    else:
        pa, pb = ia, ib
    quality = _ncc(_high_pass(pa), _high_pass(pb))
    sub = np.zeros(a.ndim)
    sub[-2:] = phase_cross_correlation(pa, pb, upsample_factor=upsample, normalization=None)[0]
    sub = np.where(np.abs(sub) <= 1.0, sub, 0.0)  # the integer peak is already right
    return PairResult(tuple(float(v) for v in peak + sub), float(quality))
