"""ML2D as a :class:`~cryosnake.classify2d.strategy.Classifier2D`: the operations the
workflow's jobs call, on arrays (the jobs read and write the files)."""

from __future__ import annotations

import numpy as np

from cryosnake.classify2d.strategy import settings_keywords

from .estep import estep
from .initial import initial_model_from_average, initial_model_from_references
from .model import ML2DModel
from .mstep import mstep
from .settings import ML2DSettings
from .sums import Sums


class ML2D:
    """Real-space ML2D (spec §1): one global average or the user references to start, no
    per-particle data besides the images."""

    name = "ML2D"
    model_type = ML2DModel
    sums_type = Sums
    groups_type = None  # no defocus groups

    def settings(self, ml2d_cfg: dict, table=None) -> ML2DSettings:
        return ML2DSettings(**settings_keywords(ml2d_cfg))

    def defocus_groups(self, table, settings) -> None:
        return None

    def start(self, ml2d_cfg, settings, table, chunks, sampling, box, references,
              groups=None) -> ML2DModel:
        """The user references, else the global average of all particles (§1.11)."""
        if references is not None:
            model = initial_model_from_references(references, settings, sampling)
        else:
            total, n = np.zeros((box, box)), 0
            for rows, images in chunks:
                total += images.sum(axis=0, dtype=np.float64)
                n += len(rows)
            model = initial_model_from_average(total / n, settings, sampling)
        print(f"ML2D start model: {model.n_classes} reference(s), sigma {model.sigma_noise:.4g}, "
              f"xi {model.sigma_offset:.4g}")
        return model

    def particle_ctf(self, table, settings) -> None:
        return None

    def particle_data(self, ctf, rows, groups=None) -> None:
        return None

    def prepare(self, model, settings, fresh, backend):
        return None

    def estep(self, images, model, settings, state, data, group_labels, backend,
              prepared=None):
        return estep(images, model, settings, state, group_labels=group_labels, backend=backend)

    def mstep(self, model, sums, settings) -> ML2DModel:
        return mstep(model, sums, settings)

    def mstep_summary(self, model) -> str:
        return ""
