"""One interface for the two 2D classifications: the operations the ML2D jobs need
(:mod:`cryosnake.pipeline.ml2d`), implemented once for ML2D (:class:`cryosnake.ml2d.strategy.ML2D`)
and once for MLF2D (:class:`cryosnake.mlf2d.strategy.MLF2D`), and chosen once per run by
:func:`classifier`.

A job reads files and hands arrays to the strategy; the strategy calls the numerics:

    strategy = classifier(ml2d_cfg["fourier"])
    settings = strategy.settings(ml2d_cfg, table)
    groups = strategy.defocus_groups(table, settings)             # once per run (start job)
    model = strategy.start(ml2d_cfg, settings, table, chunks, sampling, box, references, groups)
    ctf = strategy.particle_ctf(table, settings)                  # once per run (start job)
    groups = read_defocus_groups(path, strategy.groups_type)      # E-step job (MLF2D)
    data = strategy.particle_data(ctf, rows, groups)              # per chunk
    sums, assignments, new_state = strategy.estep(images, model, settings, state, data,
                                                  group_labels, backend)
    new_model = strategy.mstep(model, sum(read_sums(p, strategy.sums_type) for p in paths),
                               settings)

The files (models, sums, states, defocus groups) are read and written by
:mod:`cryosnake.io.classify2d`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np


class Classifier2D(Protocol):
    """What the jobs of one run need from ML2D or MLF2D.

    * ``name``: ``"ML2D"`` or ``"MLF2D"`` (for logs).
    * ``model_type``: the model class (``to_dict``, ``from_dict``: its ``model.json``).
    * ``sums_type``: the additive statistics of an E-step (``zeros``, ``+``).
    * ``groups_type``: what :meth:`defocus_groups` returns (``labels``, ``defocus``); ``None``
      for ML2D, which has none.
    """

    name: str
    model_type: type
    sums_type: type
    groups_type: type | None

    def settings(self, ml2d_cfg: dict, table=None):
        """The ``ml2d:`` config section as settings; ``table``: the merged particle table
        (``None`` where no setting depends on it, as in the M-step)."""

    def defocus_groups(self, table, settings) -> Any:
        """The defocus group of every particle of ``table`` (MLF2D,
        :class:`~cryosnake.mlf2d.groups.DefocusGroups`; ``None`` for ML2D): computed once per
        run, by the start job, which writes them for the E-step jobs."""

    def start(self, ml2d_cfg: dict, settings, table,
              chunks: Iterable[tuple[np.ndarray, np.ndarray]], sampling: float, box: int,
              references: np.ndarray | None, groups):
        """The model before the first E-step, from ``chunks`` of ``(rows, images [n, N, N])``
        covering every particle once (``references [K, N, N]``: user references, else
        "generate classes"; ``groups``: :meth:`defocus_groups` of ``table``); prints a summary
        to the job's log."""

    def particle_ctf(self, table, settings) -> Any:
        """The CTF parameters of every particle of ``table`` that the model uses
        (:class:`~cryosnake.ctf.CTFParams`; ``None`` for ML2D and for MLF2D without CTF
        correction): computed once per run, by the start job, which writes them into the run's
        particle index (:func:`cryosnake.io.particles.write_particle_index`) for the E-step
        jobs."""

    def particle_data(self, ctf, rows: np.ndarray, groups) -> Any:
        """What the E-step needs of the particles ``rows`` besides their images (``None``
        for ML2D; MLF2D: their CTF and defocus groups, from ``ctf``, the run's
        :meth:`particle_ctf`, and ``groups``, its :meth:`defocus_groups`). Has
        ``subset(index)`` if not None."""

    def prepare(self, model, settings, fresh: bool, backend) -> Any:
        """What every E-step call on ``model`` computes alike (MLF2D: the reference bank and
        its operators, :func:`cryosnake.mlf2d.estep.prepare`; ``None`` for ML2D), for the
        sub-batches of one chunk; ``fresh``: for a fresh state."""

    def estep(self, images: np.ndarray, model, settings, state, data, group_labels, backend,
              prepared=None):
        """One E-step on a chunk: ``(sums, assignments, new_state)``; ``state=None``: a fresh
        :class:`~cryosnake.classify2d.state.ParticleState`; ``data``: :meth:`particle_data` of
        the chunk; ``prepared``: :meth:`prepare` of the same model, settings, backend and kind
        of state."""

    def mstep(self, model, sums, settings):
        """The next model from the sums of all chunks."""

    def mstep_summary(self, model) -> str:
        """Extra text for the M-step's log line (``""`` for none)."""


def settings_keywords(ml2d: dict) -> dict:
    """The settings of the ``ml2d:`` config section that ML2D and MLF2D share, as keywords of
    :class:`~cryosnake.ml2d.ML2DSettings` (and of its extension
    :class:`~cryosnake.mlf2d.MLF2DSettings`). ``particle_diameter: auto`` with ``norm`` is 0
    here (resolved from the box later)."""
    keywords = dict(n_classes=ml2d["classes"], psi_step=ml2d["psi_step"], mirror=ml2d["mirror"],
                    fast=ml2d["fast"], norm=ml2d["norm"], noise_std=ml2d["noise_std"],
                    offset_std=ml2d["offset_std"], seed=ml2d["seed"],
                    particle_diameter=(0.0 if ml2d["particle_diameter"] == "auto" and ml2d["norm"]
                                       else ml2d["particle_diameter"]),
                    reseed_fraction=ml2d["reseed_fraction"],
                    reseed_iterations=ml2d["reseed_iterations"],
                    loglik_tolerance=ml2d["loglik_tolerance"])
    if "max_iterations" in ml2d:  # the jobs get the keys that change numbers, without it
        keywords["max_iterations"] = ml2d["max_iterations"]
    return keywords


def classifier(fourier: bool) -> Classifier2D:
    """The strategy of a run: MLF2D with ``ml2d.fourier``, else ML2D. Imports only the one it
    returns (an ML2D job does not import MLF2D)."""
    if fourier:
        from cryosnake.mlf2d.strategy import MLF2D

        return MLF2D()
    from cryosnake.ml2d.strategy import ML2D

    return ML2D()


def join_assignments(parts: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-particle assignments of consecutive chunks (dicts of ``[n_c]`` arrays with the same
    keys) joined in order into one dict of ``[sum n_c]`` arrays."""
    parts = list(parts)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
