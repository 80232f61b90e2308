"""The MLF2D model: ML2D's plus the Fourier-space noise model (spec ``algorithms.md`` §2)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cryosnake.ml2d.model import ML2DModel

from .fourier import shell_counts, shell_frequency


@dataclass
class MLF2DModel(ML2DModel):
    """:class:`~cryosnake.ml2d.ML2DModel` (CTF-corrected references ``A_k``, fractions, xi,
    diagnostics) plus:

    * ``sampling``: pixel size (Å/px) of the frequency axis and the CTFs.
    * ``noise_spectra``: ``[G, L]`` ``sigma^2_g(l) = E|N^(k)|^2`` per defocus group ``g`` and
      shell ``l = 0 .. N//2 - 1`` (complex noise power of one Fourier coefficient in numpy's
      un-normalised ``rfft2`` convention, i.e. ``N^2`` times the pixel variance for white noise;
      trap 2: this is ``2 V`` of Xmipp).
    * ``group_defocus``: ``[G]`` mean defocus (Å); ``group_sizes``: ``[G]`` particles.
    * ``ssnr``: ``[K, L]`` CTF-corrected spectral SNR of each class average, the one its
      Wiener filter used (:mod:`.wiener`; 0 for the start model).
    * ``shell_high``: ``l_high``, the shell of ``high_res_limit`` (spec §2.4): the likelihood
      uses shells ``1 .. l_high`` and the references are zero beyond it (``l_prob = l_ext =
      l_high``, see :mod:`.wiener` for why the limit does not follow the SSNR).

    ``sigma_noise`` holds the white-noise equivalent pixel std over shells ``1 .. l_high``
    (``sqrt(mean sigma^2) / N``), for logs and plots only.
    """

    sampling: float = 1.0
    noise_spectra: np.ndarray = field(default_factory=lambda: np.zeros((1, 0)))
    group_defocus: np.ndarray = field(default_factory=lambda: np.zeros(1))
    group_sizes: np.ndarray = field(default_factory=lambda: np.zeros(1))
    ssnr: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    shell_high: int = 0

    def __post_init__(self):
        super().__post_init__()
        self.noise_spectra = np.atleast_2d(np.asarray(self.noise_spectra, dtype=np.float64))
        self.group_defocus = np.asarray(self.group_defocus, dtype=np.float64).ravel()
        self.group_sizes = np.asarray(self.group_sizes, dtype=np.float64).ravel()
        L = self.image_size // 2
        self.ssnr = np.asarray(self.ssnr, dtype=np.float64)
        if self.ssnr.size == 0:
            self.ssnr = np.zeros((self.n_classes, L))
        self.ssnr = self.ssnr.reshape(self.n_classes, L)
        self.shell_high = int(self.shell_high)

    @property
    def n_groups(self) -> int:
        return int(self.noise_spectra.shape[0])

    def white_noise_std(self) -> float:
        """Pixel std of white noise with the same mean power over shells ``1 .. l_high``."""
        counts = shell_counts(self.image_size)[1 : self.shell_high + 1]
        w = self.group_sizes / max(self.group_sizes.sum(), 1.0)
        power = (w[:, None] * self.noise_spectra[:, 1 : self.shell_high + 1]).sum(axis=0)
        if counts.sum() == 0:
            return float("nan")
        return math.sqrt(float((power * counts).sum() / counts.sum())) / self.image_size

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update({
            "fourier": True,
            "sampling": float(self.sampling),
            "shell_high": int(self.shell_high),
            "resolution_limit_A": (float(self.image_size * self.sampling / self.shell_high)
                                   if self.shell_high > 0 else None),
            "shell_frequency": shell_frequency(self.image_size, self.sampling).tolist(),
            "group_defocus": self.group_defocus.tolist(),
            "group_sizes": self.group_sizes.tolist(),
            "noise_spectra": self.noise_spectra.tolist(),
            "ssnr": self.ssnr.tolist(),
        })
        return d

    @classmethod
    def load(cls, model_json, references_mrcs=None) -> MLF2DModel:
        base = super().load(model_json, references_mrcs)
        d = json.loads(Path(model_json).read_text())
        for name in ("sampling", "group_defocus", "group_sizes", "noise_spectra", "ssnr",
                     "shell_high"):
            setattr(base, name, d[name])
        base.__post_init__()
        return base
