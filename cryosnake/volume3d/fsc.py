"""Fourier shell correlation and alignment of a result to a reference (tests, validation).

:func:`align_volume` brings a reconstruction into the frame of a known phantom: an exhaustive
rotation search (near-uniform SO(3) grid, FFT translation search for each rotation) on
down-sampled copies, for the volume and for its mirror image (handedness is undetermined by
projections), then a local Powell refinement of rotation and shift at full size.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.optimize
from scipy.spatial.transform import Rotation

from cryosnake.geometry import fibonacci_sphere
from cryosnake.kernels import cpu

from .volume_ops import fourier_resize

__all__ = [
    "fsc",
    "resolution_period",
    "align_volume",
]


def fsc(v1, v2) -> tuple[np.ndarray, np.ndarray]:
    """FSC of two cubic volumes: ``(freq, fsc)``, shells ``0 .. N//2`` (freq = shell / N)."""
    v1 = np.asarray(v1, dtype=np.float64)
    v2 = np.asarray(v2, dtype=np.float64)
    n = v1.shape[0]
    A = np.fft.fftn(v1)
    B = np.fft.fftn(v2)
    k = np.fft.fftfreq(n, 1.0 / n)
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    shell = np.round(r).astype(int).ravel()
    keep = shell <= n // 2
    num = np.bincount(shell[keep], (A * np.conj(B)).real.ravel()[keep], minlength=n // 2 + 1)
    d1 = np.bincount(shell[keep], (np.abs(A) ** 2).ravel()[keep], minlength=n // 2 + 1)
    d2 = np.bincount(shell[keep], (np.abs(B) ** 2).ravel()[keep], minlength=n // 2 + 1)
    f = num / np.sqrt(d1 * d2 + 1e-300)
    return np.arange(n // 2 + 1) / n, f


def resolution_period(v1, v2, threshold: float = 0.5) -> float:
    """Period (pixels) where the FSC first falls below ``threshold`` (linear interpolation).

    Returns 2.0 (Nyquist) if it never does.
    """
    freq, f = fsc(v1, v2)
    for s in range(1, len(f)):
        if f[s] < threshold:
            f0, f1 = f[s - 1], f[s]
            frac = (f0 - threshold) / (f0 - f1) if f0 != f1 else 0.0
            q = freq[s - 1] + frac * (freq[s] - freq[s - 1])
            return float(1.0 / max(q, 1e-9))
    return 2.0


def _so3_grid(step_deg: float) -> np.ndarray:
    n_dir = max(1, int(round(4 * np.pi / np.deg2rad(step_deg) ** 2)))
    dirs = fibonacci_sphere(n_dir)
    n_psi = max(1, int(round(360.0 / step_deg)))
    mats = []
    z = np.array([0.0, 0.0, 1.0])
    for v in dirs:
        axis = np.cross(z, v)
        s = np.linalg.norm(axis)
        ang = np.arctan2(s, v @ z)
        base = Rotation.from_rotvec(axis / s * ang if s > 1e-12 else np.zeros(3))
        for j in range(n_psi):
            mats.append((base * Rotation.from_rotvec(z * 2 * np.pi * j / n_psi)).as_matrix())
    return np.array(mats)


def _best_translation(ref_ft, vols, n):
    """Peak value and shift (x, y, z) of the cyclic cross-correlation for each volume."""
    F = scipy.fft.rfftn(vols, axes=(1, 2, 3))
    xc = scipy.fft.irfftn(ref_ft[None] * np.conj(F), s=(n, n, n), axes=(1, 2, 3))
    flat = xc.reshape(len(vols), -1)
    idx = flat.argmax(axis=1)
    val = flat[np.arange(len(vols)), idx]
    zyx = np.array(np.unravel_index(idx, (n, n, n))).T
    zyx = (zyx + n // 2) % n - n // 2
    return val, zyx[:, ::-1].astype(float)


def align_volume(moving, reference, step_deg: float = 15.0, small: int = 20,
                 mirror: bool = True, backend=cpu):
    """Rotate/shift (and possibly mirror) ``moving`` onto ``reference``.

    Returns ``(aligned, info)`` with ``info = {"matrix", "shift", "mirrored", "cc"}``:
    ``aligned(x) = M_vol(M (x - shift))`` where ``M_vol`` is ``moving`` or its mirror.
    """
    moving = np.asarray(moving, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    n = moving.shape[0]
    m = min(small, n)
    scale = n / m
    ref_s = fourier_resize(reference, m)
    ref_s = (ref_s - ref_s.mean()) / (ref_s.std() + 1e-12)
    ref_ft = scipy.fft.rfftn(ref_s)
    mats = _so3_grid(step_deg)
    candidates = []
    versions = [(False, moving)] + ([(True, moving[::-1].copy())] if mirror else [])
    for mirrored, vol in versions:
        vol_s = fourier_resize(vol, m)
        vol_s = (vol_s - vol_s.mean()) / (vol_s.std() + 1e-12)
        for s in range(0, len(mats), 512):
            chunk = np.ascontiguousarray(mats[s:s + 512])
            rots = backend.rotate_volume_batch(vol_s, chunk, np.zeros((len(chunk), 3)))
            val, sh = _best_translation(ref_ft, rots, m)
            for j in np.argsort(-val)[:3]:
                candidates.append((val[j], mirrored, mats[s + j], sh[j] * scale))
    candidates.sort(key=lambda c: -c[0])
    ref_c = reference - reference.mean()
    ref_norm = np.linalg.norm(ref_c)

    def score(params, vol, M0):
        M = Rotation.from_rotvec(params[:3]).as_matrix() @ M0
        out = backend.rotate_volume(vol, M, params[3:])
        out = out - out.mean()
        return -float(np.sum(out * ref_c) / (np.linalg.norm(out) * ref_norm + 1e-12))

    best = None
    for _val, mirrored, M0, sh in candidates[:2]:
        vol = versions[1][1] if mirrored else versions[0][1]
        res = scipy.optimize.minimize(score, np.concatenate([np.zeros(3), sh]), args=(vol, M0),
                                      method="Powell",
                                      options={"xtol": 1e-2, "ftol": 1e-5, "maxfev": 600})
        if best is None or res.fun < best[0]:
            best = (res.fun, mirrored, Rotation.from_rotvec(res.x[:3]).as_matrix() @ M0,
                    res.x[3:], vol)
    fun, mirrored, M, shift, vol = best
    aligned = backend.rotate_volume(vol, M, shift)
    return aligned, {"matrix": M, "shift": shift, "mirrored": mirrored, "cc": -fun}
