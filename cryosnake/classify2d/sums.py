"""Additive sufficient statistics (spec ``algorithms.md`` §1.8, §2.9): what an E-step over one
chunk of particles returns and the M-step sums over all chunks, for ML2D
(:class:`cryosnake.ml2d.Sums`), MLF2D (:class:`cryosnake.mlf2d.MLF2DSums`) and MLF2D's start
(:class:`cryosnake.mlf2d.StartStatistics`). Their files: :mod:`cryosnake.io.classify2d`.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np


class AdditiveStats:
    """Mixin for dataclasses of additive statistics: ``a + b`` field by field and
    ``sum([...])``. The dataclass has a ``ref_sum`` field ``[K, ..., N]`` (``K`` classes,
    ``N x N`` images)."""

    @property
    def n_classes(self) -> int:
        return int(self.ref_sum.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.ref_sum.shape[-1])

    def __add__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        for f in fields(self):
            a, b = np.shape(getattr(self, f.name)), np.shape(getattr(other, f.name))
            if a != b:
                raise ValueError(f"cannot add {type(self).__name__} with {f.name} of shapes "
                                 f"{a} and {b}")
        return type(self)(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def __radd__(self, other):
        if isinstance(other, int) and other == 0:  # lets sum([...]) start from 0
            return self
        return self.__add__(other)
