"""Additive sufficient statistics of one MLF2D E-step (spec ``algorithms.md`` §2.8, §2.9).

One :class:`MLF2DSums` per particle chunk; ``sum(chunks)`` equals the statistics of all
particles (every field is a plain sum over particles; the reference numerators are already
back-rotated, a linear map).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryosnake.classify2d.sums import AdditiveStats


@dataclass
class MLF2DSums(AdditiveStats):
    """Statistics for ``K`` output classes, ``G`` defocus groups and ``L = N//2`` shells.

    * ``ref_sum``: ``[K, N, N]`` ``M_k = sum_j Rot_{+psi_j}[IFFT(F_kj)]`` with
      ``F_kj(k) = sum_i sum_{f,u} gamma CTF_i(F_f k) / sigma^2_{g_i}(l) FT(G_f Sh_{-u} X_i)(k)``
      on the points with ``l <= l_ext`` (the CTF- and noise-weighted images in the frame of
      the rotated reference ``psi_j``).
    * ``ref_denominator``: ``[K, L]`` ``Den_k(l) = sum_i sum_{h in k} gamma <CTF_i^2>_l /
      sigma^2_{g_i}(l)`` (``<.>_l``: mean over the points of shell ``l``).
    * ``point_denominator``: ``[K, N, N//2 + 1]`` on the ``rfft2`` grid, ``sum_i sum_{h in k}
      gamma <CTF_i^2>_ring(|k|) / sigma^2_{g_i}(l)`` (``settings.point_denominator``; ``[K, 0]``
      when off).
    * ``class_weight``, ``mirror_weight``: ``[K]`` as ML2D.
    * ``noise_sum``: ``[G, L]`` ``sum_{i in g} sum_h gamma sum_{k in l} |FT(G_f Sh_{-u} X_i) -
      CTF c A_kj|^2`` (expected residual power per shell).
    * ``group_count``: ``[G]`` particles per group in this chunk.
    * ``offset_sum`` (``sum gamma |u|^2``, px^2), ``loglik_sum``, ``pmax_sum``, ``n_images``,
      ``best_count`` ``[K]`` as ML2D.
    """

    ref_sum: np.ndarray
    ref_denominator: np.ndarray
    point_denominator: np.ndarray
    class_weight: np.ndarray
    mirror_weight: np.ndarray
    noise_sum: np.ndarray
    group_count: np.ndarray
    offset_sum: float
    loglik_sum: float
    pmax_sum: float
    best_count: np.ndarray
    n_images: int

    @classmethod
    def zeros(cls, n_classes: int, n: int, n_groups: int, point_denominator: bool = False
              ) -> MLF2DSums:
        L = n // 2
        return cls(np.zeros((n_classes, n, n)), np.zeros((n_classes, L)),
                   np.zeros((n_classes, n, L + 1) if point_denominator else (n_classes, 0)),
                   np.zeros(n_classes),
                   np.zeros(n_classes), np.zeros((n_groups, L)), np.zeros(n_groups), 0.0, 0.0,
                   0.0, np.zeros(n_classes), 0)
