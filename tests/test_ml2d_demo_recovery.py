"""ML2D on the demo generator (3D phantom projections, SNR 0.1), from generated references
with the default settings (psi 5°, mirror, fast): classes, in-plane angles, shifts, mirrors."""

from __future__ import annotations

import numpy as np
import pytest
from test_ml2d_recovery import _best_labels, _gauge_errors

from cryosnake import demo
from cryosnake.ml2d import ML2DSettings
from cryosnake.ml2d.run import run_ml2d

PSI_STEP = 5.0


@pytest.fixture(scope="module")
def demo_run():
    s = demo.DemoSettings(n_particles=1000, box=48, views=3, snr=0.1, shift_std=1.5, seed=1)
    images, truth, _, _ = demo.simulate(s)
    settings = ML2DSettings(n_classes=3, psi_step=PSI_STEP, mirror=True, fast=True, seed=1)
    model, assignments, history = run_ml2d(images, settings, max_iterations=40)
    # demo truth (RELION convention) -> hypothesis terms: theta = -psi, t = -origin
    t = {"theta": -truth["rlnAnglePsi"].to_numpy(),
         "mirror": truth["cryosnakeMirror"].to_numpy(),
         "tx": -truth["rlnOriginXAngst"].to_numpy() / s.sampling,
         "ty": -truth["rlnOriginYAngst"].to_numpy() / s.sampling,
         "view": truth["cryosnakeView"].to_numpy() - 1}
    return t, model, assignments


def test_demo_classes_angles_shifts_mirrors(demo_run):
    truth, model, a = demo_run
    est = a["class_number"] - 1
    mapped, purity = _best_labels(truth["view"], est, 3)
    assert purity >= 0.95
    assert len(np.unique(mapped)) == 3
    ang_errors, shift_errors, mirror_ok = [], [], []
    for k in range(3):
        members = np.flatnonzero(est == k)
        ok, ang, shift = _gauge_errors(truth, a, members)
        mirror_ok.append(ok)
        ang_errors.append(ang)
        shift_errors.append(shift)
    ang_errors = np.concatenate(ang_errors)
    shift_errors = np.concatenate(shift_errors)
    assert min(mirror_ok) >= 0.95  # mirrors detected
    assert np.mean(ang_errors < PSI_STEP) >= 0.90
    # integer translation search on continuous shifts: ≤ 0.71 px from quantisation alone
    assert np.mean(shift_errors <= 1.0) >= 0.90
    assert 0.3 < model.mirror_fractions.mean() < 0.7
