"""The compiled sampling kernels against scipy/numpy doing the same thing the plain way."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import zarr
from scipy.ndimage import map_coordinates

from bridge_xr.model.pointmaps import ThinPlateSpline
from bridge_xr.resampling import _kernels
from bridge_xr.resampling.blocks import _tps_nodes, block_map
from bridge_xr.resampling.sampler import ChunkCache

RNG = np.random.default_rng(7)
SUB = RNG.uniform(0, 1000, size=(9, 11, 13)).astype(np.float32)
UPPER = np.array(SUB.shape, float) - 1.0


def _h() -> np.ndarray:
    """A rotation + anisotropic scale whose sample positions fall between voxels (no ties)."""
    a = 0.3
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return np.c_[rot @ np.diag([0.91, 0.83, 0.87]), [-0.613, 0.271, -0.397]]


def _positions(h: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    return np.einsum("ab,bzyx->azyx", h, np.stack([k, j, i, np.ones_like(k)]))


@pytest.mark.parametrize("order", [0, 1])
def test_affine_kernel_equals_map_coordinates_inside_and_fills_outside(order) -> None:
    h, shape = _h(), (10, 14, 16)
    pos = _positions(h, shape)
    out = np.empty(shape, np.float32)
    _kernels.sample_affine(SUB, h, out, _kernels.params(np.zeros(3), UPPER, order, None, -7.0))
    ref = map_coordinates(SUB, pos, order=order, mode="nearest")
    inside = np.all((pos >= 0) & (pos <= UPPER[:, None, None, None]), axis=0)
    assert inside.mean() > 0.3
    assert (~inside).any()
    np.testing.assert_allclose(out[inside], ref[inside], rtol=1e-5, atol=1e-3)
    assert np.all(out[~inside] == -7.0)


def test_integer_output_is_rounded_and_clipped_like_numpy() -> None:
    sub = (SUB * 80 - 10000).astype(np.int32)
    h, shape = _h(), (6, 8, 8)
    pos = _positions(h, shape)
    out = np.empty(shape, np.uint16)
    lims = (0.0, 65535.0)
    _kernels.sample_affine(sub, h, out, _kernels.params(np.zeros(3), UPPER, 1, lims, 0.0))
    ref = map_coordinates(sub.astype(float), pos, order=1, mode="nearest")
    inside = np.all((pos >= 0) & (pos <= UPPER[:, None, None, None]), axis=0)
    want = np.clip(np.rint(ref), *lims).astype(np.uint16)
    assert np.array_equal(out[inside], want[inside])
    assert (want[inside] == 0).any()
    assert (want[inside] > 0).any()


def test_nan_positions_get_the_fill() -> None:
    pts = np.array([[1.5, np.nan, 2.0], [2.5, 3.0, np.nan], [3.5, 4.0, 5.0]])
    out = np.empty(3)
    _kernels.sample_points(SUB, pts, out, _kernels.params(np.zeros(3), UPPER, 1, None, -1.0))
    assert out[1] == -1.0
    assert out[2] == -1.0
    np.testing.assert_allclose(out[0], map_coordinates(SUB, pts[:, :1], order=1)[0], rtol=1e-6)


def _tps(kernel: str) -> ThinPlateSpline:
    fixed = RNG.uniform(0, 200, size=(25, 3))
    moving = fixed + 6 * np.sin(fixed / 30.0) + [3.0, -2.0, 1.0]
    return ThinPlateSpline.from_estimate(fixed, moving, kernel=kernel)


@pytest.mark.parametrize("kernel", ["r", "r2logr"])
def test_compiled_tps_equals_the_models_own_evaluation(kernel) -> None:
    tps = _tps(kernel)
    pts = RNG.uniform(-20, 220, size=(3000, 3))  # xyz, some outside the landmarks' hull
    got = _kernels.tps_zyx(tps, pts[:, ::-1])[:, ::-1]
    np.testing.assert_allclose(got, tps.forward_points(pts), rtol=0, atol=1e-9)


def test_node_kernel_equals_sampling_the_densified_map() -> None:
    tps = _tps("r")
    axes = [10 + np.arange(n) * s for n, s in [(7, 4.0), (19, 3.0), (23, 2.5)]]
    bm = _tps_nodes(tps, axes, None)  # uncertified: interpolation between nodes only
    assert bm.nodes is not None
    assert bm.node_idx is not None
    # moving µm -> sub index: a moving image at origin (5, 5, 5) µm with 2 µm voxels
    sub = RNG.uniform(0, 1, size=(60, 80, 90))
    upper = np.array(sub.shape, float) - 1
    to_idx = lambda um: (um - 5.0) / 2.0  # noqa: E731
    cells = [_kernels.cells_of(n, i) for n, i in zip(bm.shape, bm.node_idx, strict=True)]
    out = np.empty(bm.shape)
    prm = _kernels.params(np.zeros(3), upper, 1, None, np.nan)
    _kernels.sample_nodes(sub, to_idx(bm.nodes), *(a for c in cells for a in c), out, prm)
    dense = to_idx(bm.densify())
    ref = map_coordinates(sub, dense, order=1, mode="nearest")
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    # and the densified map is the TPS itself at the nodes
    k, j, i = (idx[len(idx) // 2] for idx in bm.node_idx)
    at = np.array([[axes[2][i], axes[1][j], axes[0][k]]])
    np.testing.assert_allclose(bm.densify()[:, k, j, i][::-1], tps.forward_points(at)[0], atol=1e-9)


def test_certified_block_map_is_within_its_bound_of_the_exact_tps() -> None:
    tps = _tps("r")
    axes = [np.arange(0, 80, 2.0), np.arange(0, 120, 1.5), np.arange(40, 160, 1.5)]
    got = block_map([(tps, True)], axes, 0.05).densify()
    gz, gy, gx = np.meshgrid(*axes, indexing="ij")
    exact = tps.forward_points(np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1))
    dev = np.linalg.norm(got.reshape(3, -1)[::-1].T - exact, axis=1)
    assert dev.max() <= 0.05
    assert dev.max() > 0  # interpolated, not evaluated everywhere


@pytest.mark.parametrize("where", ["memory", "local", "local-sharded"])
def test_chunk_cache_reads_what_slicing_reads_and_stays_bounded(where, tmp_path) -> None:
    # on a local store the chunks are decoded by bridge_xr (edge chunks cut to the array)
    data = RNG.integers(0, 60000, size=(2, 20, 30, 40), dtype=np.uint16)
    store = zarr.storage.MemoryStore() if where == "memory" else tmp_path / "a.zarr"
    shards = {"shards": (2, 16, 16, 16)} if where == "local-sharded" else {}
    arr = zarr.create_array(store, shape=data.shape, chunks=(2, 8, 8, 8), dtype=data.dtype,
                            **shards)  # fmt: skip
    arr[:] = data
    chunk_bytes = 2 * 8 * 8 * 8 * 2
    cache = ChunkCache(arr, max_bytes=6 * chunk_bytes)
    assert (cache._decoder is None) == (where == "memory")
    for _ in range(30):
        lo = RNG.integers(0, [19, 29, 39])
        hi = lo + RNG.integers(1, [20, 30, 40]) // 2 + 1
        hi = np.minimum(hi, data.shape[1:])
        got = cache.read(lo, hi)
        assert np.array_equal(got, data[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
        assert cache._bytes <= 6 * chunk_bytes
    again = pickle.loads(pickle.dumps(cache))
    assert again._bytes == 0
    assert again.max_bytes == cache.max_bytes
    assert np.array_equal(again.read(np.array([0, 0, 0]), np.array([3, 3, 3])), data[:, :3, :3, :3])


def test_kernels_compile_noalias() -> None:
    # the row kernels' speed rests on it; a numba without the internals falls back silently
    from bridge_xr._jit import NOALIAS

    assert NOALIAS


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float32, np.float64])
def test_row_kernels_equal_the_scalar_sampler_voxel_for_voxel(dtype) -> None:
    # rows that cross the edge of ``sub`` (edge voxels redone, bounds-checked), NaN positions,
    # integer rounding and clipping: the affine and node kernels against ``sample_points``,
    # the scalar sampler, bit for bit
    rng = np.random.default_rng(3)
    sub = rng.uniform(0, 250, size=(12, 17, 21)).astype(dtype)
    clip = (0.0, 255.0) if np.dtype(dtype).kind == "u" else None
    prm = _kernels.params(np.full(3, -0.5), np.array(sub.shape) - 0.5, 1, clip, 3.0)
    h = _h().copy()
    h[:, :3] *= 1.3
    h[:, 3] = [-2.2, -3.1, -4.3]  # the block overhangs every face of ``sub``
    shape = (9, 15, 19)
    k, j, i = (np.arange(n, dtype=float) for n in shape)
    pos = np.stack([(h[c, 0] * k[:, None, None] + h[c, 1] * j[None, :, None] + h[c, 3])
                    + h[c, 2] * i for c in range(3)])  # the kernel's arithmetic  # fmt: skip
    out = np.empty(shape, dtype)
    _kernels.sample_affine(sub, h, out, prm)
    ref = np.empty(pos[0].size, dtype)
    _kernels.sample_points(sub, np.ascontiguousarray(pos.reshape(3, -1)), ref, prm)
    inside = np.all((pos >= 0) & (pos <= (np.array(sub.shape) - 2.0)[:, None, None, None]), 0)
    assert 0.2 < inside.mean() < 0.8
    assert np.array_equal(out.ravel(), ref)
    # nodes: 3 x 4 x 5 of them, one NaN (no inverse there): trilinear in between
    nodes = np.stack(np.meshgrid(*(np.linspace(-3, n + 2, m) for n, m in zip(sub.shape,
                     (3, 4, 5), strict=True)), indexing="ij"))  # fmt: skip
    nodes[:, 1, 2, 3] = np.nan
    nodes = np.ascontiguousarray(nodes + rng.uniform(-0.4, 0.4, size=nodes.shape))
    cells = [_kernels.cells_of(n, np.linspace(0, n - 1, m).round().astype(int))
             for n, m in zip(shape, (3, 4, 5), strict=True)]  # fmt: skip
    out = np.empty(shape, dtype)
    _kernels.sample_nodes(sub, nodes, *(a for c in cells for a in c), out, prm)
    # the node kernel's positions, the same arithmetic in numpy: bilinear (z, y), then x
    (cz, tz), (cy, ty), (cx, tx) = cells
    wa, wb = tz[:, None, None, None], ty[None, :, None, None]
    a, c = cz[:, None], cy[None, :]
    row = (1.0 - wa) * ((1.0 - wb) * nodes[:, a, c].transpose(1, 2, 0, 3)
                        + wb * nodes[:, a, c + 1].transpose(1, 2, 0, 3)) + wa * (
        (1.0 - wb) * nodes[:, a + 1, c].transpose(1, 2, 0, 3)
        + wb * nodes[:, a + 1, c + 1].transpose(1, 2, 0, 3))  # fmt: skip
    dense = (row[..., cx] + (row[..., cx + 1] - row[..., cx]) * tx).transpose(2, 0, 1, 3)
    ref = np.empty(dense[0].size, dtype)
    _kernels.sample_points(sub, np.ascontiguousarray(dense.reshape(3, -1)), ref, prm)
    assert np.isnan(dense).any()
    assert np.array_equal(out.ravel(), ref, equal_nan=np.dtype(dtype).kind == "f")


def test_box_voxels_lists_every_voxel_of_every_box() -> None:
    rng = np.random.default_rng(5)
    lo = rng.integers(0, 20, size=(7, 3))
    hi = lo + rng.integers(0, 6, size=(7, 3))
    hi[0] = lo[0]  # a box of one voxel
    got = _kernels.box_voxels(lo, hi)
    want = np.concatenate(
        [np.mgrid[a[0] : b[0] + 1, a[1] : b[1] + 1, a[2] : b[2] + 1].reshape(3, -1)
         for a, b in zip(lo, hi, strict=True)], axis=1)  # fmt: skip
    assert got.shape == want.shape
    assert np.array_equal(got, want)
