"""In-memory MLF2D driver (spec §2.10): the loop the Snakemake rules run job by job.

Used by the tests and the benchmark; the workflow instead calls :func:`~cryosnake.mlf2d.estep`
per chunk, adds the :class:`~cryosnake.mlf2d.MLF2DSums` and calls
:func:`~cryosnake.mlf2d.mstep`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cryosnake.classify2d.classes import random_group_labels
from cryosnake.classify2d.strategy import join_assignments
from cryosnake.kernels import cpu

from .estep import estep
from .groups import defocus_groups
from .initial import start_model, start_statistics
from .model import MLF2DModel
from .mstep import mstep
from .settings import MLF2DSettings


def run_mlf2d(
    images: np.ndarray,
    ctf,
    sampling: float,
    settings: MLF2DSettings,
    references: np.ndarray | None = None,
    max_iterations: int | None = None,
    chunk_size: int | None = None,
    backend=cpu,
    callback: Callable[[MLF2DModel, dict], None] | None = None,
) -> tuple[MLF2DModel, dict, list[MLF2DModel]]:
    """Run MLF2D to convergence (or ``max_iterations``, default ``settings.max_iterations``).

    ``ctf``: :class:`cryosnake.ctf.CTFParams` of all particles (ignored, and may be ``None``,
    when ``settings.ctf_correction`` is off); ``sampling``: Å/px. ``references=None``:
    "generate classes" with ``settings.n_classes``, iteration 0 included. Returns the last
    model, the last assignments and the list of models after every M-step.
    """
    n = images.shape[0]
    ctf = ctf if settings.ctf_correction else None
    iters = settings.max_iterations if max_iterations is None else int(max_iterations)
    chunk = n if chunk_size is None else int(chunk_size)
    bounds = [(a, min(n, a + chunk)) for a in range(0, n, chunk)]
    groups, group_defocus = defocus_groups(ctf, n, settings.defocus_bin, settings.min_group_size)
    stats = start_statistics(images, ctf, groups, len(group_defocus), sampling, settings, backend)
    model = start_model(stats, settings, sampling, images.shape[-1], group_defocus,
                        references)
    labels = (random_group_labels(n, settings.n_classes, settings.seed) if references is None
              else None)
    states = [None] * len(bounds)
    history: list[MLF2DModel] = []
    assignments: dict = {}
    while model.iteration < iters and not model.converged:
        parts = []
        for c, (a, b) in enumerate(bounds):
            sub = None if ctf is None else ctf.subset(np.arange(a, b))
            lab = None if labels is None or model.iteration >= 0 else labels[a:b]
            state = None if model.iteration <= 0 else states[c]
            parts.append(estep(images[a:b], model, settings, sub, groups[a:b], state, lab,
                               backend))
            states[c] = parts[-1][2]
        total = sum(p[0] for p in parts)
        assignments = join_assignments(p[1] for p in parts)
        model = mstep(model, total, settings)
        history.append(model)
        if callback:
            callback(model, assignments)
    return model, assignments, history
