"""Additive sufficient statistics of one ML2D E-step (spec ``algorithms.md`` §1.6.3, §1.8).

Chunks of particles produce one :class:`Sums` each; ``sum(chunks)`` equals the statistics of
all particles at once (every entry is a plain sum over particles; the reference sums are
already back-rotated and mask-filled, which are linear maps, §1.8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryosnake.classify2d.sums import AdditiveStats


@dataclass
class Sums(AdditiveStats):
    """Sufficient statistics over a set of particles, for ``K`` output classes.

    * ``ref_sum``: ``[K, N, N]`` ``M_k = sum_j MaskFill(Rot_{+psi_j}[S_kj])`` (§1.8); with the
      norm model ``S_kj`` accumulates ``s_i gamma (X_i - b_i)`` (§1.13, clean ML version).
    * ``ref_denominator``: ``[K]`` ``sum_i sum gamma`` (``sum_i s_i^2 sum gamma`` with norm).
    * ``class_weight``, ``mirror_weight``: ``[K]`` ``sum_i n_ik`` and ``sum_i n^mir_ik``.
    * ``noise_sum``: ``sum_i E_noise,i`` (squared intensity, ``sum gamma 2 d``).
    * ``offset_sum``: ``sum_i E_off,i`` (px^2).
    * ``loglik_sum``: ``sum_i LL_i`` (§1.9); ``pmax_sum``: ``sum_i Pmax_i``.
    * ``best_count``: ``[K]`` particles whose most probable class is ``k`` (the class sizes
      the user sees; re-seeding, :mod:`cryosnake.classify2d.reseed`).
    * ``scale_sum``: ``sum_i s_i`` of the updated scales (norm renormalisation; ``n`` otherwise).
    * ``n_images``: number of particles; ``image_size``: ``N``.
    """

    ref_sum: np.ndarray
    ref_denominator: np.ndarray
    class_weight: np.ndarray
    mirror_weight: np.ndarray
    noise_sum: float
    offset_sum: float
    loglik_sum: float
    pmax_sum: float
    best_count: np.ndarray
    scale_sum: float
    n_images: int

    @classmethod
    def zeros(cls, n_classes: int, n: int) -> Sums:
        return cls(
            np.zeros((n_classes, n, n)),
            np.zeros(n_classes),
            np.zeros(n_classes),
            np.zeros(n_classes),
            0.0,
            0.0,
            0.0,
            0.0,
            np.zeros(n_classes),
            0.0,
            0,
        )
