"""Pose convention round trip (spec §1.14, V-ML8, Decisions)."""

from __future__ import annotations

import numpy as np
import pytest
from ml2d_sim import make_views, mirror_ref, rotate_ref, shift_ref

from cryosnake.classify2d.hypotheses import psi_grid
from cryosnake.classify2d.poses import apply_pose, wrap_angle_deg
from cryosnake.kernels.cpu import circular_mask
from cryosnake.ml2d import ML2DModel, ML2DSettings, estep


@pytest.mark.parametrize("mirror", [0, 1])
@pytest.mark.parametrize("psi", [12.0, -137.0])
def test_pose_round_trip(mirror, psi):
    """X = Sh_{-o}[Mir^mu[Rot_psi[A]]] (RELION meaning of psi, origin); the emitted pose applied
    to X gives back A (correlation > 0.99) and equals the planted one."""
    rng = np.random.default_rng(3)
    n = 48
    A = make_views(1, n, rng)[0]
    origin = np.array([3.0, -2.0])
    X = rotate_ref(A, psi)
    if mirror:
        X = mirror_ref(X)
    X = shift_ref(X, -origin[0], -origin[1]) + rng.normal(0, 0.05, (n, n))
    settings = ML2DSettings(psi_step=5, mirror=True, fast=False, offset_std=2.0)
    model = ML2DModel(
        references=A[None],
        class_fractions=[1.0],
        mirror_fractions=[0.5],
        sigma_noise=0.5,
        sigma_offset=2.0,
    )
    _, a, _ = estep(X[None].astype(np.float32), model, settings)
    assert a["mirror"][0] == mirror
    _, step = psi_grid(5)
    assert abs(wrap_angle_deg(a["psi_deg"][0] - psi)) <= step / 2 + 1e-9
    assert abs(a["origin_x_px"][0] - origin[0]) <= 1 and abs(a["origin_y_px"][0] - origin[1]) <= 1
    disc = circular_mask(n, n / 2 - 2)  # corners wrap around under rotation; compare the disc
    back = apply_pose(X, a["psi_deg"][0], a["origin_x_px"][0], a["origin_y_px"][0], a["mirror"][0])
    assert np.corrcoef(back[disc], A[disc])[0, 1] > 0.99
    # the wrong convention fails: opposite psi sign or origin sign
    wrong = apply_pose(
        X, -a["psi_deg"][0], a["origin_x_px"][0], a["origin_y_px"][0], a["mirror"][0]
    )
    assert np.corrcoef(wrong[disc], A[disc])[0, 1] < 0.9


def test_apply_pose_batch_matches_single(rng):
    X = rng.normal(size=(3, 16, 16))
    psi = np.array([10.0, -40.0, 170.0])
    ox = np.array([1.0, -2.5, 0.0])
    oy = np.array([0.0, 1.5, -3.0])
    mir = np.array([0, 1, 1])
    batch = apply_pose(X, psi, ox, oy, mir)
    for i in range(3):
        np.testing.assert_allclose(
            batch[i], apply_pose(X[i], psi[i], ox[i], oy[i], mir[i]), atol=1e-12
        )
