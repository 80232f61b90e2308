"""The CTF function against an independent formula and its analytic properties."""

from __future__ import annotations

import numpy as np
import pytest

from cryosnake import ctf


def independent_ctf(k, defocus, voltage_kv, cs_mm, q0):
    """Textbook form: −(√(1−Q0²)·sin χ − Q0·cos χ) with χ = −γ (Xmipp's way of writing it)."""
    v = voltage_kv * 1e3
    lam = 12.2643247 / np.sqrt(v * (1 + 0.978466e-6 * v))
    chi = -(np.pi * lam * defocus * k**2 - np.pi / 2 * cs_mm * 1e7 * lam**3 * k**4)
    return -(np.sqrt(1 - q0**2) * np.sin(chi) - q0 * np.cos(chi))


def test_wavelength_300kv():
    assert ctf.electron_wavelength(300.0) == pytest.approx(0.019687, abs=1e-6)
    assert ctf.electron_wavelength(200.0) == pytest.approx(0.025079, abs=1e-6)


def test_matches_independent_formula_and_sign_at_low_frequency():
    k = np.linspace(0, 0.3, 500)
    ours = ctf.ctf_from_frequencies(k, 0 * k, 15000, 15000, 0, 300, 2.7, 0.07)
    np.testing.assert_allclose(ours, independent_ctf(k, 15000, 300, 2.7, 0.07), atol=1e-12)
    assert ours[0] == pytest.approx(0.07)  # CTF(0) = +Q0: particles stay white
    assert ours[1] > 0.07  # first lobe positive for underfocus


def test_zeros_at_analytic_positions():
    """Without Cs, γ + asin(Q0) = nπ at k² = (nπ − asin Q0)/(π λ Δf)."""
    lam = ctf.electron_wavelength(300)
    q0, df = 0.1, 20000.0
    n = np.arange(1, 6)
    k_zero = np.sqrt((n * np.pi - np.arcsin(q0)) / (np.pi * lam * df))
    vals = ctf.ctf_from_frequencies(k_zero, 0 * k_zero, df, df, 0, 300, 0.0, q0)
    np.testing.assert_allclose(vals, 0, atol=1e-9)
    # with Cs the zeros solve a quadratic in k²: π λ Δf k² − π/2 Cs λ³ k⁴ = nπ − asin Q0
    cs = 2.7e7
    a, b = 0.5 * np.pi * cs * lam**3, -np.pi * lam * df
    k2 = (-b - np.sqrt(b * b - 4 * a * (n * np.pi - np.arcsin(q0)))) / (2 * a)
    vals = ctf.ctf_from_frequencies(np.sqrt(k2), 0 * k2, df, df, 0, 300, 2.7, q0)
    np.testing.assert_allclose(vals, 0, atol=1e-8)


def test_astigmatism_orientation_on_image():
    """Δf(φ_A) = DU: along the direction at angle φ_A (x = columns, y = rows) the first zero is
    where a DU-only CTF has it; perpendicular, where a DV-only CTF has it."""
    box, s = 256, 1.0
    du, dv, ang = 25000.0, 15000.0, 30.0
    img = ctf.ctf_images(ctf.CTFParams(np.array([du]), np.array([dv]), np.array([ang]), 300, 2.7,
                                       0.1), box, s, half=False)[0]
    img = np.fft.fftshift(img)
    c = box // 2
    k = np.arange(1, c) / (box * s)

    def profile(theta):
        x = c + np.arange(1, c) * np.cos(np.deg2rad(theta))
        y = c + np.arange(1, c) * np.sin(np.deg2rad(theta))
        from scipy.ndimage import map_coordinates

        return map_coordinates(img, [y, x], order=1)

    for theta, d in ((ang, du), (ang + 90, dv)):
        expect = ctf.ctf_from_frequencies(k, 0 * k, d, d, 0, 300, 2.7, 0.1)
        assert np.corrcoef(profile(theta)[:40], expect[:40])[0, 1] > 0.98
    wrong = ctf.ctf_from_frequencies(k, 0 * k, dv, dv, 0, 300, 2.7, 0.1)
    assert np.corrcoef(profile(ang)[:40], wrong[:40])[0, 1] < 0.9


def test_phase_flip_is_abs_and_apply_ctf_roundtrip():
    rng = np.random.default_rng(0)
    params = ctf.CTFParams(np.array([12000.0, 20000.0]), np.array([11000.0, 19000.0]),
                           np.array([10.0, 80.0]), 300, 2.7, 0.1)
    signed = ctf.ctf_images(params, 32, 2.0)
    flipped = ctf.ctf_images(params, 32, 2.0, phase_flipped=True)
    np.testing.assert_allclose(flipped, np.abs(signed))
    # no Nyquist content: with astigmatism the CTF is not Hermitian-consistent exactly there
    spec = np.fft.rfft2(rng.normal(size=(2, 32, 32)))
    spec[:, 16, :] = 0
    spec[:, :, 16] = 0
    imgs = np.fft.irfft2(spec, s=(32, 32))
    raw = ctf.apply_ctf(imgs, params, 2.0)
    pf = ctf.apply_ctf(raw, params, 2.0, phase_flip=True)
    # phase-flipped data = image × |CTF|
    expect = np.fft.irfft2(np.fft.rfft2(imgs) * np.abs(signed), s=(32, 32))
    np.testing.assert_allclose(pf, expect, atol=1e-10)
