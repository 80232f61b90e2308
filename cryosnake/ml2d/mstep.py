"""ML2D M-step (spec ``algorithms.md`` §1.8, §1.9, §1.10, §1.13)."""

from __future__ import annotations

import math

import numpy as np

from cryosnake import masks
from cryosnake.classify2d import reseed
from cryosnake.classify2d.mstep import updated_fields

from .model import ML2DModel
from .settings import ML2DSettings
from .sums import Sums


def update_references(sums: Sums) -> np.ndarray:
    """``A_k = M_k / sum_i sum gamma`` (``/ sum_i s_i^2 sum gamma`` with norm), §1.8/§1.13.

    A class with zero weight gets an all-zero reference (dead class; never revived, trap 9).
    """
    refs = np.zeros_like(sums.ref_sum)
    alive = (sums.class_weight + sums.mirror_weight > 0) & (sums.ref_denominator > 0)
    refs[alive] = sums.ref_sum[alive] / sums.ref_denominator[alive, None, None]
    return refs


def mstep(model: ML2DModel, sums: Sums, settings: ML2DSettings) -> ML2DModel:
    """New model from the summed statistics of all chunks (§1.8-§1.10).

    * references ``A_k`` (:func:`update_references`); with norm, multiplied by the mean of the
      updated scales, which renormalises the mean scale to 1 (stored in ``norm_scale_mean`` for
      the next E-step, §1.13);
    * ``alpha_k = (n_k + n^mir_k) / Ntot``, ``m_k = n^mir_k / (n_k + n^mir_k)``;
    * ``sigma^2 = sum E_noise / (Ntot D)`` (``D``: the pixels, or ``sum M^2`` inside the
      particle mask, whose flattening the references also get), ``xi^2 = sum E_off / (2 Ntot)``;
    * ``loglik = sum LL_i``, ``ave_pmax = sum Pmax_i / Ntot``;
    * signal change ``1000 delta_k`` and convergence (all ``delta_k < eps``; never at
      iteration 0 or when the number of classes changes);
    * with ``reseed_fraction``, near-empty classes re-seeded from the largest
      (:mod:`cryosnake.classify2d.reseed`; perturbation: white noise of variance ``sigma^2 / n_j``).

    References are rounded to float32 so that saving and re-loading the model is lossless.
    """
    D = masks.noise_pixels(sums.image_size, settings.particle_diameter, model.sampling)
    weights = sums.class_weight + sums.mirror_weight
    ntot = float(weights.sum())
    mask = masks.particle_mask(sums.image_size, settings.particle_diameter, model.sampling)
    refs = masks.apply(update_references(sums), mask)  # solvent flattening
    scale_mean = 1.0
    if settings.norm and sums.n_images > 0:
        scale_mean = sums.scale_sum / sums.n_images
        refs *= scale_mean
    refs = refs.astype(np.float32).astype(np.float64)

    sigma_noise = model.sigma_noise
    if not settings.fix_sigma_noise and ntot > 0:
        sigma_noise = math.sqrt(sums.noise_sum / (ntot * D))
    def perturbation(rng, j: int) -> np.ndarray:  # the noise of a half-set average: sigma^2/n_j
        return masks.apply(rng.normal(0.0, sigma_noise / math.sqrt(weights[j]), refs.shape[1:]),
                           mask)

    fields = reseed.apply(updated_fields(model, sums, settings, refs), sums.best_count, settings,
                          perturbation)
    return ML2DModel(
        **fields,
        sigma_noise=sigma_noise,
        norm_scale_mean=scale_mean,
    )
