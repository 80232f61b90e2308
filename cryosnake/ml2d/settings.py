"""ML2D run settings (spec ``algorithms.md`` §1.1 and the "Decisions" section).

Defaults are those of the Scipion protocol (``XmippProtML2D``) except that ``psi_step``,
``noise_std`` and ``offset_std`` are honoured (Decisions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ML2DSettings:
    """Everything that steers ML2D apart from the data and the model.

    Algorithm (spec §1.1):

    * ``n_classes``: K of "generate classes" (§1.11; ``--nref``); user references set K.
    * ``psi_step`` (deg): in-plane sampling; reset to ``90 / ceil(90 / psi_step)`` (§1.3).
    * ``mirror``: include the 4 mirrored flips (8 flips instead of 4).
    * ``fast``: reduced search space (§1.12) with significance constant ``fast_C``;
      ``zero_offsets`` starts it from zero offsets instead of a complete first iteration.
    * ``norm``: normalisation-error model (§1.13, clean published version: per-image scale
      ``s_i`` and background ``b_i`` refined by joint ML, reference denominator
      ``sum gamma s^2``, mean scale renormalised to 1 after every M-step).
    * ``noise_std`` (intensity units of the data), ``offset_std`` (px): initial sigma, xi.
    * ``eps``: convergence threshold on the relative signal change (§1.10).
    * ``loglik_tolerance`` (nats per image; 0 = off, the seed's behaviour): also converged
      when an iteration changes the log-likelihood by less than this per image
      (:func:`cryosnake.classify2d.mstep.likelihood_settled`; not in the seed).
    * ``seed``: seed for the random groups of "generate classes" (§1.11).
    * ``fix_sigma_noise``, ``fix_sigma_offset``, ``fix_fractions``: freeze those estimates
      (``fix_fractions`` freezes class and mirror fractions; Xmipp froze only the mirror ones).
    * ``particle_diameter`` (Å, 0 = none, ``"auto"`` = 0.9 of the box): a soft circular mask
      (:mod:`cryosnake.masks`,
      RELION's ``--particle_diameter``) on the images before they are compared with the
      references, and on the references after every update; the noise is then estimated
      inside the mask. Not available with ``norm``.
    * ``reseed_fraction``, ``reseed_iterations``: re-seed a class whose weight falls below
      ``reseed_fraction`` times the mean class size from the largest class, in the M-steps
      up to iteration ``reseed_iterations`` (:mod:`cryosnake.classify2d.reseed`; 0 = never, the
      seed's behaviour: an emptied class stays empty).
    * ``window_factor``: translation half-width ``w = ceil(window_factor * max(1, xi))``
      (6, or 3 for Xmipp's ``--save_memB``); ``max_shift_px`` optionally caps ``w`` further.

    Numerics (no effect beyond round-off, except the two cut-offs):

    * ``block_skip`` = 1e-8: skipping rule of §1.6.2 (global-maximum variant).
    * ``entry_cutoff`` = 1e-14: single translations whose weight is below this fraction of the
      image's largest weight count as 0 (keeps the cheap real-space accumulation sparse).
    * ``precision``: ``"single"`` (float32 / complex64 FFT correlations) or ``"double"``.
    * ``max_blocks``: blocks (image x class x angle x flip) processed at once (memory bound:
      about ``max_blocks * (2w+1)^2 * 12`` bytes in single precision: correlation windows and
      posteriors).
    * ``direct_max_entries``: a block with at most this many non-zero translation weights is
      accumulated by shifting the image directly, otherwise through the (pruned) Fourier
      transform of its weight window.
    """

    n_classes: int = 3
    psi_step: float = 5.0
    mirror: bool = True
    fast: bool = True
    norm: bool = False
    noise_std: float = 1.0
    offset_std: float = 3.0
    eps: float = 5e-5
    loglik_tolerance: float = 0.01
    max_iterations: int = 100
    seed: int = 1
    fast_C: float = 1e-12
    zero_offsets: bool = False
    fix_sigma_noise: bool = False
    fix_sigma_offset: bool = False
    fix_fractions: bool = False
    window_factor: float = 6.0
    max_shift_px: int | None = None
    particle_diameter: float | str = 0.0
    reseed_fraction: float = 0.25
    reseed_iterations: int = 10
    block_skip: float = 1e-8
    entry_cutoff: float = 1e-14
    precision: str = "single"
    max_blocks: int = 8192
    direct_max_entries: int = 1

    def __post_init__(self):
        if not self.psi_step > 0:
            raise ValueError(f"psi_step must be > 0 degrees, got {self.psi_step}")
        if self.precision not in ("single", "double"):
            raise ValueError(f"precision must be 'single' or 'double', got {self.precision!r}")
        if self.n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {self.n_classes}")
        if self.noise_std <= 0:
            raise ValueError(f"noise_std must be > 0, got {self.noise_std}")
        if self.offset_std < 0:
            raise ValueError(f"offset_std must be >= 0, got {self.offset_std}")
        if self.particle_diameter != "auto" and not self.particle_diameter >= 0:
            raise ValueError(f"particle_diameter must be >= 0 Å or 'auto', got "
                             f"{self.particle_diameter!r}")
        if not 0.0 <= self.reseed_fraction < 1.0:
            raise ValueError(f"reseed_fraction must be in [0, 1), got {self.reseed_fraction}")
        if not self.loglik_tolerance >= 0:
            raise ValueError(f"loglik_tolerance must be >= 0 nats per image, got "
                             f"{self.loglik_tolerance}")
        if self.reseed_iterations < 0:
            raise ValueError(f"reseed_iterations must be >= 0, got {self.reseed_iterations}")
        if self.norm and (self.particle_diameter == "auto" or self.particle_diameter > 0):
            raise ValueError("norm and particle_diameter cannot be combined (the per-image "
                             "background of the norm model needs the whole image)")

    @property
    def real_dtype(self):
        """float32 for ``precision="single"``, else float64."""
        return np.float32 if self.precision == "single" else np.float64

    @property
    def n_flips(self) -> int:
        """4 exact flips, or 8 with ``mirror`` (spec §1.3)."""
        return 8 if self.mirror else 4

    def replace(self, **changes) -> ML2DSettings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ML2DSettings:
        """Build from a mapping, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
