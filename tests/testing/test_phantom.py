"""The phantom's ground truth is what it claims to be."""

from __future__ import annotations

import numpy as np

from bridge_xr.testing.phantom import (
    PhantomConfig,
    _grid_points,
    glioma_density,
    inside_vessels,
    make_phantom,
)


def test_seeded_and_deterministic(tiny_phantom) -> None:
    again = make_phantom(PhantomConfig.tiny())
    np.testing.assert_array_equal(again.twophoton.values, tiny_phantom.twophoton.values)
    np.testing.assert_array_equal(again.mri["T2w"].values, tiny_phantom.mri["T2w"].values)
    other = make_phantom(PhantomConfig.tiny(seed=1))
    assert not np.array_equal(other.twophoton.values, tiny_phantom.twophoton.values)


def test_vessel_tree_spans_capillaries_to_large_vessels(tiny_phantom) -> None:
    diam = 2 * tiny_phantom.segments[:, 6]
    assert diam.min() >= 5.0 - 1e-9
    assert diam.min() < 8.5
    assert diam.max() == 150.0


def test_ground_truth_transform_inverts_exactly(tiny_phantom) -> None:
    g = tiny_phantom.truth
    q = np.random.default_rng(0).uniform(0, 240, size=(200, 3))
    np.testing.assert_allclose(g(g.inverse(q)), q, atol=1e-8)
    # the warp is not affine: a finite-difference Jacobian varies across space
    p = g.inverse(q[:2])
    assert not np.allclose(g._jacobian(p)[0], g._jacobian(p)[1])


def test_partial_volumes_equal_an_independent_point_count(tiny_phantom) -> None:
    ph, cfg = tiny_phantom, tiny_phantom.config
    k, msp = cfg.supersample, cfg.mri_spacing_um
    rng = np.random.default_rng(1)
    shape = ph.vessel_fraction.shape
    idx = np.argwhere((ph.vessel_fraction > 0.05) & (ph.vessel_fraction < 0.95))[:10]
    assert len(idx) >= 5
    offs = _grid_points((k, k, k), np.full(3, msp / k), np.full(3, -msp / 2 + msp / (2 * k)))
    for i in idx:
        centre = np.asarray(i) * msp
        q = ph.truth(centre + offs)
        # same sample points through the plain (non-gridded) test: identical fraction
        assert inside_vessels(q, ph.segments).mean() == ph.vessel_fraction[tuple(i)]
        assert np.isclose(
            glioma_density(
                q, ph.config.twop_fov_um * np.array([0.55, 0.35, 0.65]), cfg.glioma_sigma_um
            ).mean(),
            ph.glioma_fraction[tuple(i)],
        )
        # and a Monte Carlo estimate with random points agrees within sampling error
        mc = ph.truth(centre + rng.uniform(-msp / 2, msp / 2, size=(3000, 3)))
        assert abs(inside_vessels(mc, ph.segments).mean() - ph.vessel_fraction[tuple(i)]) < 0.2
    assert ph.vessel_fraction.shape == shape


def test_mri_signal_follows_partial_volumes(tiny_phantom) -> None:
    ph = tiny_phantom
    vf, gf = ph.vessel_fraction.ravel(), ph.glioma_fraction.ravel()
    for name, (vsig, gain) in {"T2w": (0.3, 0.6), "T2star": (0.1, 0.3)}.items():
        sig = ph.mri[name].values.ravel() / 1000
        model = (1 - vf) * (1 + gain * gf) + vf * vsig
        resid = sig - model
        assert abs(resid.std() - ph.config.noise_sd) < 0.3 * ph.config.noise_sd
        assert np.corrcoef(vf, sig)[0, 1] < -0.5  # vessels are hypointense
        tissue = vf < 0.01
        assert np.corrcoef(gf[tissue], sig[tissue])[0, 1] > 0.5  # glioma is hyperintense


def test_twophoton_vessel_channel_is_bright_inside_vessels(tiny_phantom) -> None:
    ph = tiny_phantom
    sp = np.array([ph.twophoton.attrs["spacing"][d] for d in "zyx"])
    pts = _grid_points(ph.twophoton.shape[1:], sp, np.zeros(3))
    inside = inside_vessels(pts, ph.segments).reshape(ph.twophoton.shape[1:])
    vessel = ph.twophoton.values[0]
    assert vessel[inside].mean() > 5 * vessel[~inside].mean()


def test_landmarks_are_bifurcations_with_rater_noise(tiny_phantom) -> None:
    ph = tiny_phantom
    lm = ph.landmarks[0]
    moving = lm[["moving_z", "moving_y", "moving_x"]].to_numpy()
    fixed = lm[["fixed_z", "fixed_y", "fixed_x"]].to_numpy()
    err = ph.truth(fixed) - moving  # rater noise on the MRI side shows up as mapping error
    assert 0 < np.sqrt((err**2).sum(axis=1).mean()) < 6 * ph.config.rater_sigma_um
    d = np.linalg.norm(moving[:, None] - ph.bifurcations[None], axis=2).min(axis=1)
    assert d.max() < ph.config.rater_sigma_um  # each moving landmark sits at a bifurcation
    assert list(lm.columns[:7]) == [
        "name",
        "moving_x",
        "moving_y",
        "moving_z",
        "fixed_x",
        "fixed_y",
        "fixed_z",
    ]
