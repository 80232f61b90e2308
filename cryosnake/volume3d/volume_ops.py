"""Per-iteration volume post-processing and resampling (spec ``algorithms.md`` §3.9, §3.10).

* :func:`centre_volume` — centring against the mirrored volume, about the true centre
  ``N // 2`` (not Xmipp's index reversal about ``(N - 1) / 2``). The mirror of ``V`` about the
  centre is ``V_m(x) = V(-x)``; the cross-correlation of ``V`` with ``V_m`` (the
  self-convolution ``V * V``) peaks at ``u = 2 a`` when ``V`` is (closest to) an
  inversion-symmetric object centred at ``a``, so ``V`` is moved by ``-a`` (sub-voxel Fourier
  shift). Shifts only: Xmipp's local alignment also frees three angles and an isotropic scale,
  which can drift; here neither rotation nor scale change.
* :func:`spherical_mask` — hard mask of radius ``N / 2`` (§3.9.2).
* :func:`raised_cosine_lowpass` — pass band to ``cutoff`` (digital) and a 0.02 cosine edge
  (§3.9.3).
* :func:`fourier_resize` / :func:`working_grid` — the "maximum resolution" option (§3.10).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from .projector import fft_workers

__all__ = [
    "mirror_volume",
    "centre_volume",
    "spherical_mask",
    "raised_cosine_lowpass",
    "fourier_shift",
    "fourier_resize",
    "working_grid",
]


def mirror_volume(vol) -> np.ndarray:
    """``V_m[i] = V[2c - i]`` per axis about ``c = N // 2`` (0 where ``2c - i`` is outside)."""
    vol = np.asarray(vol)
    out = np.zeros_like(vol)
    n = vol.shape[0]
    c = n // 2
    lo = max(0, 2 * c - (n - 1))
    sl_out = slice(lo, n)
    sl_in = slice(2 * c - lo, 2 * c - n if 2 * c - n >= 0 else None, -1)
    out[sl_out, sl_out, sl_out] = vol[sl_in, sl_in, sl_in]
    return out


def fourier_shift(arr, shift) -> np.ndarray:
    """Move the content of ``arr`` (2D ``[y, x]`` or 3D ``[z, y, x]``) by ``shift`` (x, y[, z]).

    Periodic (Fourier phase) shift; ``shift`` in pixels, ordered ``(x, y, z)``.
    """
    arr = np.asarray(arr, dtype=np.float64)
    axes_shift = list(shift)[::-1]  # (z, y, x) order
    ft = np.fft.fftn(arr)
    phase = np.zeros(arr.shape)
    for ax, s in enumerate(axes_shift):
        k = np.fft.fftfreq(arr.shape[ax])
        shape = [1] * arr.ndim
        shape[ax] = -1
        phase = phase + (k * s).reshape(shape)
    return np.real(np.fft.ifftn(ft * np.exp(-2j * np.pi * phase)))


def centre_volume(vol, max_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``vol`` on its point of best inversion symmetry; returns ``(volume, shift_xyz)``.

    The applied shift (voxels, ``(x, y, z)``) is at most ``max_fraction * N`` per axis.
    """
    vol = np.asarray(vol, dtype=np.float64)
    n = vol.shape[0]
    c = n // 2
    m = 2 * n
    ft = scipy.fft.rfftn(vol, s=(m, m, m), workers=fft_workers())
    conv = scipy.fft.irfftn(ft * ft, s=(m, m, m), workers=fft_workers())
    # conv[k] = sum_i V[i] V[k - i]; k = u + 2c with u = 2a
    lim = int(2 * max_fraction * n)
    sub = conv[2 * c - lim:2 * c + lim + 1, 2 * c - lim:2 * c + lim + 1,
               2 * c - lim:2 * c + lim + 1]
    k = np.array(np.unravel_index(np.argmax(sub), sub.shape))
    u = np.zeros(3)
    for ax in range(3):
        idx = list(k)
        vals = []
        for dlt in (-1, 0, 1):
            j = list(idx)
            j[ax] = min(max(idx[ax] + dlt, 0), sub.shape[ax] - 1)
            vals.append(sub[tuple(j)])
        den = vals[0] - 2 * vals[1] + vals[2]
        frac = 0.5 * (vals[0] - vals[2]) / den if den < 0 else 0.0
        u[ax] = k[ax] - lim + float(np.clip(frac, -0.5, 0.5))
    a_zyx = u / 2.0
    shift_xyz = -a_zyx[::-1]
    return fourier_shift(vol, shift_xyz).astype(np.float32), shift_xyz


def spherical_mask(vol, radius: float | None = None) -> np.ndarray:
    """Set voxels farther than ``radius`` (default ``N / 2``) from ``N // 2`` to 0."""
    vol = np.asarray(vol, dtype=np.float32)
    n = vol.shape[0]
    r = n / 2.0 if radius is None else float(radius)
    g = np.arange(n) - n // 2
    r2 = g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
    return np.where(r2 <= r * r, vol, 0.0).astype(np.float32)


def raised_cosine_lowpass(arr, cutoff: float, width: float = 0.02) -> np.ndarray:
    """``H = 1`` below ``cutoff``, ``(1 + cos(pi (f - fc) / width)) / 2`` up to ``fc + width``."""
    arr = np.asarray(arr, dtype=np.float64)
    freqs = np.meshgrid(*[np.fft.fftfreq(s) for s in arr.shape], indexing="ij")
    f = np.sqrt(sum(q ** 2 for q in freqs))
    H = np.where(f < cutoff, 1.0,
                 np.where(f < cutoff + width,
                          0.5 * (1.0 + np.cos(np.pi * (f - cutoff) / width)), 0.0))
    return np.real(np.fft.ifftn(np.fft.fftn(arr) * H)).astype(np.float32)


def fourier_resize(arr, new_n: int, stack: bool = False) -> np.ndarray:
    """Crop or zero-pad the centred Fourier transform to side ``new_n`` (float32 result).

    ``arr`` is one image ``[y, x]`` or one volume ``[z, y, x]``; with ``stack=True`` a stack
    ``[n, y, x]`` resized image by image. Values keep their scale (a constant stays the same);
    a box shrinks by cropping frequencies (band limit), grows by zero padding.
    """
    arr = np.asarray(arr, dtype=np.float64)
    axes = tuple(range(1 if stack else 0, arr.ndim))
    n = arr.shape[-1]
    if new_n == n:
        return arr.astype(np.float32)
    ft = np.fft.fftshift(np.fft.fftn(arr, axes=axes), axes=axes)
    shape = tuple(new_n if ax in axes else arr.shape[ax] for ax in range(arr.ndim))
    out = np.zeros(shape, dtype=complex)
    m = min(n, new_n)
    src = tuple(slice(n // 2 - m // 2, n // 2 - m // 2 + m) if ax in axes else slice(None)
                for ax in range(arr.ndim))
    dst = tuple(slice(new_n // 2 - m // 2, new_n // 2 - m // 2 + m) if ax in axes
                else slice(None) for ax in range(arr.ndim))
    out[dst] = ft[src]
    res = np.real(np.fft.ifftn(np.fft.ifftshift(out, axes=axes), axes=axes))
    return (res * (new_n / n) ** len(axes)).astype(np.float32)


def working_grid(n: int, sampling_A: float, target_resolution_A: float = 0.0,
                 min_size: int = 40) -> tuple[int, float]:
    """Box and pixel size of the iterations (§3.10): ``(n_work, sampling_work)``.

    Off (``target_resolution_A <= 0``): unchanged. On: pixel size ``max(Ts, res / 3)`` (the
    target resolution sampled at 1.5 x Nyquist; never finer than the data), box
    ``round(N Ts / Ts_cur)``, at least ``min(40, N)`` (then the pixel size is recomputed from the
    box). Never larger than the input box.
    """
    if target_resolution_A is None or target_resolution_A <= 0:
        return int(n), float(sampling_A)
    if sampling_A <= 0:
        raise ValueError("target_resolution needs the pixel size of the images (sampling > 0)")
    ts_cur = max(float(sampling_A), float(target_resolution_A) / 3.0)
    n_new = int(round(n * sampling_A / ts_cur))
    n_new = max(n_new, min(min_size, n))
    n_new = min(n_new, n)
    n_new += n_new % 2 if n % 2 == 0 else 0
    n_new = min(n_new, n)
    return n_new, float(sampling_A) * n / n_new
