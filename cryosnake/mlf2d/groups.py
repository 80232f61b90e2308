"""Defocus groups and per-particle CTFs on the Fourier points (spec ``algorithms.md`` §2.3).

The CTF enters the MLF2D model **per particle** (its own defocus U/V, astigmatism angle,
voltage, Cs, Q0, phase shift, through :mod:`cryosnake.ctf`, the one CTF function of the
package), evaluated in the frame of each flip (``CTF(F_f k)``). Xmipp instead radially
averages the CTF of each defocus group; per particle is exact for astigmatic data (trap 3) and
costs nothing extra here. The noise spectrum is estimated per **defocus group**: particles
binned by mean defocus ``(DU + DV)/2`` in bins of ``defocus_bin`` Å, small groups merged so
that none has fewer than ``min_group_size`` particles (trap 5). Without CTF correction there is
one group. A run computes the groups once (:class:`DefocusGroups`, written by the workflow's
start job) and every E-step job reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryosnake.classify2d.hypotheses import FLIP_MATRICES
from cryosnake.ctf import PHASE_FLIP_COLUMN, CTFParams, ctf_from_frequencies, missing_columns
from cryosnake.errors import InputError


def resolve_phase_flipped(setting, table) -> tuple[bool, str]:
    """``ml2d.phase_flipped`` as used: ``(flipped, where the value came from)``.

    ``True``/``False`` are the user's; ``"auto"`` reads :data:`PHASE_FLIP_COLUMN` of the merged
    particle table (the import writes it for every format that says: RELION's flag, and 0 for
    cryoSPARC, which never flips at extraction) and is "not flipped" where the input says
    nothing, as for RELION particles. One value for all particles, or an :class:`InputError`.
    """
    if setting is True or setting is False:
        return setting, f"ml2d.phase_flipped: {str(setting).lower()} in the config"
    if setting != "auto":
        raise InputError(f"ml2d.phase_flipped must be auto, true or false, not {setting!r}.")
    if PHASE_FLIP_COLUMN not in table:
        return False, (f"auto: the input has no {PHASE_FLIP_COLUMN}, so not flipped (RELION "
                       "extracts without phase flipping; set ml2d.phase_flipped: true for "
                       "particles flipped elsewhere, e.g. by Xmipp in Scipion)")
    values = np.unique(np.asarray(table[PHASE_FLIP_COLUMN], dtype=np.int64))
    if len(values) > 1:
        raise InputError(f"{PHASE_FLIP_COLUMN} differs between the particles' optics groups: "
                         "MLF2D models all particles one way. Classify flipped and unflipped "
                         "particles separately, or set ml2d.phase_flipped explicitly.")
    flipped = bool(values[0])
    return flipped, f"auto: {PHASE_FLIP_COLUMN} = {int(flipped)} in the input"


def particle_ctf(table, settings) -> CTFParams | None:
    """CTF parameters of every particle of a merged particle table (``None`` without CTF
    correction). Missing columns are an :class:`InputError` naming them and the fix."""
    if not settings.ctf_correction:
        return None
    missing = missing_columns(table)
    if missing:
        raise InputError(
            f"ml2d.fourier (MLF2D) with ctf_correction needs CTF parameters, but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing from the "
            "particles. Import particles with CTF (e.g. RELION Extract after CtfFind), or set "
            "ml2d.ctf_correction: false, or ml2d.fourier: false for ML2D.")
    return CTFParams.from_star(table)


@dataclass
class DefocusGroups:
    """The defocus group of every particle of a run (:func:`defocus_groups`): computed once,
    by the workflow's start job (``{outdir}/ml2d/start/defocus_groups.npz``, written and read
    by :mod:`cryosnake.io.classify2d`), and read by every E-step job."""

    labels: np.ndarray  #: int64 ``[n]``: the group of each particle, in the table's order
    defocus: np.ndarray  #: float64 ``[G]``: the mean defocus of each group (Å)


def particle_groups(table, settings) -> tuple[CTFParams | None, DefocusGroups]:
    """``(ctf, groups)`` of every particle of a merged particle table: the CTF parameters
    (:func:`particle_ctf`) and the defocus groups (:func:`defocus_groups`) with the settings'
    bin width and minimum size."""
    ctf = particle_ctf(table, settings)
    labels, centres = defocus_groups(ctf, len(table), settings.defocus_bin,
                                     settings.min_group_size)
    return ctf, DefocusGroups(labels, centres)


def defocus_groups(ctf: CTFParams | None, n_particles: int, bin_width: float,
                   min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels [n], mean defocus per group [G] in Å)`` (trap 5).

    Bins of the mean defocus ``(DU + DV)/2`` of width ``bin_width`` Å from the smallest
    defocus; walking up in defocus, consecutive bins are joined until a group holds at least
    ``min_size`` particles; a short remainder at the top joins the last group. Deterministic.
    ``ctf=None``: one group (mean defocus 0).
    """
    if ctf is None or n_particles == 0:
        return np.zeros(n_particles, np.int64), np.zeros(1)
    mean = 0.5 * (np.broadcast_to(ctf.defocus_u, (n_particles,))
                  + np.broadcast_to(ctf.defocus_v, (n_particles,))).astype(np.float64)
    bins = np.floor((mean - mean.min()) / bin_width).astype(np.int64)
    counts = np.bincount(bins)
    group_of_bin = np.empty(len(counts), np.int64)
    g, size = 0, 0
    for b, c in enumerate(counts):
        group_of_bin[b] = g
        size += c
        if size >= min_size:
            g, size = g + 1, 0
    if size > 0 and g > 0:  # short remainder at the top: join the previous group
        group_of_bin[group_of_bin == g] = g - 1
    labels = group_of_bin[bins]
    _, labels = np.unique(labels, return_inverse=True)
    labels = labels.astype(np.int64)
    centres = np.bincount(labels, mean) / np.bincount(labels)
    return labels, centres


def flipped_ctf(ctf: CTFParams | None, kx, ky, n: int, sampling: float, n_flips: int,
                phase_flipped: bool) -> np.ndarray:
    """``CTF_i(F_f k)`` for particles ``i``, flips ``f`` and points ``(kx, ky)`` (FFT index
    units of an ``N`` box at ``sampling`` Å/px): ``[n_particles, F, Np]``; ``|CTF|`` when
    ``phase_flipped``; ``ctf=None`` gives ones ``[1, F, Np]`` (broadcasts over particles)."""
    if phase_flipped is None:
        raise ValueError("phase_flipped is not resolved (ml2d.phase_flipped: auto needs the "
                         "particle table: mlf2d.resolve_phase_flipped)")
    if ctf is None:
        return np.ones((1, n_flips, len(kx)))
    mats = FLIP_MATRICES[:n_flips]
    fx = (mats[:, 0, 0, None] * kx + mats[:, 0, 1, None] * ky) / (n * sampling)
    fy = (mats[:, 1, 0, None] * kx + mats[:, 1, 1, None] * ky) / (n * sampling)
    c = ctf_from_frequencies(fx, fy, ctf.defocus_u, ctf.defocus_v, ctf.defocus_angle,
                             ctf.voltage, ctf.cs, ctf.amplitude_contrast, ctf.phase_shift)
    return np.abs(c) if phase_flipped else c


#: angles (over a half circle; the CTF is centrosymmetric) of the ring average of CTF^2
RING_ANGLES = 32


def ring_ctf2(ctf: CTFParams | None, kx, ky, n: int, sampling: float) -> np.ndarray:
    """``<CTF_i^2>`` on the ring of radius ``|k|`` through every point ``(kx, ky)``:
    ``[n_particles, Np]`` (ones ``[1, Np]`` without CTF).

    The denominator of the CTF-corrected class average at a point of the class frame: the
    particle's rotation is not known, so its CTF^2 enters averaged over the ring, evaluated at
    the point's own radius (not its shell's mean, which blurs the CTF's oscillation within a
    shell; ``settings.point_denominator``). ``|CTF|^2 = CTF^2``: phase flipping changes
    nothing here."""
    if ctf is None:
        return np.ones((1, len(kx)))
    r2 = np.asarray(kx, np.int64) ** 2 + np.asarray(ky, np.int64) ** 2
    radii2, where = np.unique(r2, return_inverse=True)
    theta = (np.arange(RING_ANGLES) + 0.5) * np.pi / RING_ANGLES
    r = np.sqrt(radii2) / (n * sampling)  # Å^-1
    fx, fy = np.cos(theta)[:, None] * r, np.sin(theta)[:, None] * r  # [A, R]
    c = ctf_from_frequencies(fx, fy, ctf.defocus_u, ctf.defocus_v, ctf.defocus_angle,
                             ctf.voltage, ctf.cs, ctf.amplitude_contrast, ctf.phase_shift)
    return (c**2).mean(axis=1)[:, where]
