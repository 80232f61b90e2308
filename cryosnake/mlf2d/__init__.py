"""MLF2D: maximum-likelihood multi-reference 2D alignment and classification in Fourier space
with the CTF and coloured noise (spec ``algorithms.md`` §2; Scheres et al. 2007, Xmipp
``mlf_align2d``). Shares with ML2D the core of :mod:`cryosnake.classify2d` (hypotheses, pose
convention, per-particle state, fractions and convergence, re-seeding) and extends its model
and settings (:class:`~cryosnake.ml2d.ML2DModel`, :class:`~cryosnake.ml2d.ML2DSettings`).

Workflow interface (one E-step job per particle chunk, one M-step that gathers)::

    stats = start_statistics(images, ctf, groups, ...)          # chunk by chunk, additive
    model = start_model(stats, settings, sampling, box, group_defocus, references=None)
    sums, assignments, new_state = estep(images, model, settings, ctf, groups, state)
    new_model = mstep(model, sums_of_all_chunks, settings)

Modules: :mod:`.settings`, :mod:`.model`, :mod:`.sums`, :mod:`.fourier` (points, shells,
flips), :mod:`.groups` (CTF per particle, defocus groups), :mod:`.wiener` (SSNR, Wiener
filters, resolution limits), :mod:`.initial`, :mod:`.estep`, :mod:`.mstep`, :mod:`.strategy`
(MLF2D for the jobs, :mod:`cryosnake.classify2d.strategy`), :mod:`.run`.
"""

from .estep import estep
from .groups import (
    DefocusGroups,
    defocus_groups,
    particle_ctf,
    particle_groups,
    resolve_phase_flipped,
)
from .initial import StartStatistics, start_model, start_statistics
from .model import MLF2DModel
from .mstep import mstep
from .settings import MLF2DSettings
from .sums import MLF2DSums

__all__ = [
    "DefocusGroups",
    "MLF2DModel",
    "MLF2DSettings",
    "MLF2DSums",
    "StartStatistics",
    "defocus_groups",
    "estep",
    "mstep",
    "particle_ctf",
    "particle_groups",
    "resolve_phase_flipped",
    "start_model",
    "start_statistics",
]
