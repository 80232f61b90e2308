"""The contrast transfer function: one definition for the whole package (spec §0.6).

``CTF(k) = sin(π λ Δf(α) |k|² − (π/2) Cs λ³ |k|⁴ + arcsin(Q0) + φ)`` with

* ``Δf(α) = (DU + DV)/2 + (DU − DV)/2 · cos 2(α − φ_A)``, ``α = atan2(ky, kx)``; defocus in Å,
  positive = underfocus (RELION ``rlnDefocusU/V``, ``rlnDefocusAngle`` φ_A in degrees);
* ``λ = 12.2643247 / sqrt(V (1 + 0.978466e-6 V))`` Å with ``V`` in volts (``rlnVoltage`` is kV);
* ``Cs`` in mm (``rlnSphericalAberration``), ``Q0`` = ``rlnAmplitudeContrast``,
  ``φ`` = ``rlnPhaseShift`` in degrees (phase plate, 0 by default);
* ``k`` in Å⁻¹: FFT index ``(i, j)`` of an ``N × N`` image at ``sampling`` Å/px has
  ``kx = fftfreq(N)[j] / sampling``, ``ky = fftfreq(N)[i] / sampling`` (x along columns).

So ``CTF(0) = Q0 > 0``: particles stay white after the CTF, as in RELION (verified there
pixel by pixel, conventions.md). Phase-flipped images are modelled with ``|CTF|``. No envelope
(``E ≡ 1``, which is what RELION/Scipion CTF estimates give).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The CTF columns (RELION names) that RELION 3.1 keeps per optics group: voltage (kV), Cs (mm)
#: and Q0.
OPTICS_COLUMNS = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")

#: The particle-table columns (RELION names) a CTF needs; ``rlnDefocusV``, ``rlnDefocusAngle``
#: and ``rlnPhaseShift`` are optional (``rlnDefocusU``, 0 and 0 when absent; see
#: :meth:`CTFParams.from_star`).
REQUIRED_COLUMNS = ("rlnDefocusU", *OPTICS_COLUMNS)

#: RELION's flag (optics group in 3.1, per particle in 3.0) for images phase-flipped at
#: extraction (modelled with ``|CTF|``); ``ml2d.phase_flipped: auto`` reads it.
PHASE_FLIP_COLUMN = "rlnCtfDataArePhaseFlipped"


def missing_columns(table) -> list[str]:
    """The :data:`REQUIRED_COLUMNS` that the particle table ``table`` lacks, in their order."""
    return [c for c in REQUIRED_COLUMNS if c not in table]


def electron_wavelength(voltage_kv) -> np.ndarray:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV."""
    v = 1000.0 * np.asarray(voltage_kv, dtype=np.float64)
    return 12.2643247 / np.sqrt(v * (1.0 + 0.978466e-6 * v))


def frequency_grid(box: int, sampling: float, half: bool = True):
    """``(kx, ky)`` in Å⁻¹ on the FFT grid of a ``box × box`` image, shape ``[box, box//2+1]``
    (``half``, numpy ``rfft2`` layout) or ``[box, box]``."""
    fx = (np.fft.rfftfreq(box) if half else np.fft.fftfreq(box)) / sampling
    fy = np.fft.fftfreq(box) / sampling
    return np.meshgrid(fx, fy, indexing="xy")


@dataclass(frozen=True)
class CTFParams:
    """CTF parameters of a set of particles (arrays of shape ``[n]``; scalars broadcast)."""

    defocus_u: np.ndarray
    defocus_v: np.ndarray
    defocus_angle: np.ndarray
    voltage: np.ndarray
    cs: np.ndarray
    amplitude_contrast: np.ndarray
    phase_shift: np.ndarray | float = 0.0

    @classmethod
    def from_star(cls, table) -> CTFParams:
        """From a particle table with RELION columns (optics already merged per particle)."""

        def col(name, default=None):
            if name in table.columns:
                return table[name].to_numpy(dtype=np.float64)
            if default is None:
                raise KeyError(name)
            return np.full(len(table), default, dtype=np.float64)

        return cls(
            defocus_u=col("rlnDefocusU"),
            defocus_v=col("rlnDefocusV", None) if "rlnDefocusV" in table else col("rlnDefocusU"),
            defocus_angle=col("rlnDefocusAngle", 0.0),
            voltage=col("rlnVoltage"),
            cs=col("rlnSphericalAberration"),
            amplitude_contrast=col("rlnAmplitudeContrast"),
            phase_shift=col("rlnPhaseShift", 0.0),
        )

    def subset(self, rows) -> CTFParams:
        """The parameters of ``rows`` only."""
        pick = lambda v: np.atleast_1d(np.asarray(v, dtype=np.float64))[rows] if np.ndim(v) else v
        return CTFParams(*(pick(getattr(self, f)) for f in self.__dataclass_fields__))


def ctf_from_frequencies(kx, ky, defocus_u, defocus_v, defocus_angle, voltage, cs,
                         amplitude_contrast, phase_shift=0.0) -> np.ndarray:
    """Evaluate the CTF at frequencies ``kx, ky`` (Å⁻¹). Parameters broadcast against the
    frequency arrays after a trailing-axes expansion: pass ``[n]`` parameters and ``[h, w]``
    frequencies to get ``[n, h, w]``."""
    kx, ky = np.asarray(kx, np.float64), np.asarray(ky, np.float64)
    expand = lambda v: np.asarray(v, np.float64).reshape(np.shape(v) + (1,) * kx.ndim)
    du, dv, ang = expand(defocus_u), expand(defocus_v), np.deg2rad(expand(defocus_angle))
    lam = expand(electron_wavelength(voltage))
    cs_a = expand(cs) * 1e7
    q0 = expand(amplitude_contrast)
    shift = np.deg2rad(expand(phase_shift))
    k2 = kx * kx + ky * ky
    alpha = np.arctan2(ky, kx)
    defocus = 0.5 * (du + dv) + 0.5 * (du - dv) * np.cos(2.0 * (alpha - ang))
    gamma = np.pi * lam * defocus * k2 - 0.5 * np.pi * cs_a * lam**3 * k2 * k2
    return np.sin(gamma + np.arcsin(q0) + shift)


def ctf_images(params: CTFParams, box: int, sampling: float, half: bool = True,
               phase_flipped: bool = False) -> np.ndarray:
    """CTF of every particle on its FFT grid: ``[n, box, box//2+1]`` (``half``) or
    ``[n, box, box]``; ``|CTF|`` when ``phase_flipped``."""
    kx, ky = frequency_grid(box, sampling, half)
    ctf = ctf_from_frequencies(kx, ky, params.defocus_u, params.defocus_v, params.defocus_angle,
                               params.voltage, params.cs, params.amplitude_contrast,
                               params.phase_shift)
    return np.abs(ctf) if phase_flipped else ctf


def apply_ctf(images, params: CTFParams, sampling: float, phase_flip: bool = False) -> np.ndarray:
    """Multiply images ``[n, N, N]`` by their CTF in Fourier space, or, with ``phase_flip``, by
    ``sign(CTF)`` (phase flipping, as done at extraction by RELION/Xmipp)."""
    images = np.asarray(images, dtype=np.float64)
    box = images.shape[-1]
    ctf = ctf_images(params, box, sampling, half=True)
    if phase_flip:
        ctf = np.sign(ctf)
    return np.fft.irfft2(np.fft.rfft2(images) * ctf, s=(box, box))
