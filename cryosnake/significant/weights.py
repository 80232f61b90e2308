"""Significance and weights of (image, direction) pairs (spec ``algorithms.md`` §3.3, §3.6-3.7).

Notation: ``cc[I, d]``, ``imed[I, d]`` over ``N_img`` images and ``N_dir`` gallery directions;
``alpha`` is the significance level of the iteration (a fraction, e.g. 0.2).

* Per-image CDFs (§3.6.3): ``F_cc(I, d)`` = rank of ``cc(I, d)`` among ``cc(I, .)`` (ascending,
  rank = number of values <= it) / ``N_dir``; ``F_imed`` likewise; ``cc*_I = max_d cc``,
  ``imed*_I = min_d imed``.
* Fisher pre-selection (§3.6.4, ON by default; the program's inverted flag is not reproduced):
  ``cc >= tanh(atanh(cc*_I (1 - alpha)) - 2.96 / sqrt(N_pix))``.
* Significance (§3.6.5): the top ``alpha`` fraction of an image's directions,
  ``rank > N_dir (1 - alpha)`` (so ``alpha = 1 / N_dir`` keeps exactly the best direction,
  V-RS5), and Fisher, and shift-eligible.
* Image weight (§3.6.6): ``w1 = F_cc cc / cc*_I [(1 - F_imed) imed*_I / imed]``.
* Per-direction pool (§3.7, intended version of the angular neighbourhood): for direction ``d``
  the pool holds the correlations of all images with every direction within
  ``angular_neighborhood`` degrees of ``d`` (``d`` included, symmetry-aware);
  ``F_dir(I, d)`` = rank of ``cc(I, d)`` in the pool / pool size; ``cc*_d`` = pool maximum.
  ``angular_neighborhood = 0`` gives Xmipp's effective behaviour (the pool is ``cc(., d)``).
* Strict direction: keep only ``rank_dir > pool_size (1 - alpha)``.
* Final weight: ``w = w1 cc / cc*_d F_dir``; rows with ``w <= 0`` (negative correlations) are
  dropped.

Alpha schedule (Decisions, §3.3): the percentage runs linearly from ``alpha0`` (iteration 1) to
``alphaF`` (last iteration); ``alpha_it = 1 - a_it / 100``. With a symmetry group the gallery
covers one asymmetric unit (``|G+|`` times fewer directions), so alpha is multiplied by
``t_G = |G+|`` (the order of the rotation subgroup; Xmipp's program uses ``|G| - 1``, its
protocol validates with ``|G|``): the same absolute number of directions is kept as for c1. A
level ``alpha0 t_G > 1`` is refused with an error naming the smallest valid ``alpha0``.
"""

from __future__ import annotations

import numpy as np

from cryosnake.volume3d.symmetry import group_order

__all__ = [
    "alpha_percent",
    "check_alpha_symmetry",
    "significance_level",
    "rank_cdf",
    "image_weights",
    "direction_weights",
    "significant_weights",
]


def alpha_percent(alpha0: float, alphaF: float, iteration: int, n_iterations: int) -> float:
    """Significance percentage of ``iteration`` (1-based): linear, ``alphaF`` at the last one."""
    if n_iterations < 1 or not (1 <= iteration <= n_iterations):
        raise ValueError(f"iteration {iteration} outside 1..{n_iterations}")
    if n_iterations == 1:
        return float(alphaF)
    return float(alpha0 + (alphaF - alpha0) * (iteration - 1) / (n_iterations - 1))


def check_alpha_symmetry(alpha0: float, symmetry: str) -> None:
    """Raise ``ValueError`` when ``(1 - alpha0/100) t_G > 1`` (t_G = rotation-group order)."""
    t_g = group_order(symmetry, proper_only=True)
    if not (0.0 <= alpha0 <= 100.0):
        raise ValueError(f"alpha0 must be a percentage in [0, 100], got {alpha0}")
    if (1.0 - alpha0 / 100.0) * t_g > 1.0 + 1e-12:
        smallest = 100.0 * (1.0 - 1.0 / t_g)
        raise ValueError(
            f"alpha0 = {alpha0}% is too low for symmetry {symmetry!r} (t_G = {t_g}): the "
            f"significance level (1 - alpha0/100) * t_G = {(1 - alpha0 / 100) * t_g:.3f} "
            f"exceeds 1. Use alpha0 >= {smallest:.4g} for this group."
        )


def significance_level(alpha0: float, alphaF: float, iteration: int, n_iterations: int,
                       symmetry: str = "c1") -> float:
    """``alpha_it * t_G`` (a fraction in (0, 1]) after checking the seed's alpha0 rule."""
    check_alpha_symmetry(alpha0, symmetry)
    a = alpha_percent(alpha0, alphaF, iteration, n_iterations)
    return float(min(1.0, (1.0 - a / 100.0) * group_order(symmetry, proper_only=True)))


def rank_cdf(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Empirical CDF along ``axis``: (number of values <= each value) / count (ties share)."""
    v = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    n = v.shape[-1]
    s = np.sort(v, axis=-1)
    flat_v = v.reshape(-1, n)
    flat_s = s.reshape(-1, n)
    out = np.empty_like(flat_v)
    for r in range(flat_v.shape[0]):
        out[r] = np.searchsorted(flat_s[r], flat_v[r], side="right")
    return np.moveaxis(out.reshape(v.shape) / n, -1, axis)


def image_weights(cc, imed, alpha: float, fisher: bool = True, eligible=None,
                  n_pix: int | None = None):
    """Per-image significance and weight ``w1`` (§3.6.3-6). Returns ``(w1, significant)``."""
    cc = np.asarray(cc, dtype=np.float64)
    n_img, n_dir = cc.shape
    F_cc = rank_cdf(cc, axis=1)
    cc_best = cc.max(axis=1, keepdims=True)
    sig = F_cc * n_dir > n_dir * (1.0 - alpha) + 1e-6
    if fisher:
        if n_pix is None:
            raise ValueError("n_pix (pixels per image) is needed for the Fisher pre-selection")
        r = np.clip(cc_best * (1.0 - alpha), -0.999999, 0.999999)
        cc_low = np.tanh(np.arctanh(r) - 2.96 / np.sqrt(float(n_pix)))
        sig &= cc >= cc_low
    if eligible is not None:
        sig &= np.asarray(eligible, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        w1 = F_cc * cc / np.where(cc_best > 0, cc_best, np.inf)
        if imed is not None:
            imed = np.asarray(imed, dtype=np.float64)
            F_im = rank_cdf(imed, axis=1)
            imed_best = imed.min(axis=1, keepdims=True)
            w1 = w1 * (1.0 - F_im) * np.where(imed > 0, imed_best / imed, 1.0)
    w1 = np.where(sig, np.nan_to_num(w1), 0.0)
    return w1, sig


def direction_weights(cc, w1, alpha: float, strict: bool = False, neighbours=None):
    """Per-direction re-weighting (§3.7): ``w = w1 cc / cc*_d F_dir`` (strict rule optional).

    ``neighbours`` = ``(indptr, indices)`` from
    :func:`cryosnake.significant.sampling.angular_neighbours` (``None``: each direction alone).
    """
    cc = np.asarray(cc, dtype=np.float64)
    w1 = np.asarray(w1, dtype=np.float64)
    n_img, n_dir = cc.shape
    if neighbours is None:
        indptr, indices = np.arange(n_dir + 1), np.arange(n_dir)
    else:
        indptr, indices = neighbours
    w = np.zeros_like(w1)
    active = np.nonzero((w1 > 0).any(axis=0))[0]
    for d in active:
        pool = np.sort(cc[:, indices[indptr[d]:indptr[d + 1]]].ravel())
        rank = np.searchsorted(pool, cc[:, d], side="right")
        F_dir = rank / len(pool)
        cc_best = pool[-1]
        col = w1[:, d] * F_dir * (cc[:, d] / cc_best if cc_best > 0 else 0.0)
        if strict:
            col = np.where(rank > len(pool) * (1.0 - alpha) + 1e-6, col, 0.0)
        w[:, d] = np.where(w1[:, d] > 0, col, 0.0)
    w[~(w > 0)] = 0.0
    return w


def significant_weights(cc, imed, alpha: float, *, fisher: bool = True, strict: bool = False,
                        neighbours=None, eligible=None, n_pix: int | None = None) -> np.ndarray:
    """Final weights ``w[I, d]`` (§3.6-3.7); zero for non-significant pairs."""
    w1, _ = image_weights(cc, imed, alpha, fisher=fisher, eligible=eligible, n_pix=n_pix)
    return direction_weights(cc, w1, alpha, strict=strict, neighbours=neighbours)
