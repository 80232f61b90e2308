"""Centring, mask, low-pass, resampling, initial volumes (spec §3.4, §3.9, §3.10, V-RS8)."""

from __future__ import annotations

import numpy as np
import pytest
from significant_phantom import gaussian_phantom

from cryosnake.significant import SignificantSettings, finalize_volume, prepare_images
from cryosnake.significant.initial import (
    random_orientations,
    reference_initial_volume,
)
from cryosnake.volume3d.volume_ops import (
    centre_volume,
    fourier_resize,
    fourier_shift,
    mirror_volume,
    raised_cosine_lowpass,
    spherical_mask,
    working_grid,
)

N = 32


def _com(v):
    g = np.arange(v.shape[0]) - v.shape[0] // 2
    w = np.clip(v, 0, None)
    return np.array([(w.sum((0, 1)) * g).sum(), (w.sum((0, 2)) * g).sum(),
                     (w.sum((1, 2)) * g).sum()]) / w.sum()


def test_mirror_about_true_centre():
    v = np.zeros((N, N, N), dtype=np.float32)
    v[N // 2 + 2, N // 2 - 3, N // 2 + 5] = 1
    m = mirror_volume(v)
    assert m[N // 2 - 2, N // 2 + 3, N // 2 - 5] == 1


def test_centring_recovers_a_shift():
    """V-RS8: a volume moved by (5, 0, 0) voxels is re-centred within 1 voxel, same scale."""
    g = np.arange(N) - N // 2
    Z, Y, X = np.meshgrid(g, g, g, indexing="ij")
    blob = np.exp(-((X / 5.0) ** 2 + (Y / 3.5) ** 2 + (Z / 4.0) ** 2) / 2)
    blob += 0.5 * np.exp(-(((X - 3) / 2.0) ** 2 + ((Y + 2) / 2.0) ** 2 + (Z / 2.0) ** 2) / 2)
    c0 = centre_volume(blob)[0]
    moved = fourier_shift(c0, (5.0, 0.0, 0.0))
    back, shift = centre_volume(moved)
    assert shift[0] == pytest.approx(-5.0, abs=1.0)
    assert np.abs(_com(back) - _com(c0)).max() < 1.0
    assert back.sum() == pytest.approx(c0.sum(), rel=0.02)
    ph = gaussian_phantom(N, seed=3)
    c1, s1 = centre_volume(centre_volume(ph)[0])
    assert np.abs(s1).max() < 0.5  # idempotent


def test_mask_and_lowpass():
    v = np.ones((N, N, N), dtype=np.float32)
    m = spherical_mask(v)
    assert m[N // 2, N // 2, 0] == 1 and m[0, 0, 0] == 0
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(N, N, N))
    lp = raised_cosine_lowpass(noise, 0.1)
    f = np.abs(np.fft.fftn(lp))
    k = np.sqrt(sum(q ** 2 for q in np.meshgrid(*[np.fft.fftfreq(N)] * 3, indexing="ij")))
    assert f[k > 0.125].max() < 1e-3 * f[k < 0.09].max()
    assert np.allclose(f[k < 0.099], np.abs(np.fft.fftn(noise))[k < 0.099], rtol=1e-4)


def test_fourier_resize_and_working_grid():
    ph = gaussian_phantom(N, seed=3)
    up = fourier_resize(ph, 48)
    assert up.shape == (48,) * 3
    back = fourier_resize(up, N)
    assert np.allclose(back, ph, atol=1e-4 * ph.max())
    stack = np.stack([ph[N // 2]] * 3)
    small = fourier_resize(stack, 24, stack=True)
    assert small.shape == (3, 24, 24)
    assert working_grid(64, 2.0, 0) == (64, 2.0)
    n, s = working_grid(128, 1.0, 12.0)  # Ts_cur = 4 A -> 32, raised to the minimum 40
    assert n == 40 and s == pytest.approx(3.2)
    n, s = working_grid(200, 1.0, 30.0)
    assert n == 40
    assert working_grid(32, 5.0, 12.0) == (32, 5.0)  # never finer than the data
    imgs = np.zeros((2, 128, 128), np.float32)
    st = SignificantSettings(target_resolution=12.0)
    w, s = prepare_images(imgs, 1.0, st)
    assert w.shape == (2, 40, 40) and s == pytest.approx(3.2)
    assert finalize_volume(np.zeros((40,) * 3), 128).shape == (128,) * 3


def test_random_orientations_uniform_on_sphere():
    rot, tilt, psi = random_orientations(20000, 1)
    z = np.cos(np.deg2rad(tilt))
    hist, _ = np.histogram(z, bins=10, range=(-1, 1))
    assert hist.min() > 0.9 * hist.mean()
    assert np.array_equal(random_orientations(5, 7)[0], random_orientations(5, 7)[0])


def test_reference_volume_resampled_and_errors():
    ph = gaussian_phantom(N, seed=3)
    out = reference_initial_volume(ph, 2.0, 48, 1.0)  # 32 px at 2 A -> 64 px at 1 A, crop 48
    assert out.shape == (48,) * 3
    assert np.unravel_index(out.argmax(), out.shape) != (0, 0, 0)
    out2 = reference_initial_volume(ph, 1.0, 40, 1.0)  # same pixel size, padded
    assert np.allclose(out2[4:36, 4:36, 4:36], ph)
    with pytest.raises(ValueError, match="pixel size"):
        reference_initial_volume(ph, 0.0, 32, 1.0)
    with pytest.raises(ValueError, match="cube"):
        reference_initial_volume(ph[:, :, :10], 1.0, 32, 1.0)
    with pytest.raises(ValueError, match="voxels"):
        reference_initial_volume(ph[:4, :4, :4], 1.0, 32, 2.0)
