"""MLF2D as a :class:`~cryosnake.classify2d.strategy.Classifier2D`: the operations the
workflow's jobs call, on arrays (the jobs read and write the files)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryosnake.classify2d.strategy import settings_keywords
from cryosnake.ctf import CTFParams

from .estep import estep, prepare
from .groups import DefocusGroups, particle_ctf, particle_groups, resolve_phase_flipped
from .initial import start_model, start_statistics
from .model import MLF2DModel
from .mstep import mstep
from .settings import MLF2DSettings
from .sums import MLF2DSums


@dataclass
class CTFGroups:
    """The CTF parameters (``None``: no CTF correction) and defocus group labels ``int [n]``
    of a set of particles."""

    ctf: CTFParams | None
    groups: np.ndarray

    def subset(self, index) -> CTFGroups:
        """The particles ``index`` (a slice or integer array)."""
        rows = np.arange(len(self.groups))[index]
        return CTFGroups(None if self.ctf is None else self.ctf.subset(rows), self.groups[index])


class MLF2D:
    """Fourier-space MLF2D (spec §2): the CTF of each particle from the particle table, the
    defocus groups computed once per run; the start model holds the initial noise spectra per
    group."""

    name = "MLF2D"
    model_type = MLF2DModel
    sums_type = MLF2DSums
    groups_type = DefocusGroups

    def settings(self, ml2d_cfg: dict, table=None) -> MLF2DSettings:
        """``phase_flipped: auto`` is resolved from ``table`` (``None`` without one: the
        M-step does not use it)."""
        flipped = ml2d_cfg["phase_flipped"]
        if flipped == "auto" and not ml2d_cfg["ctf_correction"]:
            flipped = False  # no CTF in the model: nothing to flip
        elif flipped == "auto":
            flipped = None if table is None else resolve_phase_flipped(flipped, table)[0]
        return MLF2DSettings(**settings_keywords(ml2d_cfg),
                             ctf_correction=ml2d_cfg["ctf_correction"], phase_flipped=flipped,
                             high_res_limit=ml2d_cfg["high_res_limit"])

    def defocus_groups(self, table, settings) -> DefocusGroups:
        """The defocus group of every particle of ``table`` (§2.3)."""
        return particle_groups(table, settings)[1]

    def start(self, ml2d_cfg, settings, table, chunks, sampling, box, references,
              groups: DefocusGroups) -> MLF2DModel:
        """One pass over the particles for the CTF-corrected global average and the initial
        noise spectra per defocus group (:mod:`cryosnake.mlf2d.initial`)."""
        if ml2d_cfg["ctf_correction"]:  # the value and where it came from
            flipped, origin = resolve_phase_flipped(ml2d_cfg["phase_flipped"], table)
            print(f"phase flipped: {str(flipped).lower()} ({origin})")
        ctf = particle_ctf(table, settings)
        n_groups = len(groups.defocus)
        stats = 0
        for rows, images in chunks:
            stats = stats + start_statistics(images, None if ctf is None else ctf.subset(rows),
                                             groups.labels[rows], n_groups, sampling, settings)
        model = start_model(stats, settings, sampling, box, groups.defocus, references)
        print(f"MLF2D start model: {model.n_classes} reference(s), {model.n_groups} defocus "
              f"group(s), resolution limit {box * sampling / model.shell_high:.1f} Å "
              f"(shell {model.shell_high}), white-equivalent noise {model.sigma_noise:.4g}")
        return model

    def particle_ctf(self, table, settings) -> CTFParams | None:
        """Every particle's CTF (``None`` without CTF correction); an :class:`InputError`
        naming the missing columns."""
        return particle_ctf(table, settings)

    def particle_data(self, ctf: CTFParams | None, rows, groups: DefocusGroups) -> CTFGroups:
        """The CTF and defocus group of the particles ``rows`` (``ctf``, ``groups``: those of
        all particles, :meth:`particle_ctf`, :meth:`defocus_groups`)."""
        return CTFGroups(None if ctf is None else ctf.subset(rows), groups.labels[rows])

    def prepare(self, model, settings, fresh, backend):
        return prepare(model, settings, fresh, backend)

    def estep(self, images, model, settings, state, data, group_labels, backend,
              prepared=None):
        return estep(images, model, settings, data.ctf, data.groups, state,
                     group_labels=group_labels, backend=backend, context=prepared)

    def mstep(self, model, sums, settings) -> MLF2DModel:
        return mstep(model, sums, settings)

    def mstep_summary(self, model) -> str:
        return f", best class SSNR at the limit {model.ssnr[:, model.shell_high].max():.3g}"
