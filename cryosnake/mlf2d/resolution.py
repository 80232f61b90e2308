"""Resolution limits of MLF2D that follow the data (spec §2.4, ``adaptive_resolution``).

Xmipp's MLF2D grows the limit of the likelihood from the SSNR of the class averages, a few
shells per iteration; with a fixed limit, shells that hold only noise enter the likelihood
from the first iteration and the classes fit noise. With ``adaptive_resolution``:

* the first E-step uses the shells up to ``initial_resolution`` (Å): ``l_prob``; the
  references and the noise are also estimated on ``extension_shells`` more (``l_ext``);
* after every M-step, the SSNR of each class average is measured on every estimated shell
  from the data, ``SSNR_k(l) = <|Abar_k|^2>_l Den_k(l) - 1`` (the power of the CTF-corrected
  average over the power of its noise, ``1 / Den_k``, bias-corrected), and averaged over the
  classes with their weights; ``l_prob`` becomes the last shell of the first run of shells
  (from shell 1) where it is ``>= 1``, and ``l_ext = l_prob + extension_shells``, both capped
  by ``l_high`` (``high_res_limit``). The limit thus grows by at most ``extension_shells``
  per iteration, and falls back where the classes lose their signal.
"""

from __future__ import annotations

import numpy as np

from .fourier import shell_of_resolution


def initial_limits(settings, n: int, sampling: float) -> tuple[int, int, int]:
    """``(l_high, l_prob, l_ext)`` of the start model (``l_prob = l_ext = -1``: fixed at
    ``l_high``)."""
    high = shell_of_resolution(settings.high_res_limit, n, sampling)
    if not settings.adaptive_resolution:
        return high, -1, -1
    prob = min(high, max(1, shell_of_resolution(settings.initial_resolution, n, sampling)))
    return high, prob, min(high, prob + settings.extension_shells)


def data_ssnr(average_power: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``max(0, <|Abar|^2>_l Den(l) - 1)`` per class and shell (``[K, L]`` each)."""
    return np.maximum(0.0, average_power * denominator - 1.0)


def next_limits(ssnr: np.ndarray, weights: np.ndarray, high: int, floor: int,
                extension: int, beyond: int = 0) -> tuple[int, int]:
    """``(l_prob, l_ext)`` from the data SSNR ``[K, L]`` (shells ``0 .. L - 1``) of the
    classes with ``weights`` ``[K]``; ``l_prob`` stays within ``floor .. high``."""
    total = weights.sum()
    mean = (weights @ ssnr) / total if total > 0 else ssnr.max(axis=0)
    low = np.flatnonzero(mean[1:] < 1.0)
    last = (low[0] if low.size else mean.size - 1)  # shells 1 .. last have SSNR >= 1
    prob = int(min(high, max(floor, last + beyond)))
    return prob, int(min(high, prob + extension))
