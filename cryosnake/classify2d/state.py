"""Per-particle state carried from one ML2D or MLF2D iteration to the next (spec §1.12, §1.13,
§2.7).

One :class:`ParticleState` covers one chunk of particles (the workflow keeps one file per
chunk per iteration, :mod:`cryosnake.io.classify2d`), so every array is indexed by the
particle's row in its chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INVALID_OFFSET = -999
"""Marker of an unknown fast-mode offset: the first fast iteration is complete (§1.12)."""


@dataclass
class ParticleState:
    """State of ``n`` particles for a model with ``K`` classes.

    * ``offsets``: int32 ``[n, K, 2, 2]`` -- fast mode (§1.12): physical optimal translation
      ``t*`` (px, last axis ``(x, y)``) per class and mirror flag (axis 2: ``mu = 0, 1``) from
      the previous iteration; :data:`INVALID_OFFSET` when unknown. MLF2D: the stored
      physical offsets ``t_ikmu`` its limited search is centred on (§2.7).
    * ``norm_scale``: ``[n]`` intensity scale ``s_i`` (norm model §1.13; 1 without it), relative
      to the references of the model the E-step that wrote it worked with: the next E-step uses
      ``s_i / model.norm_scale_mean`` (the M-step's renormalisation of the mean scale to 1).
    * ``background``: ``[n]`` background offset ``b_i`` (intensity units; 0 without norm).
    """

    offsets: np.ndarray
    norm_scale: np.ndarray
    background: np.ndarray

    @property
    def n_particles(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.offsets.shape[1])

    @classmethod
    def initial(cls, n: int, n_classes: int, settings=None) -> ParticleState:
        """Start: unknown offsets (0 with ``settings.zero_offsets``), ``s = 1``, ``b = 0``."""
        fill = 0 if (settings is not None and settings.zero_offsets) else INVALID_OFFSET
        return cls(
            offsets=np.full((n, n_classes, 2, 2), fill, dtype=np.int32),
            norm_scale=np.ones(n),
            background=np.zeros(n),
        )

    def subset(self, index) -> ParticleState:
        """The state of the particles ``index`` (slice or integer array)."""
        return ParticleState(
            self.offsets[index].copy(), self.norm_scale[index].copy(), self.background[index].copy()
        )

    @classmethod
    def concatenate(cls, states) -> ParticleState:
        """Join chunk states in order."""
        states = list(states)
        return cls(
            np.concatenate([s.offsets for s in states]),
            np.concatenate([s.norm_scale for s in states]),
            np.concatenate([s.background for s in states]),
        )
