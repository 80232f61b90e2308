"""Test helper for Reconstruct Significant: procedural phantoms and simulated averages."""

from __future__ import annotations

import numpy as np

from cryosnake.volume3d.projector import project
from cryosnake.volume3d.symmetry import rotation_about


def gaussian_phantom(n: int, seed: int = 0, n_blobs: int = 10, fold: int = 1) -> np.ndarray:
    """Sum of anisotropic Gaussians at seeded positions (asymmetric; ``fold`` > 1: cN copies).

    Box ``n`` (``[z, y, x]``, centre ``n // 2``); blobs within radius ``0.3 n``.
    """
    rng = np.random.default_rng(seed)
    g = np.arange(n) - n // 2
    Z, Y, X = np.meshgrid(g, g, g, indexing="ij")
    pos = np.stack([X, Y, Z], axis=-1).astype(np.float64)
    vol = np.zeros((n, n, n))
    s = n / 32.0
    for _ in range(n_blobs):
        c = rng.normal(0, 1, 3)
        c = c / np.linalg.norm(c) * rng.uniform(0.05, 0.3) * n
        sig = rng.uniform(1.2, 3.2, 3) * s
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        cov_inv = q @ np.diag(1.0 / sig ** 2) @ q.T
        amp = rng.uniform(0.5, 1.0)
        for k in range(fold):
            Rk = rotation_about((0, 0, 1), 360.0 * k / fold)
            ck = Rk @ c
            Ck = Rk @ cov_inv @ Rk.T
            d = pos - ck
            vol += amp * np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, Ck, d))
    return vol.astype(np.float32)


def simulated_averages(volume, n_img: int, snr: float, seed: int = 1, max_origin: float = 0.0):
    """Projections at uniform random directions (+ psi, origins), white noise at ``snr``.

    Returns ``(images, rot, tilt, psi, ox, oy)``; SNR = signal variance / noise variance.
    """
    rng = np.random.default_rng(seed)
    rot = rng.uniform(0, 360, n_img)
    tilt = np.rad2deg(np.arccos(rng.uniform(-1, 1, n_img)))
    psi = rng.uniform(0, 360, n_img)
    clean = project(volume, rot, tilt, psi)
    ox = rng.uniform(-max_origin, max_origin, n_img)
    oy = rng.uniform(-max_origin, max_origin, n_img)
    if max_origin > 0:
        n = clean.shape[-1]
        k = np.fft.fftfreq(n)
        ph = np.exp(2j * np.pi * (k[None, None, :] * ox[:, None, None]
                                  + k[None, :, None] * oy[:, None, None]))
        clean = np.real(np.fft.ifft2(np.fft.fft2(clean) * ph)).astype(np.float32)
    if snr > 0 and np.isfinite(snr):
        sigma = np.sqrt(clean.var() / snr)
        noisy = clean + rng.normal(0, sigma, clean.shape).astype(np.float32)
    else:
        noisy = clean
    return noisy.astype(np.float32), rot, tilt, psi, ox, oy
