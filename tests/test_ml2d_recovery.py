"""Simulated recovery (spec V-ML2, V-ML5, V-ML7): classes, angles, shifts, mirrors, scales."""

from __future__ import annotations

import numpy as np
import pytest
from ml2d_sim import make_views, simulate

from cryosnake.classify2d.poses import wrap_angle_deg
from cryosnake.ml2d import ML2DSettings
from cryosnake.ml2d.run import run_ml2d

N = 64
PSI_STEP = 10.0


def _best_labels(true, est, k):
    """Map estimated classes onto true ones by majority; purity = fraction matching."""
    mapping = {}
    for c in np.unique(est):
        vals, counts = np.unique(true[est == c], return_counts=True)
        mapping[c] = vals[np.argmax(counts)]
    mapped = np.array([mapping[c] for c in est])
    return mapped, (mapped == true).mean()


def _gauge_errors(truth, a, members):
    """Pose errors of one class up to its gauge (spec §1.14 maths).

    The class average is ``A_est = Sh_c Mir^nu Rot_alpha A_true``; then ``mu' = mu xor nu`` and
    ``theta' = theta + alpha`` (nu = 0) or ``theta' = -theta - alpha`` (nu = 1), and the particle
    position obeys ``t' = t - L c`` with ``L = D^mu' R(-theta')``. Returns the mirror agreement,
    angle errors (deg) and shift residuals (px) after fitting ``nu, alpha, c``.
    """
    theta_t = truth["theta"][members]
    theta_e = -a["psi_deg"][members]  # output psi = -theta
    mu_t = truth["mirror"][members]
    mu_e = a["mirror"][members]
    nu = int(np.mean(mu_t != mu_e) > 0.5)
    mirror_ok = (mu_e == (mu_t ^ nu)).mean()
    rel = theta_e - theta_t if nu == 0 else theta_e + theta_t
    alpha = np.degrees(np.angle(np.mean(np.exp(1j * np.radians(rel)))))
    ang_err = np.abs(wrap_angle_deg(rel - alpha))
    t_true = np.stack([truth["tx"][members], truth["ty"][members]], 1)
    t_est = -np.stack([a["origin_x_px"][members], a["origin_y_px"][members]], 1)
    th = np.radians(theta_e)
    # L = D^mu' R(-theta'), R(-th) = [[cos, -sin], [sin, cos]]
    L = np.stack(
        [np.stack([np.cos(th), -np.sin(th)], -1), np.stack([np.sin(th), np.cos(th)], -1)], 1
    )
    L[mu_e == 1, 0, :] *= -1
    c, *_ = np.linalg.lstsq(L.reshape(-1, 2), (t_true - t_est).reshape(-1), rcond=None)
    resid = t_est - (t_true - L @ c)
    return mirror_ok, ang_err, np.hypot(resid[:, 0], resid[:, 1])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(12)
    views = make_views(3, N, rng)
    images, truth = simulate(views, 180, rng, snr=0.1, offset_std=1.5, mirror_fraction=0.5)
    truth["views"] = views
    return images, truth


@pytest.fixture(scope="module")
def fast_run(data):
    images, truth = data
    settings = ML2DSettings(
        n_classes=3,
        psi_step=PSI_STEP,
        offset_std=1.5,
        noise_std=float(truth["sigma"]),
        seed=2,  # generated references: some group seeds end in a merged-class local optimum
        fast=True,
    )
    return run_ml2d(images, settings, max_iterations=12)


def test_recovery_classes_poses_mirrors(data, fast_run):
    images, truth = data
    model, a, history = fast_run
    est = a["class_number"]
    _, purity = _best_labels(truth["class"], est, 3)
    assert purity >= 0.95
    ang_all, shift_all, mirror_all = [], [], []
    for c in np.unique(est):
        members = np.flatnonzero(est == c)
        mirror_ok, ang, sh = _gauge_errors(truth, a, members)
        mirror_all.append(mirror_ok * len(members))
        ang_all.append(ang)
        shift_all.append(sh)
    ang_all = np.concatenate(ang_all)
    shift_all = np.concatenate(shift_all)
    assert sum(mirror_all) / len(est) >= 0.95
    assert np.mean(ang_all < PSI_STEP) >= 0.9
    # shifts relative to the fitted gauge: generated averages may settle a few px off-centre,
    # where the angle quantisation couples into position; the 1 px test is done below with
    # references that keep the true centre
    assert np.median(shift_all) <= 1.5
    assert model.sigma_noise == pytest.approx(truth["sigma"], rel=0.02)
    np.testing.assert_allclose(model.mirror_fractions, 0.5, atol=0.15)
    lls = [m.loglik for m in history[1:]]
    assert lls[-1] > lls[0]


def test_shifts_and_offset_std_with_user_references(data):
    """Started from the true views (gauge fixed): shifts within 1 px, xi -> truth (V-ML2)."""
    images, truth = data
    views = truth["views"]
    settings = ML2DSettings(psi_step=PSI_STEP, offset_std=3.0, noise_std=float(truth["sigma"]))
    model, a, _ = run_ml2d(images, settings, references=views, max_iterations=4)
    assert np.mean(a["class_number"] - 1 == truth["class"]) >= 0.95
    assert np.mean(a["mirror"] == truth["mirror"]) >= 0.95
    err = np.hypot(-a["origin_x_px"] - truth["tx"], -a["origin_y_px"] - truth["ty"])
    assert np.mean(err <= 1.0) >= 0.9
    psi_err = np.abs(wrap_angle_deg(a["psi_deg"] - truth["psi_deg"]))
    assert np.mean(psi_err < PSI_STEP) >= 0.9
    rms = np.sqrt(np.mean(truth["tx"] ** 2 + truth["ty"] ** 2) / 2)
    assert model.sigma_offset == pytest.approx(rms, abs=0.3)


def test_fast_agrees_with_full_search(data, fast_run):
    images, truth = data
    settings = ML2DSettings(
        n_classes=3,
        psi_step=PSI_STEP,
        offset_std=1.5,
        noise_std=float(truth["sigma"]),
        seed=2,
        fast=False,
    )
    model_full, a_full, _ = run_ml2d(images, settings, max_iterations=12)
    model_fast, a_fast, _ = fast_run
    mapped_fast, _ = _best_labels(a_full["class_number"], a_fast["class_number"], 3)
    assert np.mean(mapped_fast == a_full["class_number"]) > 0.98


def test_norm_recovers_scales():
    rng = np.random.default_rng(12)
    views = make_views(2, N, rng)
    images, truth = simulate(
        views, 120, rng, snr=0.3, offset_std=1.5, scale_range=(0.5, 1.5), background_std=0.5
    )
    settings = ML2DSettings(
        n_classes=2,
        psi_step=PSI_STEP,
        offset_std=1.5,
        norm=True,
        noise_std=float(truth["sigma"]),
        seed=1,
    )
    model, a, _ = run_ml2d(images, settings, max_iterations=8)
    r = np.corrcoef(a["norm_scale"], truth["scale"])[0, 1]
    assert r > 0.9
    assert np.corrcoef(a["background"], truth["background"])[0, 1] > 0.7
    _, purity = _best_labels(truth["class"], a["class_number"], 2)
    assert purity >= 0.95  # classes not split by intensity
