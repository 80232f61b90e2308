"""The particle mask (``ml2d.particle_diameter``, :mod:`cryosnake.masks`): its profile, and
the ML2D noise estimate inside it."""

from __future__ import annotations

import numpy as np
import pytest

from cryosnake.masks import noise_pixels, particle_mask, soft_circular_mask
from cryosnake.ml2d import ML2DSettings
from cryosnake.ml2d.run import run_ml2d


def test_soft_circular_mask_profile():
    n, radius, edge = 32, 8.0, 4.0
    m = soft_circular_mask(n, radius, edge)
    c = n // 2
    assert m[c, c] == 1.0 and m[c, c + 8] == 1.0  # inside the radius
    assert m[c, c + 10] == pytest.approx(0.5, abs=1e-12)  # half-way through the edge
    assert m[c, c + 9] == pytest.approx(0.5 + 0.5 * np.cos(np.pi / 4), abs=1e-12)
    assert m[c, c + 12] == 0.0 and m[0, 0] == 0.0  # beyond the edge
    np.testing.assert_array_equal(m[c, c - 12:c + 13], m[c, c - 12:c + 13][::-1])
    assert particle_mask(n, 0.0, 2.0) is None and noise_pixels(n, 0.0, 2.0) == n * n
    np.testing.assert_array_equal(particle_mask(n, 32.0, 2.0), soft_circular_mask(n, 8.0))
    assert noise_pixels(n, 32.0, 2.0) == pytest.approx((soft_circular_mask(n, 8.0) ** 2).sum())


def test_ml2d_noise_estimate_inside_the_mask():
    """Pure white noise of std 2: with a mask the noise is estimated over ``sum M^2`` pixels,
    so sigma stays 2 (over N^2 pixels it would read 2 * sqrt(sum M^2 / N^2), about 1.1 here).
    Tolerance: the sampling error of sigma from n * sum M^2 values is < 0.1 %; the bias of
    fitting one reference to noise (its power, ~sigma^2 / n per pixel times the number of
    hypotheses searched) stays below 2 %."""
    rng = np.random.default_rng(3)
    n, sigma, sampling = 32, 2.0, 2.0
    images = rng.normal(0.0, sigma, (400, n, n))
    settings = ML2DSettings(n_classes=1, psi_step=30.0, mirror=False, particle_diameter=30.0,
                            noise_std=1.0, offset_std=1.0)
    model, _, _ = run_ml2d(images, settings, max_iterations=3, sampling=sampling)
    assert noise_pixels(n, 30.0, sampling) / n**2 < 0.35
    assert model.sigma_noise == pytest.approx(sigma, rel=0.02)
    mask = particle_mask(n, 30.0, sampling)
    np.testing.assert_allclose(model.references[0] * (mask == 0), 0.0)  # solvent flattened


def test_auto_diameter_is_nine_tenths_of_the_box():
    """``particle_diameter: auto`` (the config default): 0.9 of the box whatever the pixel
    size, i.e. the same mask as the diameter 0.9 N × sampling in Å."""
    from cryosnake import masks

    for n, sampling in ((48, 4.0), (64, 3.2), (33, 1.0)):
        auto = masks.particle_mask(n, "auto", sampling)
        np.testing.assert_array_equal(auto, masks.particle_mask(n, 0.9 * n * sampling,
                                                                sampling))
        assert auto[n // 2, n // 2] == 1.0 and auto[0, 0] < 0.5
    assert masks.particle_mask(48, 0.0, 4.0) is None
