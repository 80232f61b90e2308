"""ML2D: maximum-likelihood multi-reference 2D alignment and classification in real space
(spec ``algorithms.md`` §1; Scheres et al. 2005, Xmipp ``ml_align2d``).

Workflow interface (one E-step job per particle chunk, one M-step that gathers)::

    sums, assignments, new_state = estep(images, model, settings, state, group_labels=None)
    new_model = mstep(model, sums_of_all_chunks, settings)

Modules: :mod:`.settings`, :mod:`.model`, :mod:`.sums`, :mod:`.references` (rotated reference
bank), :mod:`.estep`, :mod:`.mstep`, :mod:`.initial` (initial models), :mod:`.strategy` (ML2D
for the jobs, :mod:`cryosnake.classify2d.strategy`), :mod:`.run` (in-memory loop). What MLF2D
shares with it (hypotheses, poses, per-particle state, fractions and convergence, re-seeding)
is in :mod:`cryosnake.classify2d`; the files in :mod:`cryosnake.io.classify2d`.
"""

from .estep import estep
from .model import ML2DModel
from .mstep import mstep
from .settings import ML2DSettings
from .sums import Sums

__all__ = [
    "ML2DModel",
    "ML2DSettings",
    "Sums",
    "estep",
    "mstep",
]
