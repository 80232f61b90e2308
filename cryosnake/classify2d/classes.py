"""The output classes of an E-step (spec ``algorithms.md`` §1.11, §2.2): the random groups
of iteration 0 of "generate classes", and the check of a chunk of particles against the model,
for ML2D and MLF2D alike."""

from __future__ import annotations

import numpy as np

from .state import ParticleState


def random_group_labels(n_images: int, n_classes: int, seed: int) -> np.ndarray:
    """Random groups of equal size (``±1``): contiguous blocks of a seeded shuffle (§1.11).

    Returns ``int64 [n_images]`` labels in ``0 .. n_classes - 1``; image ``perm[r]`` (``r``-th
    in the shuffled order) gets ``floor(r K / n)``.
    """
    perm = np.random.default_rng(seed).permutation(n_images)
    labels = np.empty(n_images, dtype=np.int64)
    labels[perm] = (np.arange(n_images) * n_classes) // max(n_images, 1)
    return labels


def output_classes(images, n: int, state: ParticleState, n_model_classes: int,
                   group_labels, n_classes: int) -> tuple[np.ndarray | None, int]:
    """Check a chunk against the model and return ``(group_labels, K_out)`` .

    ``images`` must be ``n x n``, ``state`` for these particles and the model's classes; with
    ``group_labels`` (iteration 0 of "generate classes") the statistics go to ``n_classes``
    output classes, otherwise to the model's ``n_model_classes``.
    """
    m = int(images.shape[0])
    if images.shape[1:] != (n, n):
        raise ValueError(f"images are {images.shape[1:]}, the model's references {(n, n)}")
    if state.n_particles != m or state.n_classes != n_model_classes:
        raise ValueError(
            f"state is for {state.n_particles} particles x {state.n_classes} classes, "
            f"the E-step has {m} particles x {n_model_classes} classes"
        )
    if group_labels is None:
        return None, n_model_classes
    group_labels = np.asarray(group_labels, dtype=np.int64).reshape(m)
    if m and (group_labels.min() < 0 or group_labels.max() >= n_classes):
        raise ValueError(f"group_labels must lie in 0..{n_classes - 1}")
    return group_labels, int(n_classes)
