"""2D image kernels and ML2D inner-loop kernels against slow references (scipy, loops, np.fft)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from cryosnake.kernels import cpu


def _coords(n, phi):
    c = n // 2
    y, x = np.mgrid[0:n, 0:n] - c
    a = np.deg2rad(phi)
    return np.sin(a) * x + np.cos(a) * y + c, np.cos(a) * x - np.sin(a) * y + c


@pytest.mark.parametrize("n", [16, 17])
@pytest.mark.parametrize("order", [1, 3])
def test_rotate_matches_map_coordinates(rng, n, order):
    img = rng.normal(size=(4, n, n))
    angles = np.array([0.0, 7.5, -63.0, 211.0])
    out = cpu.rotate_images(img, angles, order=order)
    for m, phi in enumerate(angles):
        want = ndi.map_coordinates(img[m], _coords(n, phi), order=order, mode="grid-wrap")
        np.testing.assert_allclose(out[m], want, atol=1e-12)


def test_rotate_convention(rng):
    """Rot_phi turns content by R(phi): scipy.ndimage.rotate(+phi) for odd N; 90 deg = rot90."""
    img = rng.normal(size=(15, 15))
    np.testing.assert_allclose(
        cpu.rotate_images(img, 23.0),
        ndi.rotate(img, 23.0, reshape=False, order=3, mode="grid-wrap"),
        atol=1e-12,
    )
    np.testing.assert_allclose(cpu.rotate_images(img, 90.0), np.rot90(img), atol=1e-12)
    even = rng.normal(size=(16, 16))  # about N//2 = 8 with wrap: out[y, x] = I[x, -y]
    c = 8
    i, j = np.mgrid[0:16, 0:16]
    np.testing.assert_allclose(cpu.rotate_images(even, 90.0), even[j, (2 * c - i) % 16], atol=1e-12)


def test_permute_and_roll(rng):
    n = 12
    img = rng.normal(size=(3, n, n))
    mats = np.array([[[0, -1], [1, 0]], [[-1, 0], [0, 1]]])
    out = cpu.permute_images(img, mats)
    c = n // 2
    for m in range(3):
        for f, M in enumerate(mats):
            for i in range(n):
                for j in range(n):
                    x, y = j - c, i - c
                    xs, ys = M @ [x, y]
                    assert out[m, f, i, j] == img[m, (ys + c) % n, (xs + c) % n]
    idx = np.array([2, 0, 2])
    sh = np.array([[1, -3], [0, 0], [-5, 2]])
    r = cpu.roll_images(img, idx, sh)
    for t in range(3):
        np.testing.assert_array_equal(r[t], np.roll(img[idx[t]], (sh[t, 1], sh[t, 0]), (0, 1)))


def test_shift_images(rng):
    n = 16
    img = rng.normal(size=(2, n, n))
    np.testing.assert_allclose(
        cpu.shift_images(img, [[3, -2], [0, 5]])[0], np.roll(img[0], (-2, 3), (0, 1)), atol=1e-12
    )
    # sub-pixel: explicit complex DFT phase ramp on an image without Nyquist components
    spec = np.fft.fft2(img[1])
    spec[n // 2, :] = 0
    spec[:, n // 2] = 0
    band = np.real(np.fft.ifft2(spec))
    v = np.array([0.3, -1.7])
    k = np.fft.fftfreq(n)
    want = np.real(
        np.fft.ifft2(spec * np.exp(-2j * np.pi * (k[None, :] * v[0] + k[:, None] * v[1])))
    )
    np.testing.assert_allclose(cpu.shift_images(band, v), want, atol=1e-12)
    smooth = ndi.gaussian_filter(img[1], 2.0, mode="wrap")
    ref = ndi.shift(smooth, (v[1], v[0]), order=5, mode="grid-wrap")
    np.testing.assert_allclose(cpu.shift_images(smooth, v), ref, atol=2e-3)


def test_fft_helpers_and_shells(rng):
    x = rng.normal(size=(3, 10, 10)).astype(np.float32)
    xh = cpu.rfft2(x)
    assert xh.dtype == np.complex64
    np.testing.assert_allclose(xh, np.fft.rfft2(x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cpu.irfft2(xh, 10), x, atol=1e-5)
    img = rng.normal(size=(2, 9, 9))
    ra = cpu.radial_average(img)
    r = cpu.radius_grid(9)
    for s in range(ra.shape[1]):
        sel = np.rint(r) == s
        np.testing.assert_allclose(ra[:, s], img[:, sel].mean(axis=1))
    m = cpu.circular_mask(9, 3.0)
    assert m.sum() == sum((i - 4) ** 2 + (j - 4) ** 2 <= 9 for i in range(9) for j in range(9))


def test_ml2d_block_posteriors_and_accumulation(rng):
    n, w = 10, 2
    W = 2 * w + 1
    c = rng.uniform(-10, 10, size=(5, W, W))
    const = rng.uniform(20, 40, 5)
    const[4] += 200.0  # a block far below the rest: skipped
    scale = rng.uniform(0.5, 1.5, 5)
    d = const[:, None, None] - scale[:, None, None] * c
    img_ptr = np.array([0, 3, 5])
    lp = np.log(rng.uniform(0.1, 1, 5))
    lps = np.log(rng.uniform(0.1, 1, (W, W)))
    r2 = rng.uniform(0, 8, (W, W))
    res = cpu.ml2d_block_posteriors(c, const, scale, img_ptr, lp, lps, r2, 4.0, block_skip=1e-8)
    gamma = np.zeros((5, W, W))  # skipped blocks are not stored: all zero
    gamma[res.kept] = res.gamma
    for i, (b0, b1) in enumerate([(0, 3), (3, 5)]):
        lw = lp[b0:b1, None, None] + lps[None] - d[b0:b1] / 4.0
        keep = np.exp(lw.max(axis=(1, 2)) - lw.max()) > 1e-8
        wts = np.exp(lw - lw.max()) * keep[:, None, None]
        g = wts / wts.sum()
        np.testing.assert_allclose(gamma[b0:b1], g, rtol=1e-12, atol=1e-300)
        assert res.logsum[i] == pytest.approx(lw.max() + np.log(wts.sum()))
        assert res.noise[i] == pytest.approx((g * 2 * d[b0:b1]).sum())
        assert res.offset[i] == pytest.approx((g * r2[None]).sum())
    assert res.count[4] == 0
    # direct and spectral accumulation agree with the explicit sum
    imgs = rng.normal(size=(3, n, n))
    key = np.array([0, 1, 0, 1, 0])
    bx = np.array([0, 1, 2, 0, 1])
    sc = rng.uniform(0.5, 2, 5)
    want = np.zeros((2, n, n))
    for b in range(5):
        for a in range(W):
            for c in range(W):
                want[key[b]] += (
                    sc[b] * gamma[b, a, c] * np.roll(imgs[bx[b]], (-(a - w), -(c - w)), (0, 1))
                )
    acc = np.zeros((2, n, n))
    cpu.ml2d_accumulate_direct(acc, imgs, gamma, key, bx, sc, w)
    np.testing.assert_allclose(acc, want, atol=1e-12)
    acc_win = cpu.ml2d_window_accumulator(2, n)
    cpu.ml2d_accumulate_windows(acc_win, gamma, cpu.ml2d_image_operands(imgs), key, bx, sc, w)
    np.testing.assert_allclose(cpu.ml2d_window_sums(acc_win, w), want, atol=1e-12)
