"""ML2D: maximum-likelihood multi-reference 2D alignment and classification in real space
(spec ``algorithms.md`` §1; Scheres et al. 2005, Xmipp ``ml_align2d``).

Workflow interface (one E-step job per particle chunk, one M-step that gathers)::

    sums, assignments, new_state = estep(images, model, settings, state, group_labels=None)
    new_model = mstep(model, sums_of_all_chunks, settings)

Modules: :mod:`.settings`, :mod:`.model`, :mod:`.state`, :mod:`.sums`, :mod:`.hypotheses`
(the discrete search space), :mod:`.references` (rotated reference bank), :mod:`.estep`,
:mod:`.mstep`, :mod:`.initial` (initial models), :mod:`.poses` (output pose convention),
:mod:`.strategy` (ML2D for the jobs, :mod:`cryosnake.classify2d.strategy`), :mod:`.run`
(in-memory loop).
"""

from .estep import estep
from .model import ML2DModel
from .mstep import mstep
from .poses import apply_pose, hypothesis_to_pose
from .settings import ML2DSettings
from .state import ParticleState
from .sums import Sums

__all__ = [
    "ML2DModel",
    "ML2DSettings",
    "ParticleState",
    "Sums",
    "apply_pose",
    "estep",
    "hypothesis_to_pose",
    "mstep",
]
