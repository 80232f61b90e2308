"""MLF2D run settings (spec ``algorithms.md`` §2.1 and the "Decisions" section)."""

from __future__ import annotations

from dataclasses import dataclass

from cryosnake.ml2d.settings import ML2DSettings


@dataclass(frozen=True)
class MLF2DSettings(ML2DSettings):
    """ML2D's settings plus the Fourier-space model (spec §2.1).

    Shared with ML2D and meaning the same: ``n_classes``, ``psi_step``, ``mirror``,
    ``offset_std`` (initial xi), ``eps``, ``max_iterations``, ``seed`` (random groups of
    "generate classes"), ``fix_*``, ``block_skip``, ``entry_cutoff``, ``precision``.
    ``fast`` selects the two-stage search of §2.8 (stage 2 -- the translations -- only for the
    rotations whose stage-1 weight is ``>= fast_C`` times the best of their class and mirror
    family); ``fast=False`` gives every rotation the full translation search. ``noise_std``
    is not used (the noise spectra start from the data, §2.5) and ``norm`` is not available.

    MLF2D only:

    * ``fast_C`` = 1e-5 (ML2D's ``1e-12``, Xmipp's ``-C``): Xmipp's MLF2D has no fast mode, so
      this constant is ours. Stage 1 compares every rotation at the stored offset; at low SNR
      (and with a CTF) nearly every rotation is within ``1e-12`` of its family's best there
      (47 % of the blocks kept at SNR 0.05 with CTF) and stage 2 searched almost everything.
      At ``1e-5`` it keeps 11 %: the E-step takes 0.6 x the time, the references of one
      E-step agree with the complete search to NCC 0.99999 and 99.9 % of the particles keep
      their class; 25-iteration runs score the same ARI and NCC (issue 16; README).

    * ``ctf_correction``: model the CTF of every particle (``False``: ``c = 1``, one defocus
      group; the pixel size is still needed for the resolution limit).
    * ``phase_flipped``: the images were phase-flipped at extraction: the model uses ``|CTF|``
      (``None``: not known to this job; only the M-step, which does not use it, accepts it).
    * ``high_res_limit`` (Å): Fourier components beyond it take no part at all (likelihood,
      references, noise); ``0`` = up to the last complete shell inside Nyquist.
    * ``search_shift`` (px): radius of the limited translation search around the stored
      offset of each class and mirror family (29 offsets for 3 px, §2.7).
    * ``defocus_bin`` (Å), ``min_group_size``: defocus groups for the noise spectra (bins of
      the mean defocus ``(DU + DV)/2``; a group smaller than ``min_group_size`` joins the next
      bin, the last one the previous group; trap 5).
    * ``work_elements``: memory bound: at most about this many floats of transformed Fourier
      rows (triple x translation x points) are held at once.

    Regularised model (options beyond Xmipp's MLF2D; issue 12):

    * ``class_filter``: each class average is Wiener-filtered with its own SSNR (the MAP
      estimate ``F_k / (Den_k + 1 / tau2_k)``), instead of one filter from the weighted mean
      SSNR of all classes.
    * ``adaptive_resolution``: the likelihood starts at ``initial_resolution`` (Å) and its
      limit follows the SSNR of the class averages, growing by at most ``extension_shells``
      shells per iteration up to ``high_res_limit`` (:mod:`.resolution`); otherwise it is
      ``high_res_limit`` from the first iteration.
    * ``point_denominator``: the CTF-corrected average divides every Fourier point by its own
      ``sum gamma <CTF^2>_ring(|k|) / sigma^2`` (the CTF^2 of each particle averaged over the
      ring through the point, :func:`.groups.ring_ctf2`) instead of the shell mean
      ``<CTF^2>_l``; the Wiener filters and SSNR keep the shell denominators.
    """

    fast_C: float = 1e-5
    ctf_correction: bool = True
    phase_flipped: bool | None = False
    high_res_limit: float = 20.0
    search_shift: float = 3.0
    defocus_bin: float = 1000.0
    min_group_size: int = 20
    work_elements: int = 1 << 23
    class_filter: bool = False
    adaptive_resolution: bool = False
    initial_resolution: float = 30.0
    extension_shells: int = 3
    likelihood_shells: int = 0
    point_denominator: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.norm:
            raise ValueError("norm is not available with MLF2D (ml2d.fourier: true)")
        if self.high_res_limit < 0:
            raise ValueError(f"high_res_limit must be >= 0 Å, got {self.high_res_limit}")
        if self.search_shift < 0:
            raise ValueError(f"search_shift must be >= 0 px, got {self.search_shift}")
        if self.defocus_bin <= 0 or self.min_group_size < 1:
            raise ValueError("defocus_bin must be > 0 Å and min_group_size >= 1")
