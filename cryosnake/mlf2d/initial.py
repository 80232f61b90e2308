"""Initial MLF2D models (spec ``algorithms.md`` §2.2, §2.5 and Decisions).

One pass over the images collects :class:`StartStatistics` per defocus group ``g`` (additive,
so it can run chunk by chunk): the power per shell ``sum |X^|^2``, ``sum CTF X^`` and
``sum CTF^2`` on every Fourier point inside Nyquist. From them (:func:`start_model`):

1. preliminary noise ``s_g(l)`` = mean power of the images in shell ``l`` (signal included);
2. the CTF-corrected global average ``A_0 = F / Den`` (:mod:`.wiener`, not filtered) with
   numerator ``F = sum_g sum CTF X^ / s_g`` and denominator ``Den = sum_g sum <CTF^2>_l / s_g``;
3. the initial noise spectra: the residual power ``mean |X^ - CTF A_0|^2`` per group and shell
   (Xmipp uses the power of the images minus that of their plain average; the residual is
   the same idea with the CTF in the model, and is unchanged by phase flipping).

"Generate classes" (Decisions: the same procedure as ML2D): the start model holds ``A_0`` as
its single reference (low-passed to ``high_res_limit``), iteration 0 aligns every image
to it and sends the statistics to ``K`` seeded random groups
(:func:`cryosnake.classify2d.classes.random_group_labels`). User references are used as given
(taken as CTF-corrected), low-passed to ``high_res_limit``, with the same noise spectra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryosnake import masks
from cryosnake.classify2d.sums import AdditiveStats
from cryosnake.kernels import cpu

from .fourier import (
    gather_points,
    independent_points,
    shell_counts,
    shell_of,
    shell_onehot,
)
from .groups import flipped_ctf
from .model import MLF2DModel
from .mstep import band_limited_image
from .resolution import initial_limits
from .settings import MLF2DSettings
from .wiener import ctf_corrected_average


@dataclass
class StartStatistics(AdditiveStats):
    """Per defocus group ``[G, ...]``, on all independent points inside Nyquist ``[Np]``:
    ``power`` ``[G, L]`` (``sum_i sum_{k in l} |X^_i|^2``), ``numerator`` ``[G, Np]``
    (``sum_i CTF_i X^_i``), ``ctf2`` ``[G, Np]`` (``sum_i CTF_i^2``), ``count`` ``[G]``."""

    power: np.ndarray
    numerator: np.ndarray
    ctf2: np.ndarray
    count: np.ndarray


def start_statistics(images, ctf, groups, n_groups: int, sampling: float,
                     settings: MLF2DSettings, backend=cpu, batch: int = 512) -> StartStatistics:
    """:class:`StartStatistics` of ``images`` ``[n, N, N]`` with CTF parameters ``ctf``
    (``None``: no CTF) and defocus groups ``groups`` ``[n]``."""
    n_img, n = images.shape[0], images.shape[-1]
    kx, ky = independent_points(n)
    shell = shell_of(kx, ky)
    L = n // 2
    onehot = shell_onehot(shell, L)
    stats = StartStatistics(np.zeros((n_groups, L)), np.zeros((n_groups, len(kx)), complex),
                            np.zeros((n_groups, len(kx))), np.zeros(n_groups))
    groups = np.asarray(groups, np.int64)
    mask = masks.particle_mask(n, settings.particle_diameter, sampling)
    for b0 in range(0, n_img, batch):
        rows = np.arange(b0, min(n_img, b0 + batch))
        x = masks.apply(np.asarray(images[rows], np.float64), mask)
        xp = gather_points(backend.rfft2(x), kx, ky)
        sub = None if ctf is None else ctf.subset(rows)
        c = np.broadcast_to(flipped_ctf(sub, kx, ky, n, sampling, 1, settings.phase_flipped)[:, 0],
                            xp.shape)
        g = groups[rows]
        np.add.at(stats.power, g, (np.abs(xp) ** 2) @ onehot)
        np.add.at(stats.numerator, g, c * xp)
        np.add.at(stats.ctf2, g, c**2)
        stats.count += np.bincount(g, minlength=n_groups)
    return stats


def start_model(stats: StartStatistics, settings: MLF2DSettings, sampling: float, box: int,
                group_defocus, references: np.ndarray | None = None) -> MLF2DModel:
    """The model before iteration 0 ("generate classes": the single reference ``A_0``,
    ``iteration=-1``) or before iteration 1 (user ``references`` ``[K, N, N]``,
    ``iteration=0``), with the initial noise spectra (module docstring); ``box``: ``N``,
    ``sampling``: Å/px, ``group_defocus``: ``[G]`` mean defocus of the groups (Å)."""
    n = int(box)
    kx, ky = independent_points(n)
    shell = shell_of(kx, ky)
    counts = shell_counts(n)
    used = stats.count > 0
    norm = np.where(used, stats.count, 1.0)[:, None] * counts[None]
    pre = np.where(used[:, None], stats.power / norm, 1.0)  # step 1
    pre = np.where(pre > 0, pre, 1.0)
    onehot = shell_onehot(shell, n // 2)
    numerator = (stats.numerator / pre[:, shell]).sum(axis=0)  # step 2
    den = ((stats.ctf2 @ onehot) / counts / pre).sum(axis=0)
    a0 = ctf_corrected_average(numerator[None], den[None], shell)[0]
    resid = (stats.power  # step 3
             - 2.0 * (np.real(np.conj(a0) * stats.numerator) @ onehot)
             + (stats.ctf2 * np.abs(a0) ** 2) @ onehot)
    noise = np.where((resid > 0) & used[:, None], resid / norm, pre)

    shell_high, shell_prob, shell_ext = initial_limits(settings, n, sampling)
    top = shell_high if shell_ext < 0 else shell_ext
    if references is None:
        points = np.where(shell <= top, a0, 0.0)[None]
        iteration = -1
    else:
        refs = np.asarray(references, dtype=np.float64)
        refs = refs[None] if refs.ndim == 2 else refs
        points = np.where(shell <= top, np.fft.rfft2(refs)[..., np.mod(ky, n), kx], 0.0)
        iteration = 0
    mask = masks.particle_mask(n, settings.particle_diameter, sampling)
    refs = masks.apply(band_limited_image(points, kx, ky, n), mask)
    refs = refs.astype(np.float32).astype(np.float64)
    k = refs.shape[0]
    model = MLF2DModel(
        references=refs,
        class_fractions=np.full(k, 1.0 / k),
        mirror_fractions=np.full(k, 0.5 if settings.mirror else 0.0),
        sigma_noise=0.0,
        sigma_offset=float(settings.offset_std),
        iteration=iteration,
        sampling=float(sampling),
        noise_spectra=noise,
        group_defocus=np.asarray(group_defocus, dtype=np.float64),
        group_sizes=stats.count,
        shell_high=shell_high,
        shell_prob=shell_prob,
        shell_ext=shell_ext,
    )
    model.sigma_noise = model.white_noise_std()
    return model

