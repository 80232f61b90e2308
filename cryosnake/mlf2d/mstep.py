"""MLF2D M-step (spec ``algorithms.md`` §2.9, §2.10; Wiener filters in :mod:`.wiener`)."""

from __future__ import annotations

import numpy as np

from cryosnake import masks
from cryosnake.classify2d import reseed
from cryosnake.classify2d.mstep import updated_fields

from .fourier import independent_points, scatter_points, shell_counts, shell_of
from .model import MLF2DModel
from .resolution import data_ssnr, initial_limits, next_limits
from .settings import MLF2DSettings
from .sums import MLF2DSums
from .wiener import ctf_corrected_average, shell_mean, wiener_average


def band_limited_image(points: np.ndarray, kx, ky, n: int) -> np.ndarray:
    """Real ``[..., N, N]`` images with Fourier coefficients ``points`` ``[..., Np]`` at the
    independent points ``(kx, ky)`` and zero elsewhere (numpy ``rfft2`` convention)."""
    return np.fft.irfft2(scatter_points(points, kx, ky, n), s=(n, n))


def update_noise(model: MLF2DModel, sums: MLF2DSums) -> np.ndarray:
    """``sigma^2_g(l) = noise_sum_g(l) / (n_g n_l)`` for ``l <= l_ext`` where positive (the
    other shells keep their values; spec §2.9)."""
    noise = model.noise_spectra.copy()
    L = model.extension_shell + 1
    counts = shell_counts(model.image_size)[:L]
    with np.errstate(divide="ignore", invalid="ignore"):
        new = sums.noise_sum[:, :L] / (sums.group_count[:, None] * counts[None])
    ok = np.isfinite(new) & (new > 0)
    noise[:, :L] = np.where(ok, new, noise[:, :L])
    return noise


def mstep(model: MLF2DModel, sums: MLF2DSums, settings: MLF2DSettings) -> MLF2DModel:
    """New model from the summed statistics of all chunks (spec §2.9, §2.10):

    * references ``A_k``: CTF-corrected, Wiener-filtered averages of the back-rotated
      numerators (:func:`~.wiener.wiener_average`) on the shells ``l <= l_ext``, zero beyond
      (a class with zero weight gets a zero reference), times the particle mask if any;
    * ``alpha_k``, ``m_k``, ``xi^2 = sum gamma |u|^2 / (2 Ntot)`` as ML2D (``fix_*`` honoured);
    * noise spectra per defocus group (:func:`update_noise`);
    * the CTF-corrected SSNR of every class (the one its filter used);
    * LL, <Pmax>, signal change and convergence as ML2D (§1.10);
    * with ``reseed_fraction``, near-empty classes re-seeded from the largest
      (:mod:`cryosnake.classify2d.reseed`; perturbation: noise of variance ``1 / Den_j(l)``);
    * with ``adaptive_resolution``, the limits ``l_prob``, ``l_ext`` of the next E-step from
      the SSNR of the class averages (:mod:`.resolution`).
    """
    n = sums.image_size
    K = sums.n_classes
    kx, ky = independent_points(n)
    shell = shell_of(kx, ky)
    L = model.extension_shell + 1
    inside = shell < L
    kx, ky, shell = kx[inside], ky[inside], shell[inside]
    spectra = np.fft.rfft2(sums.ref_sum)[..., np.mod(ky, n), kx]  # F_k on the points
    previous = np.fft.rfft2(model.references)[..., np.mod(ky, n), kx]
    weights = sums.class_weight + sums.mirror_weight
    den = np.where(weights[:, None] > 0, sums.ref_denominator[:, :L], 0.0)
    den_p = None
    if settings.point_denominator:
        den_p = sums.point_denominator[..., np.mod(ky, n), kx]
        den_p = np.where(weights[:, None] > 0, den_p, 0.0)
    averages, ssnr_used = wiener_average(spectra, den, previous, weights, shell,
                                         per_class=settings.class_filter,
                                         new_shells=settings.adaptive_resolution,
                                         first=model.iteration < 0, point_denominator=den_p)
    prob, ext = model.shell_prob, model.shell_ext
    if settings.adaptive_resolution:
        power = shell_mean(np.abs(ctf_corrected_average(spectra, den, shell, den_p)) ** 2,
                           shell, L)
        floor = initial_limits(settings, n, model.sampling)[1]
        prob, ext = next_limits(data_ssnr(power, den), weights, model.shell_high, floor,
                                settings.extension_shells, settings.likelihood_shells)
        averages = np.where(shell <= ext, averages, 0.0)
    mask = masks.particle_mask(n, settings.particle_diameter, model.sampling)
    refs = masks.apply(band_limited_image(averages, kx, ky, n), mask)  # solvent flattening
    refs = refs.astype(np.float32).astype(np.float64)
    ssnr = np.zeros((K, n // 2))
    ssnr[:, :L] = ssnr_used

    noise = model.noise_spectra if settings.fix_sigma_noise else update_noise(model, sums)
    top = ext if ext >= 0 else L - 1

    def perturbation(rng, j: int) -> np.ndarray:  # noise of a half-set average: 1 / Den_j(l)
        d = den[j, shell]
        var = np.where((d > 0) & (shell <= top), 1.0 / np.where(d > 0, d, 1.0), 0.0)
        e = np.sqrt(var / 2.0) * (rng.normal(size=var.shape) + 1j * rng.normal(size=var.shape))
        return masks.apply(band_limited_image(e, kx, ky, n), mask)

    fields = reseed.apply(updated_fields(model, sums, settings, refs), sums.best_count, settings,
                          perturbation)
    new = MLF2DModel(
        **fields,
        sigma_noise=0.0,
        noise_spectra=noise,
        group_defocus=model.group_defocus,
        group_sizes=model.group_sizes,
        ssnr=ssnr,
        shell_high=model.shell_high,
        shell_prob=prob,
        shell_ext=ext,
    )
    new.sigma_noise = new.white_noise_std()
    return new
