"""The M-step updates that ML2D and MLF2D share (spec ``algorithms.md`` §1.8-§1.10, §2.9):
class and mirror fractions, the offset spread ``xi``, the diagnostics and convergence.
Each M-step (:func:`cryosnake.ml2d.mstep`, :func:`cryosnake.mlf2d.mstep`) computes its own
references and noise model and takes the rest from :func:`updated_fields`."""

from __future__ import annotations

import math

import numpy as np


def signal_change(old: np.ndarray, new: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``delta_k = mean (A_old - A)^2 / mean A_old^2`` per class (§1.10); NaN where undefined."""
    den = (old**2).mean(axis=(-2, -1))
    num = ((old - new) ** 2).mean(axis=(-2, -1))
    ok = (weights > 0) & (den > 0)
    return np.where(ok, num / np.where(ok, den, 1.0), np.nan)


def _class_and_mirror_fractions(model, sums, settings) -> tuple[np.ndarray, np.ndarray]:
    """``alpha_k = (n_k + n^mir_k) / Ntot`` and ``m_k = n^mir_k / (n_k + n^mir_k)`` (§1.8).

    ``fix_fractions`` keeps the model's (unless the number of classes changed); without
    mirrors ``m_k = 0``; an empty class gets ``m_k = 0.5``.
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
    converged = converged or likelihood_settled(model, sums, settings)
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


def likelihood_settled(model, sums, settings) -> bool:
    """Whether the log-likelihood has stopped moving (``settings.loglik_tolerance`` > 0; not in
    the seed): the E-step just summed in ``sums`` changed the log-likelihood of the previous
    one (``model.loglik``) by less than ``loglik_tolerance`` nats per image, either sign.

    The seed's test (every ``delta_k < eps``) is left to the noise at low SNR: MLF2D at SNR
    0.05 with CTF gains < 0.005 nats per particle per iteration from iteration 31, while its
    largest ``1000 delta_k`` wanders between 0.05 and 0.16 up to iteration 79 (issue 16).
    Never before both E-steps compare ``K`` references (``model.iteration >= 1``), nor while
    the gain may come from a re-seeded class (the previous M-step ``<= reseed_iterations``
    with ``reseed_fraction > 0``; a re-seeding M-step also resets convergence itself)."""
    tolerance = settings.loglik_tolerance
    if tolerance <= 0 or model.iteration < 1 or sums.n_images <= 0:
        return False
    if settings.reseed_fraction > 0 and model.iteration <= settings.reseed_iterations:
        return False
    if not (math.isfinite(model.loglik) and math.isfinite(sums.loglik_sum)):
        return False
    return abs(sums.loglik_sum - model.loglik) / sums.n_images < tolerance


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
