"""The demo simulator: ground truth that can be checked against the images."""

from __future__ import annotations

import numpy as np

from cryosnake import demo


def test_ground_truth_poses_bring_particles_back_onto_their_view():
    s = demo.DemoSettings(n_particles=60, box=32, views=4, snr=1e6, seed=3)
    images, truth, volume, views = demo.simulate(s)
    for i in range(len(images)):
        back = demo.shift_image(images[i], truth.rlnOriginXAngst[i] / s.sampling,
                                truth.rlnOriginYAngst[i] / s.sampling)
        if truth.cryosnakeMirror[i]:
            back = demo.mirror_image(back)
        back = demo.rotate_image(back, -truth.rlnAnglePsi[i])
        v = views[truth.cryosnakeView[i] - 1]
        inner = np.hypot(*np.mgrid[-16:16, -16:16]) < 12
        assert np.corrcoef(back[inner], v[inner])[0, 1] > 0.97
    # the 3D truth: projecting the phantom at the particle's Euler angles gives the particle
    for i in range(5):
        p = demo.project(volume, truth.rlnAngleRot[i], truth.rlnAngleTilt[i],
                         truth.rlnAnglePsi3D[i])
        clean = demo.shift_image(p, -truth.rlnOriginXAngst[i] / s.sampling,
                                 -truth.rlnOriginYAngst[i] / s.sampling)
        assert np.corrcoef(clean.ravel(), images[i].ravel())[0, 1] > 0.98


def test_snr_and_views_distinct():
    s = demo.DemoSettings(n_particles=300, box=32, views=6, snr=0.1, seed=5)
    images, truth, volume, views = demo.simulate(s)
    noise_var = truth.cryosnakeNoiseStd[0] ** 2
    clean_var = images.var(axis=(1, 2)).mean() - noise_var
    assert abs(clean_var / noise_var - 0.1) < 0.02
    corr = np.corrcoef(views.reshape(6, -1))
    assert corr[~np.eye(6, dtype=bool)].max() < 0.97
    assert 0.4 < truth.cryosnakeMirror.mean() < 0.6
    assert demo.phantom_volume(32, 1).shape == (32, 32, 32)
    np.testing.assert_allclose(demo.project(volume, 0, 0, 0), volume.sum(0), atol=1e-9)


def test_demo_check_scores_the_truth_high_and_noise_low():
    """The demo check (demo/check.json): true labels and clean views score ARI 1 and NCC ~1,
    shuffled labels ARI ~0; the phantom turned by a known rotation and mirrored comes back to
    Nyquist (FSC-0.5 at 2 px), a noisy copy well short of it."""
    from scipy import ndimage

    from cryosnake import geometry
    from cryosnake.pipeline.demo_check import class_recovery, volume_fsc

    s = demo.DemoSettings(n_particles=60, box=32, views=4, snr=1.0, seed=2)
    images, truth, phantom, views = demo.simulate(s)
    labels = truth["cryosnakeView"].to_numpy()
    perfect = class_recovery(views, views, labels, labels)
    assert perfect["ari"] == 1.0 and perfect["views_found"] == 4
    assert perfect["median_view_ncc"] > 0.999
    shuffled = class_recovery(views, views, np.random.default_rng(0).permutation(labels), labels)
    assert abs(shuffled["ari"]) < 0.1

    turned = ndimage.affine_transform(
        phantom[::-1], geometry.euler_to_matrix(40.0, 70.0, -20.0), order=3,
        offset=16 - geometry.euler_to_matrix(40.0, 70.0, -20.0) @ np.full(3, 16.0))
    got = volume_fsc(turned, phantom, 3.0)
    assert got["mirrored"] and got["fsc05_A"] <= 2.5 * 3.0
    noisy = phantom + np.random.default_rng(1).normal(0, 2 * phantom.std(), phantom.shape)
    got = volume_fsc(noisy, phantom, 3.0)  # the fine shells hold little power: lost in noise
    assert not got["mirrored"] and 3.0 * 3.0 < got["fsc05_A"] < 16.0 * 3.0
