"""Landmark models against ground truth and an independent TPS (scipy's RBFInterpolator)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import RBFInterpolator
from scipy.spatial.transform import Rotation

from bridge_xr.model.pointmaps import EstimationError, ThinPlateSpline, fit, folding
from bridge_xr.register.accuracy import (
    fitzpatrick_tre_um,
    inter_rater_rmse_um,
    loo_tre_um,
    registration_report,
    rmse_um,
)

rng = np.random.default_rng(21)
FIXED = rng.uniform([0, 0, 0], [4000, 3000, 1000], size=(30, 3))


def _apply(a, t, p):
    return p @ a.T + t


@pytest.mark.parametrize("kind", ["rigid", "similarity", "affine"])
def test_linear_models_recover_known_transforms_exactly(kind) -> None:
    rot = Rotation.from_euler("xyz", [10, -25, 40], degrees=True).as_matrix()
    a = {
        "rigid": rot,
        "similarity": 1.07 * rot,
        "affine": rot @ np.array([[1.1, 0.05, 0], [0, 0.95, 0.02], [0.01, 0, 1.2]]),
    }[kind]
    t = np.array([150.0, -80.0, 33.0])
    moving = _apply(a, t, FIXED)
    m = fit(kind, FIXED, moving)
    np.testing.assert_allclose(m.matrix, a, atol=1e-10)
    np.testing.assert_allclose(m.translation, t, atol=1e-8)
    assert rmse_um(m, FIXED, moving) < 1e-9


def test_tps_interpolates_and_matches_scipy_at_held_out_points() -> None:
    moving = FIXED + 40 * np.sin(FIXED / 700.0)
    for kernel, scipy_kernel in (("r", "linear"), ("r2logr", "thin_plate_spline")):
        tps = fit("tps", FIXED, moving, kernel=kernel)
        np.testing.assert_allclose(tps.forward_points(FIXED), moving, atol=1e-7)
        oracle = RBFInterpolator(FIXED, moving, kernel=scipy_kernel, degree=1, smoothing=0.0)
        held_out = rng.uniform([0, 0, 0], [4000, 3000, 1000], size=(500, 3))
        np.testing.assert_allclose(tps.forward_points(held_out), oracle(held_out), atol=1e-6)


def test_tps_smoothing_matches_scipy_smoothing() -> None:
    moving = FIXED + rng.normal(0, 10, size=FIXED.shape)
    tps = fit("tps", FIXED, moving, kernel="r2logr", smoothing=5.0)
    oracle = RBFInterpolator(FIXED, moving, kernel="thin_plate_spline", degree=1, smoothing=5.0)
    pts = rng.uniform(0, 1000, size=(100, 3))
    np.testing.assert_allclose(tps.forward_points(pts), oracle(pts), atol=1e-6)
    assert rmse_um(tps, FIXED, moving) > 0  # no longer interpolating


def test_point_mapping_round_trips_to_a_micro_micrometre() -> None:
    moving = FIXED + 60 * np.cos(FIXED / 900.0)
    tps = fit("tps", FIXED, moving)
    pts = rng.uniform([0, 0, 0], [4000, 3000, 1000], size=(300, 3))
    np.testing.assert_allclose(tps.inverse_points(tps.forward_points(pts)), pts, atol=1e-6)
    lin = fit("affine", FIXED, moving)
    np.testing.assert_allclose(lin.forward_points(lin.inverse_points(pts)), pts, atol=1e-6)


def test_analytic_jacobian_matches_finite_differences() -> None:
    tps = fit("tps", FIXED, FIXED + 50 * np.sin(FIXED / 500.0))
    p = rng.uniform(100, 900, size=(5, 3))
    h = 1e-4
    num = np.stack(
        [
            (tps.forward_points(p + h * e) - tps.forward_points(p - h * e)) / (2 * h)
            for e in np.eye(3)
        ],
        axis=2,
    )
    np.testing.assert_allclose(tps.jacobian(p), num, atol=1e-6)


def test_description_round_trip_is_exact() -> None:
    tps = fit("tps", FIXED, FIXED * 1.01 + 3)
    again = ThinPlateSpline.from_description(tps.describe())
    pts = rng.uniform(0, 1000, size=(10, 3))
    np.testing.assert_array_equal(again.forward_points(pts), tps.forward_points(pts))


@pytest.mark.parametrize("kernel", ["r", "r2logr"])
def test_compiled_inverse_on_a_node_grid_equals_root_finding(kernel) -> None:
    # nodes in grid order (each starts from its neighbour's solution), against scipy's root
    # finder point by point from the affine inverse; residuals below the tolerance
    from scipy.optimize import root

    moving = FIXED + 40 * np.sin(FIXED[:, [1, 2, 0]] / 700.0)
    tps = fit("tps", FIXED, moving, kernel=kernel)
    axes = [np.linspace(200, 3800, 13), np.linspace(100, 2900, 11), np.linspace(50, 950, 5)]
    y = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    x = tps.inverse_points(y)
    np.testing.assert_allclose(tps.forward_points(x), y, atol=1e-8)
    lin = fit("affine", FIXED, moving)
    for k in rng.choice(len(y), 25, replace=False):
        sol = root(lambda p, k=k: tps.forward_points(p[None])[0] - y[k],
                   lin.inverse_points(y[k][None])[0], jac=lambda p: tps.jacobian(p[None])[0],
                   tol=1e-12)  # fmt: skip
        assert sol.success
        np.testing.assert_allclose(x[k], sol.x, atol=1e-7)


@pytest.mark.parametrize("kernel", ["r", "r2logr"])
def test_compiled_residual_on_a_landmark_equals_the_vectorised_map(kernel) -> None:
    # exactly on a landmark the distance to its centre is 0: that centre's terms (and, for r,
    # the gradient's 1/r) must vanish, not turn into NaN; elsewhere too the compiled residual
    # and Jacobian equal the numpy forward map and Jacobian; and the inverse lands on them
    from bridge_xr.model import _tps

    moving = FIXED + 40 * np.sin(FIXED[:, [1, 2, 0]] / 700.0)
    tps = fit("tps", FIXED, moving, kernel=kernel)
    rows = np.ascontiguousarray(tps.centres.T), np.ascontiguousarray(tps.weights.T)
    points = np.r_[tps.centres[:3], tps.centres[:3] + 1.5]
    jac, tmp = np.empty((3, 3)), np.empty((4, len(tps.centres)))
    for p in points:
        res = _tps._residual(p.copy(), np.zeros((1, 3)), 0, *rows, tps.affine, kernel != "r",
                             jac, tmp)  # fmt: skip
        np.testing.assert_allclose(res, tps.forward_points(p[None])[0], rtol=1e-12)
        np.testing.assert_allclose(jac, tps.jacobian(p[None])[0], rtol=1e-10, atol=1e-12)
    x = tps.inverse_points(tps.forward_points(FIXED))
    np.testing.assert_allclose(x, FIXED, atol=1e-7)


def test_compiled_inverse_in_threads_equals_one_thread(monkeypatch) -> None:
    # runs of points split over threads: each run starts afresh, so the split changes nothing
    from bridge_xr.model import _tps

    moving = FIXED + 40 * np.sin(FIXED[:, [1, 2, 0]] / 700.0)
    tps = fit("tps", FIXED, moving)
    axes = [np.linspace(200, 3800, 40), np.linspace(100, 2900, 40), np.linspace(50, 950, 25)]
    y = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    assert len(y) >= 8 * _tps._RUN  # enough runs for two threads
    monkeypatch.setattr(_tps.os, "cpu_count", lambda: 2)
    threaded = tps.inverse_points(y)
    monkeypatch.setattr(_tps.os, "cpu_count", lambda: 1)
    np.testing.assert_array_equal(tps.inverse_points(y), threaded)
    np.testing.assert_allclose(tps.forward_points(threaded), y, atol=1e-8)


def test_inverse_that_does_not_converge_refuses_or_marks_nan() -> None:
    # no Newton step allowed: the affine part's inverse alone misses every point by > 1e-4 µm
    moving = FIXED + 40 * np.sin(FIXED[:, [1, 2, 0]] / 700.0)
    tps = fit("tps", FIXED, moving)
    y = rng.uniform(0, 1000, size=(20, 3))
    assert np.isnan(tps.inverse_points(y, max_iter=0, strict=False)).all()
    with pytest.raises(EstimationError, match="did not converge for 20 of 20 points"):
        tps.inverse_points(y, max_iter=0)
    assert np.isfinite(tps.inverse_points(y, strict=False)).all()  # with steps: every one found


def test_folding_is_detected() -> None:
    fixed = np.array(
        [[0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100], [100, 100, 100], [50, 50, 50.0]]
    )
    moving = fixed.copy()
    moving[5] = [130, 130, 130]  # the centre landmark dragged beyond a corner: the warp folds
    tps = fit("tps", fixed, moving)
    g = np.stack(np.meshgrid(*[np.linspace(0, 100, 11)] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert folding(tps, g)["fraction_folded"] > 0
    assert folding(fit("affine", fixed, fixed * 2), g)["fraction_folded"] == 0


@pytest.mark.parametrize(
    ("fixed", "match"),
    [
        (np.zeros((2, 3)), "at least"),
        (np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4.0]]), "collinear"),
        (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [2, 3, 0.0]]), "coplanar"),
        (np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0], [1, 1, 5], [2, 3, 0.0]]), "duplicate"),
        (np.array([[0, 0, np.nan], [1, 0, 0], [0, 1, 0], [1, 1, 5], [2, 3, 0.0]]), "NaN"),
    ],
)
def test_degenerate_landmarks_are_refused(fixed, match) -> None:
    with pytest.raises(EstimationError, match=match):
        fit("tps", fixed, fixed + 1.0)


def test_loo_tre_grows_with_landmark_noise() -> None:
    truth = FIXED * 1.02 + 10
    rms = []
    for sigma in (0.0, 5.0, 20.0):
        noisy = truth + np.random.default_rng(1).normal(0, sigma, size=truth.shape)
        rms.append(np.sqrt(np.mean(loo_tre_um("affine", FIXED, noisy) ** 2)))
    assert rms[0] < 1e-6 < rms[1] < rms[2]
    assert rms[2] / rms[1] == pytest.approx(4.0, rel=0.05)  # TRE scales linearly with FLE


def test_fitzpatrick_prediction_matches_monte_carlo() -> None:
    fixed = FIXED[:10]
    target = np.array([[2500.0, 1800.0, 500.0]])
    sigma = 20.0  # per axis on the moving landmarks -> FLE rms = sigma * sqrt(3)
    mc = []
    r = np.random.default_rng(5)
    for _ in range(2000):
        m = fit("rigid", fixed, fixed + r.normal(0, sigma, size=fixed.shape))
        mc.append(np.sum((m.forward_points(target) - target) ** 2))
    predicted = fitzpatrick_tre_um(fixed, sigma * np.sqrt(3), target)[0]
    assert np.sqrt(np.mean(mc)) == pytest.approx(predicted, rel=0.08)


def test_inter_rater_and_report() -> None:
    truth = FIXED + 30 * np.sin(FIXED / 800.0)
    a = fit("tps", FIXED, truth)
    b = fit("tps", FIXED + np.random.default_rng(2).normal(0, 15, FIXED.shape), truth)
    grid = rng.uniform([0, 0, 0], [4000, 3000, 1000], size=(400, 3))
    assert inter_rater_rmse_um(a, a, grid)["rmse_um"] == 0.0
    assert inter_rater_rmse_um(a, b, grid)["rmse_um"] > 5.0
    _, rep = registration_report("tps", FIXED, truth)
    assert rep["rmse_um"] < 1e-6
    assert rep["n_landmarks"] == 30
    assert len(rep["loo_tre_um"]) == 30
    assert rep["loo_tre_rms_um"] > 0
    _, rep = registration_report("rigid", FIXED, truth)
    assert rep["predicted_tre_at_centroid_um"] > 0


def test_tps_beats_affine_on_the_phantom(tiny_phantom) -> None:
    ph = tiny_phantom
    q = np.random.default_rng(0).uniform(20, 220, size=(40, 3))  # 2P points (z, y, x)
    p = ph.truth.inverse(q)
    fixed, moving = p[:, ::-1], q[:, ::-1]  # xyz order: fixed = MRI µm, moving = 2P µm
    test_q = np.random.default_rng(1).uniform(40, 200, size=(200, 3))
    test_p = ph.truth.inverse(test_q)
    err = {}
    for kind in ("affine", "tps"):
        m = fit(kind, fixed, moving)
        err[kind] = np.sqrt(
            np.mean(np.sum((m.forward_points(test_p[:, ::-1]) - test_q[:, ::-1]) ** 2, 1))
        )
    assert err["tps"] < 0.5 * err["affine"]


def test_smoothing_chosen_by_leave_one_out_beats_interpolation_on_noisy_landmarks() -> None:
    from bridge_xr.register.accuracy import choose_smoothing

    truth = FIXED + 30 * np.sin(FIXED / 800.0)
    noisy = truth + np.random.default_rng(7).normal(0, 25, FIXED.shape)
    lam, info = choose_smoothing(FIXED, noisy, kernel="r")
    assert lam > 0
    assert info["loo_tre_rms_um"][info["lambdas"].index(lam)] < info["loo_tre_rms_um"][0]
    model, rep = registration_report("tps", FIXED, noisy, smoothing=-1)
    assert rep["smoothing"] == lam
    assert rep["smoothing_selection"]["chosen"] == lam
    assert rep["folding"]["fraction_folded"] >= 0


def test_bootstrap_tre_map_scales_with_fle_and_grows_away_from_landmarks() -> None:
    from bridge_xr.register.accuracy import bootstrap_tre_map

    fixed = FIXED[:15]
    moving = fixed * 1.01 + 5
    near = fixed.mean(axis=0, keepdims=True)
    far = near + [8000.0, 0.0, 0.0]
    pts = np.vstack([near, far])
    t10 = bootstrap_tre_map("affine", fixed, moving, pts, fle_rms_um=10.0, n_boot=200)
    t20 = bootstrap_tre_map("affine", fixed, moving, pts, fle_rms_um=20.0, n_boot=200)
    np.testing.assert_allclose(t20 / t10, 2.0, rtol=1e-9)  # same seed: exactly linear in FLE
    assert t10[1] > 2 * t10[0]  # extrapolating far from the landmarks is less certain
    # at the landmark centroid the rigid/affine theory applies: close to Fitzpatrick's prediction
    fit_pred = fitzpatrick_tre_um(fixed, 10.0, near)[0]
    rigid = bootstrap_tre_map("rigid", fixed, moving, near, fle_rms_um=10.0, n_boot=2000)[0]
    assert rigid == pytest.approx(fit_pred, rel=0.1)
