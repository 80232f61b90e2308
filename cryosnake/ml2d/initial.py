"""Initial ML2D models (spec ``algorithms.md`` §1.11 and Decisions).

"Generate classes": the model starts from ONE reference, the plain average of all images
(:func:`initial_model_from_average`); iteration 0 is a full E-step against it in which the
statistics of each image go to its random group
(:func:`cryosnake.classify2d.classes.random_group_labels`, passed as ``group_labels`` to
:func:`cryosnake.ml2d.estep`), so the M-step yields ``K`` ML-aligned
averages of ``K`` random disjoint subsets.
"""

from __future__ import annotations

import numpy as np

from cryosnake import masks

from .model import ML2DModel
from .settings import ML2DSettings


def image_sum(images, batch: int = 1024) -> np.ndarray:
    """Sum of ``[n, N, N]`` images in float64 (chunk by chunk; add chunk sums, divide by n)."""
    total = np.zeros(images.shape[1:], dtype=np.float64)
    for i in range(0, images.shape[0], batch):
        total += np.asarray(images[i : i + batch], dtype=np.float64).sum(axis=0)
    return total


def _start(settings: ML2DSettings, k: int) -> dict:
    return {
        "class_fractions": np.full(k, 1.0 / k),
        "mirror_fractions": np.full(k, 0.5 if settings.mirror else 0.0),
        "sigma_noise": float(settings.noise_std),
        "sigma_offset": float(settings.offset_std),
    }


def _masked(refs: np.ndarray, settings: ML2DSettings, sampling: float) -> np.ndarray:
    mask = masks.particle_mask(refs.shape[-1], settings.particle_diameter, sampling)
    return masks.apply(refs, mask).astype(np.float32).astype(np.float64)


def initial_model_from_average(average: np.ndarray, settings: ML2DSettings,
                               sampling: float = 1.0) -> ML2DModel:
    """One-reference model (the average of all images) before iteration 0 (``iteration=-1``);
    ``sampling``: Å/px (the scale of ``settings.particle_diameter``)."""
    ref = _masked(np.asarray(average, dtype=np.float64)[None], settings, sampling)
    return ML2DModel(references=ref, iteration=-1, sampling=sampling, **_start(settings, 1))


def initial_model_from_references(references: np.ndarray, settings: ML2DSettings,
                                  sampling: float = 1.0) -> ML2DModel:
    """Model from user references ``[K, N, N]`` (``iteration=0``; iteration 1 comes next)."""
    refs = np.asarray(references, dtype=np.float64)
    if refs.ndim == 2:
        refs = refs[None]
    refs = _masked(refs, settings, sampling)
    return ML2DModel(references=refs, iteration=0, sampling=sampling,
                     **_start(settings, refs.shape[0]))
