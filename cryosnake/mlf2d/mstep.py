"""MLF2D M-step (spec ``algorithms.md`` §2.9, §2.10; Wiener filters in :mod:`.wiener`)."""

from __future__ import annotations

import numpy as np

from cryosnake.ml2d.mstep import updated_fields

from .fourier import independent_points, scatter_points, shell_counts, shell_of
from .model import MLF2DModel
from .settings import MLF2DSettings
from .sums import MLF2DSums
from .wiener import wiener_average


def band_limited_image(points: np.ndarray, kx, ky, n: int) -> np.ndarray:
    """Real ``[..., N, N]`` images with Fourier coefficients ``points`` ``[..., Np]`` at the
    independent points ``(kx, ky)`` and zero elsewhere (numpy ``rfft2`` convention)."""
    return np.fft.irfft2(scatter_points(points, kx, ky, n), s=(n, n))


def update_noise(model: MLF2DModel, sums: MLF2DSums) -> np.ndarray:
    """``sigma^2_g(l) = noise_sum_g(l) / (n_g n_l)`` for ``l <= l_high`` where positive (the
    other shells keep their values; spec §2.9)."""
    noise = model.noise_spectra.copy()
    L = model.shell_high + 1
    counts = shell_counts(model.image_size)[:L]
    with np.errstate(divide="ignore", invalid="ignore"):
        new = sums.noise_sum[:, :L] / (sums.group_count[:, None] * counts[None])
    ok = np.isfinite(new) & (new > 0)
    noise[:, :L] = np.where(ok, new, noise[:, :L])
    return noise


def mstep(model: MLF2DModel, sums: MLF2DSums, settings: MLF2DSettings) -> MLF2DModel:
    """New model from the summed statistics of all chunks (spec §2.9, §2.10):

    * references ``A_k``: CTF-corrected, Wiener-filtered averages of the back-rotated
      numerators (:func:`~.wiener.wiener_average`) on the shells ``l <= l_high``, zero beyond
      (a class with zero weight gets a zero reference);
    * ``alpha_k``, ``m_k``, ``xi^2 = sum gamma |u|^2 / (2 Ntot)`` as ML2D (``fix_*`` honoured);
    * noise spectra per defocus group (:func:`update_noise`);
    * the CTF-corrected SSNR of every class (the one its filter used);
    * LL, <Pmax>, signal change and convergence as ML2D (§1.10).
    """
    n = sums.image_size
    K = sums.n_classes
    kx, ky = independent_points(n)
    shell = shell_of(kx, ky)
    L = model.shell_high + 1
    inside = shell < L
    kx, ky, shell = kx[inside], ky[inside], shell[inside]
    spectra = np.fft.rfft2(sums.ref_sum)[..., np.mod(ky, n), kx]  # F_k on the points
    previous = np.fft.rfft2(model.references)[..., np.mod(ky, n), kx]
    weights = sums.class_weight + sums.mirror_weight
    den = np.where(weights[:, None] > 0, sums.ref_denominator[:, :L], 0.0)
    averages, ssnr_used = wiener_average(spectra, den, previous, weights, shell)
    refs = band_limited_image(averages, kx, ky, n).astype(np.float32).astype(np.float64)
    ssnr = np.zeros((K, n // 2))
    ssnr[:, :L] = ssnr_used

    noise = model.noise_spectra if settings.fix_sigma_noise else update_noise(model, sums)
    new = MLF2DModel(
        **updated_fields(model, sums, settings, refs),
        sigma_noise=0.0,
        sampling=model.sampling,
        noise_spectra=noise,
        group_defocus=model.group_defocus,
        group_sizes=model.group_sizes,
        ssnr=ssnr,
        shell_high=model.shell_high,
    )
    new.sigma_noise = new.white_noise_std()
    return new
