"""Fourier central-slice projector (spec ``algorithms.md`` §0.5, §3.5).

The volume (``[z, y, x]``, centre ``N // 2``) is divided by the trilinear gridding correction
``prod_j sinc^2(x_j / P)``, zero-padded to ``P = pad * N`` (default ``pad = 2``), re-centred to
index 0 and Fourier transformed once (:func:`prepare_volume`). A projection at Euler angles
``E`` is the 2D inverse transform of the trilinearly interpolated slice ``V^(E^T (kx, ky, 0))``
(:func:`project`); the gallery is sampled directly on polar rings for the rotational search
(:func:`project_polar`). The gallery of Reconstruct Significant is low-passed at 0.25 digital
frequency (``lowpass=0.25``), as Xmipp's ``angular_project_library`` does.

Xmipp uses padding 1 and cubic B-splines; padding 2 with trilinear interpolation and the sinc^2
pre-correction (RELION's scheme) is as accurate at the 0.25 gallery band. At angles (0, 0, 0)
the projection is ``vol.sum(axis=0)`` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from cryosnake.geometry import euler_to_matrix
from cryosnake.kernels import cpu
from cryosnake.kernels.cpu.image import fft_workers

__all__ = [
    "VolumeFT",
    "trilinear_gridding_correction",
    "prepare_volume",
    "cartesian_coords",
    "project",
    "project_polar",
    "fft_workers",
]


@dataclass
class VolumeFT:
    """A volume ready for projection: ``ft`` is ``rfftn`` of the padded, pre-corrected volume."""

    ft: np.ndarray  # (P, P, P//2+1) complex64, [kz, ky, kx]
    n: int  # box side N
    pad: int  # padding factor
    total: float  # sum of the (uncorrected) volume: the exact value of every slice at k = 0

    @property
    def pad_size(self) -> int:
        return self.n * self.pad


def trilinear_gridding_correction(n: int, pad_size: int) -> np.ndarray:
    """``prod_j sinc^2(x_j / P)`` on an ``n^3`` grid centred at ``n // 2`` (float64)."""
    x = (np.arange(n) - n // 2) / float(pad_size)
    s = np.sinc(x) ** 2
    return s[:, None, None] * s[None, :, None] * s[None, None, :]


def prepare_volume(volume, pad: int = 2) -> VolumeFT:
    """Pre-correct, pad and Fourier transform a cubic volume for :func:`project`."""
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ValueError(f"volume must be a cube [z, y, x], got shape {vol.shape}")
    n = vol.shape[0]
    P = pad * n
    padded = np.zeros((P, P, P), dtype=np.float64)
    o = P // 2 - n // 2
    padded[o:o + n, o:o + n, o:o + n] = vol / trilinear_gridding_correction(n, P)
    ft = scipy.fft.rfftn(np.fft.ifftshift(padded), workers=fft_workers())
    return VolumeFT(ft=ft.astype(np.complex64), n=n, pad=pad, total=float(vol.sum()))


def cartesian_coords(n: int, pad: int = 1) -> np.ndarray:
    """``(kx, ky)`` of an ``rfft2`` grid ``(n, n // 2 + 1)`` (row-major), scaled by ``pad``."""
    ky = np.fft.fftfreq(n, 1.0 / n)
    kx = np.arange(n // 2 + 1, dtype=np.float64)
    KY, KX = np.meshgrid(ky, kx, indexing="ij")
    return np.stack([KX.ravel(), KY.ravel()], axis=1) * float(pad)


def _as_prepared(volume, pad: int) -> VolumeFT:
    return volume if isinstance(volume, VolumeFT) else prepare_volume(volume, pad)


def project(volume, rot, tilt, psi=0.0, lowpass: float | None = None, pad: int = 2,
            backend=cpu) -> np.ndarray:
    """Projections ``[n, N, N]`` (float32) of ``volume`` at Euler angles (degrees, ZYZ).

    ``volume`` is a ``[z, y, x]`` array or a :class:`VolumeFT`. ``lowpass`` (digital frequency,
    e.g. 0.25) zeroes the transform beyond that radius.
    """
    vft = _as_prepared(volume, pad)
    rot, tilt, psi = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, float))
                                           for a in (rot, tilt, psi)))
    E = euler_to_matrix(rot, tilt, psi).reshape(-1, 3, 3)
    n = vft.n
    coords = cartesian_coords(n, 1)
    if lowpass is not None:
        keep = np.hypot(coords[:, 0], coords[:, 1]) <= lowpass * n
    else:
        keep = np.ones(len(coords), dtype=bool)
    vals = np.zeros((len(E), len(coords)), dtype=np.complex64)
    vals[:, keep] = backend.fourier_slice_sample(vft.ft, E, coords[keep] * vft.pad)
    vals[:, 0] = vft.total  # exact DC
    spec = vals.reshape(len(E), n, n // 2 + 1)
    imgs = scipy.fft.irfft2(spec, s=(n, n), workers=fft_workers())
    return np.fft.fftshift(imgs, axes=(1, 2)).astype(np.float32)


def project_polar(volume, rot, tilt, radii, n_phi: int, pad: int = 2,
                  backend=cpu) -> np.ndarray:
    """Slices of ``volume`` at ``(rot, tilt, psi = 0)`` sampled on polar rings.

    ``radii`` in cycles per box (image frequency units); angle ``phi_l = 2 pi l / n_phi`` is
    measured from +kx towards +ky. Returns ``(n_dir, n_rings, n_phi)`` complex64.
    """
    vft = _as_prepared(volume, pad)
    radii = np.asarray(radii, dtype=np.float64)
    phi = 2.0 * np.pi * np.arange(n_phi) / n_phi
    coords = np.stack([(radii[:, None] * np.cos(phi)).ravel(),
                       (radii[:, None] * np.sin(phi)).ravel()], axis=1)
    E = euler_to_matrix(np.asarray(rot, float), np.asarray(tilt, float), 0.0).reshape(-1, 3, 3)
    vals = backend.fourier_slice_sample(vft.ft, E, coords * vft.pad)
    return vals.reshape(len(E), len(radii), n_phi)
