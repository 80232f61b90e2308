"""ML2D M-step (spec ``algorithms.md`` §1.8, §1.9, §1.10, §1.13)."""

from __future__ import annotations

import math

import numpy as np

from cryosnake import masks

from . import reseed
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


def signal_change(old: np.ndarray, new: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``delta_k = mean (A_old - A)^2 / mean A_old^2`` per class (§1.10); NaN where undefined."""
    den = (old**2).mean(axis=(-2, -1))
    num = ((old - new) ** 2).mean(axis=(-2, -1))
    ok = (weights > 0) & (den > 0)
    return np.where(ok, num / np.where(ok, den, 1.0), np.nan)


def _class_and_mirror_fractions(model, sums, settings) -> tuple[np.ndarray, np.ndarray]:
    """``alpha_k = (n_k + n^mir_k) / Ntot`` and ``m_k = n^mir_k / (n_k + n^mir_k)`` (§1.8).

    ``fix_fractions`` keeps the model's (unless the number of classes changed); without
    mirrors ``m_k = 0``; an empty class gets ``m_k = 0.5``. Shared by ML2D and MLF2D.
    """
    K = sums.n_classes
    weights = sums.class_weight + sums.mirror_weight
    ntot = float(weights.sum())
    if settings.fix_fractions and K == model.n_classes:
        return model.class_fractions.copy(), model.mirror_fractions.copy()
    alpha = weights / ntot if ntot > 0 else np.full(K, 1.0 / K)
    if not settings.mirror:
        return alpha, np.zeros(K)
    with np.errstate(invalid="ignore", divide="ignore"):
        return alpha, np.where(weights > 0, sums.mirror_weight / weights, 0.5)


def updated_fields(model, sums, settings, refs: np.ndarray) -> dict:
    """The model fields that ML2D and MLF2D update alike, as keyword arguments of the new model:
    references ``refs``, ``alpha_k``, ``m_k``, ``xi``, the iteration number, LL, <Pmax>,
    ``1000 delta_k``, convergence, class weights and the number of images (§1.8-§1.10)."""
    weights = sums.class_weight + sums.mirror_weight
    ntot = float(weights.sum())
    alpha, mfrac = _class_and_mirror_fractions(model, sums, settings)
    change, converged = _convergence(model, refs, weights, settings)
    return dict(
        references=refs,
        class_fractions=alpha,
        mirror_fractions=mfrac,
        sigma_offset=_offset_std(model, sums, settings),
        iteration=model.iteration + 1,
        loglik=sums.loglik_sum,
        ave_pmax=sums.pmax_sum / ntot if ntot > 0 else float("nan"),
        signal_change=change,
        converged=converged,
        class_weights=weights,
        n_images=sums.n_images,
        sampling=model.sampling,
    )


def _offset_std(model, sums, settings) -> float:
    """``xi = sqrt(sum E_off / (2 Ntot))`` (§1.8; the model's with ``fix_sigma_offset``)."""
    ntot = float((sums.class_weight + sums.mirror_weight).sum())
    if settings.fix_sigma_offset or ntot <= 0:
        return model.sigma_offset
    return math.sqrt(sums.offset_sum / (2.0 * ntot))


def _convergence(model, refs: np.ndarray, weights: np.ndarray, settings) -> tuple[np.ndarray, bool]:
    """``(1000 delta_k, converged)`` of the new references (§1.10): converged when every
    defined ``delta_k < eps``; never at iteration 0 or when the number of classes changes."""
    if refs.shape[0] == model.n_classes and model.iteration + 1 > 0:
        delta = signal_change(model.references, refs, weights)
        defined = np.isfinite(delta)
        converged = bool(defined.any() and np.all(delta[defined] < settings.eps))
    else:
        delta = np.full(refs.shape[0], np.nan)
        converged = False
    return 1000.0 * delta, converged


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
      (:mod:`.reseed`; perturbation: white noise of variance ``sigma^2 / n_j``).

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
