"""Scores against a known truth (the demo check, tests and benchmarks): class recovery and the
fidelity of 2D averages to clean views.

* :func:`adjusted_rand_index`: agreement of two labelings (1 = the same partition, ~0 = chance).
* :func:`aligned_ncc`: normalised cross-correlation of images with views after the best
  in-plane rotation, mirror and integer shift, inside a mask.
"""

from __future__ import annotations

import numpy as np

from cryosnake.kernels import cpu


def adjusted_rand_index(a, b) -> float:
    """Hubert-Arabie adjusted Rand index of two labelings of the same items."""
    _, a = np.unique(np.asarray(a), return_inverse=True)
    _, b = np.unique(np.asarray(b), return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)

    def pairs(x):
        return (x * (x - 1) / 2).sum()

    n = len(a)
    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2)
    top = (rows + cols) / 2
    return float((index - expected) / (top - expected)) if top != expected else 1.0


def soft_mask(n: int, radius: float, edge: float = 3.0) -> np.ndarray:
    """Circular mask about ``N // 2`` with a raised-cosine edge of ``edge`` px."""
    r = np.hypot(*np.mgrid[:n, :n] - n // 2)
    return np.clip(0.5 + 0.5 * np.cos(np.pi * np.clip((r - radius) / edge, 0, 1)), 0, 1)


def masked_unit(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``images`` ``[n, N, N]`` times ``mask``, their mean inside the mask removed, scaled to
    unit norm (an image that is zero there stays zero): dot products are then NCCs."""
    out = images * mask
    out -= (out.sum((1, 2)) / mask.sum())[:, None, None] * mask
    norm = np.sqrt((out**2).sum((1, 2)))
    norm[norm == 0] = 1.0
    return out / norm[:, None, None]


def aligned_ncc(images: np.ndarray, views: np.ndarray, mask: np.ndarray,
                psi_step: float = 2.0) -> np.ndarray:
    """``[n_images, n_views]``: the largest normalised cross-correlation of each image with
    each view over in-plane rotations (``psi_step``), mirror and integer cyclic shifts,
    inside ``mask``."""
    n = images.shape[-1]
    angles = np.arange(0.0, 360.0, psi_step)
    vf = np.conj(np.fft.rfft2(masked_unit(views, mask)))
    out = np.full((len(images), len(views)), -1.0)
    for i, img in enumerate(np.asarray(images, np.float64)):
        for mirrored in (img, img[:, (2 * (n // 2) - np.arange(n)) % n]):
            rot = cpu.rotate_images(np.repeat(mirrored[None], len(angles), 0), angles, order=1)
            rf = np.fft.rfft2(masked_unit(rot, mask))
            for v in range(len(views)):
                cc = np.fft.irfft2(rf * vf[v], s=(n, n))
                out[i, v] = max(out[i, v], cc.max())
    return out
