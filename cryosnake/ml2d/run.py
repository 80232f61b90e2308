"""In-memory ML2D driver (spec §1.10): the loop the Snakemake rules run job by job.

Used by the tests and the benchmark; the workflow instead calls :func:`~cryosnake.ml2d.estep`
per chunk, adds the :class:`~cryosnake.ml2d.Sums` and calls :func:`~cryosnake.ml2d.mstep`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cryosnake.classify2d.classes import random_group_labels
from cryosnake.classify2d.state import ParticleState
from cryosnake.classify2d.strategy import join_assignments
from cryosnake.kernels import cpu

from .estep import estep
from .initial import image_sum, initial_model_from_average, initial_model_from_references
from .model import ML2DModel
from .mstep import mstep
from .settings import ML2DSettings
from .sums import Sums


def estep_chunked(
    images, model, settings, states, group_labels=None, chunk_size=None, backend=cpu
):
    """E-step over ``images`` in chunks; returns summed Sums, joined assignments and states."""
    n = images.shape[0]
    chunk = n if chunk_size is None else int(chunk_size)
    sums, assigns, new_states = [], [], []
    for c, i0 in enumerate(range(0, n, chunk)):
        sl = slice(i0, min(n, i0 + chunk))
        labels = None if group_labels is None else group_labels[sl]
        s, a, st = estep(images[sl], model, settings, states[c], labels, backend=backend)
        sums.append(s)
        assigns.append(a)
        new_states.append(st)
    total: Sums = sum(sums[1:], sums[0])
    return total, join_assignments(assigns), new_states


def run_ml2d(
    images: np.ndarray,
    settings: ML2DSettings,
    references: np.ndarray | None = None,
    max_iterations: int | None = None,
    chunk_size: int | None = None,
    backend=cpu,
    callback: Callable[[ML2DModel, dict], None] | None = None,
    sampling: float = 1.0,
) -> tuple[ML2DModel, dict, list[ML2DModel]]:
    """Run ML2D to convergence (or ``max_iterations``, default ``settings.max_iterations``).

    ``references=None``: "generate classes" with ``settings.n_classes`` (§1.11), iteration 0
    included. Returns the last model, the last assignments and the list of models (history).
    ``callback(model, assignments)`` is called after every M-step. ``sampling``: Å/px (the
    scale of ``settings.particle_diameter``).
    """
    n = images.shape[0]
    iters = settings.max_iterations if max_iterations is None else int(max_iterations)
    chunk = n if chunk_size is None else int(chunk_size)
    n_chunks = -(-n // chunk)
    bounds = [(i, min(n, i + chunk)) for i in range(0, n, chunk)]
    history: list[ML2DModel] = []
    assignments: dict = {}

    def iterate(model, states, labels):
        sums, assignments, states = estep_chunked(
            images, model, settings, states, labels, chunk, backend
        )
        model = mstep(model, sums, settings)
        history.append(model)
        if callback:
            callback(model, assignments)
        return model, assignments, states

    if references is None:
        model = initial_model_from_average(image_sum(images) / n, settings, sampling)
        labels = random_group_labels(n, settings.n_classes, settings.seed)
        states = [ParticleState.initial(b - a, 1, settings) for a, b in bounds]
        model, assignments, states = iterate(model, states, labels)
    else:
        model = initial_model_from_references(references, settings, sampling)
        states = [ParticleState.initial(b - a, model.n_classes, settings) for a, b in bounds]
    assert len(states) == n_chunks
    while model.iteration < iters and not model.converged:
        model, assignments, states = iterate(model, states, None)
    return model, assignments, history
