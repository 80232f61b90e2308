"""The MLF2D model: ML2D's plus the Fourier-space noise model (spec ``algorithms.md`` §2)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cryosnake.ml2d.model import ML2DModel

from .fourier import shell_counts, shell_frequency


@dataclass
class MLF2DModel(ML2DModel):
    """:class:`~cryosnake.ml2d.ML2DModel` (CTF-corrected references ``A_k``, fractions, xi,
    diagnostics) plus:

    * ``sampling`` (of the base model): pixel size (Å/px) of the frequency axis and the CTFs.
    * ``noise_spectra``: ``[G, L]`` ``sigma^2_g(l) = E|N^(k)|^2`` per defocus group ``g`` and
      shell ``l = 0 .. N//2 - 1`` (complex noise power of one Fourier coefficient in numpy's
      un-normalised ``rfft2`` convention, i.e. ``N^2`` times the pixel variance for white noise;
      trap 2: this is ``2 V`` of Xmipp).
    * ``group_defocus``: ``[G]`` mean defocus (Å); ``group_sizes``: ``[G]`` particles.
    * ``ssnr``: ``[K, L]`` CTF-corrected spectral SNR of each class average, the one its
      Wiener filter used (:mod:`.wiener`; 0 for the start model).
    * ``shell_high``: ``l_high``, the shell of ``high_res_limit`` (spec §2.4), the highest
      shell ever used.
    * ``shell_prob``, ``shell_ext``: ``l_prob`` and ``l_ext`` of the next E-step: the
      likelihood uses shells ``1 .. l_prob``, the references and the noise are estimated on
      shells ``0 .. l_ext`` and are zero beyond (``-1``: ``l_high``, the fixed limit; with
      ``adaptive_resolution`` they follow the SSNR of the class averages, :mod:`.resolution`).

    ``sigma_noise`` holds the white-noise equivalent pixel std over shells ``1 .. l_prob``
    (``sqrt(mean sigma^2) / N``), for logs and plots only.
    """

    noise_spectra: np.ndarray = field(default_factory=lambda: np.zeros((1, 0)))
    group_defocus: np.ndarray = field(default_factory=lambda: np.zeros(1))
    group_sizes: np.ndarray = field(default_factory=lambda: np.zeros(1))
    ssnr: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    shell_high: int = 0
    shell_prob: int = -1
    shell_ext: int = -1

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
        self.shell_prob = int(self.shell_prob)
        self.shell_ext = int(self.shell_ext)

    @property
    def likelihood_shell(self) -> int:
        """``l_prob``: the last shell of the likelihood."""
        return self.shell_high if self.shell_prob < 0 else self.shell_prob

    @property
    def extension_shell(self) -> int:
        """``l_ext``: the last shell of the references and the noise spectra."""
        return self.shell_high if self.shell_ext < 0 else self.shell_ext

    @property
    def n_groups(self) -> int:
        return int(self.noise_spectra.shape[0])

    def white_noise_std(self) -> float:
        """Pixel std of white noise with the same mean power over shells ``1 .. l_high``."""
        top = self.likelihood_shell
        counts = shell_counts(self.image_size)[1 : top + 1]
        w = self.group_sizes / max(self.group_sizes.sum(), 1.0)
        power = (w[:, None] * self.noise_spectra[:, 1 : top + 1]).sum(axis=0)
        if counts.sum() == 0:
            return float("nan")
        return math.sqrt(float((power * counts).sum() / counts.sum())) / self.image_size

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update({
            "fourier": True,
            "shell_high": int(self.shell_high),
            "shell_prob": int(self.shell_prob),
            "shell_ext": int(self.shell_ext),
            "resolution_limit_A": (float(self.image_size * self.sampling / self.shell_high)
                                   if self.shell_high > 0 else None),
            "likelihood_resolution_A": (
                float(self.image_size * self.sampling / self.likelihood_shell)
                if self.likelihood_shell > 0 else None),
            "shell_frequency": shell_frequency(self.image_size, self.sampling).tolist(),
            "group_defocus": self.group_defocus.tolist(),
            "group_sizes": self.group_sizes.tolist(),
            "noise_spectra": self.noise_spectra.tolist(),
            "ssnr": self.ssnr.tolist(),
        })
        return d

    @classmethod
    def from_dict(cls, d: dict, references: np.ndarray) -> MLF2DModel:
        """As :meth:`ML2DModel.from_dict`, with the noise spectra, groups, SSNR and shells."""
        model = super().from_dict(d, references)
        for name in ("group_defocus", "group_sizes", "noise_spectra", "ssnr", "shell_high"):
            setattr(model, name, d[name])
        model.shell_prob = d.get("shell_prob", -1)
        model.shell_ext = d.get("shell_ext", -1)
        model.__post_init__()
        return model
