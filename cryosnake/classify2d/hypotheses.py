"""The discrete hypothesis space of ML2D and MLF2D (spec ``algorithms.md`` §1.3, §1.4, §1.14).

A hypothesis is ``h = (k, j, f, s)``: class ``k``, reference angle ``psi_j``, exact flip ``f``
(``q = f % 4`` quarter turns, mirror ``mu = f >= 4``) and integer translation ``s`` (px) of the
square window. Its physical meaning (§1.14): total in-plane angle ``theta = 90 q + psi_j``
(deg), particle position ``t = F_f s`` (px, ``(x, y)``) and the aligned image
``Rot_theta[Mir^mu[Sh_{-t}[X]]] ~ A_k``. ML2D searches ``s`` on the square window below;
MLF2D searches physical offsets on a disc around stored ones
(:func:`cryosnake.mlf2d.fourier.search_disc`, §2.7) with the same flips, angles and priors.
"""

from __future__ import annotations

import math

import numpy as np

SMALL_ANGLE_DEG = 1.75
"""Offset of the reference-angle grid (spec §1.3, Xmipp's SMALLANGLE)."""

_D = np.array([[-1, 0], [0, 1]], dtype=np.int64)  # mirror x -> -x
_F_QUARTER = np.array(
    [[[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]], [[0, 1], [-1, 0]]], dtype=np.int64
)  # F_q = R(-90 q), acting on (x, y)

FLIP_MATRICES = np.concatenate([_F_QUARTER, _D[None] @ _F_QUARTER])
"""``F_f`` for ``f = 0..7`` (spec §1.3): ``(G_f X)(r) = X(F_f r)``; ``F_{4+q} = diag(-1,1) F_q``."""

INVERSE_FLIP = np.array([0, 3, 2, 1, 4, 5, 6, 7])
"""``F_f^{-1} = F_{INVERSE_FLIP[f]}`` (quarter turns invert, mirrored flips are involutions)."""


def psi_grid(psi_step: float) -> tuple[np.ndarray, float]:
    """Reference angles ``psi_j = j * dpsi + 1.75`` deg, ``dpsi = 90 / ceil(90 / psi_step)``."""
    n_psi = math.ceil(90.0 / psi_step - 1e-9)
    step = 90.0 / n_psi
    return np.arange(n_psi) * step + SMALL_ANGLE_DEG, step


def flip_quarter(f) -> np.ndarray:
    """Number of quarter turns ``q`` of flip ``f``."""
    return np.asarray(f) % 4


def flip_mirror(f) -> np.ndarray:
    """Mirror flag ``mu`` (0/1) of flip ``f``."""
    return (np.asarray(f) >= 4).astype(np.int64)


def translation_half_width(
    sigma_offset: float, n: int, window_factor: float = 6.0, max_shift_px: int | None = None
) -> int:
    """Half-width ``w = ceil(window_factor * max(1, xi))`` (§1.3), capped so that ``2w+1 <= N``.

    ``max_shift_px`` (optional) caps it further (small tests, memory).
    """
    w = math.ceil(window_factor * max(1.0, float(sigma_offset)) - 1e-9)
    w = min(w, (n - 1) // 2)
    if max_shift_px is not None:
        w = min(w, int(max_shift_px))
    return max(w, 0)


def window_shifts(half_width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sx, sy)`` integer grids ``[W, W]``; window index ``[a, b]`` is ``(b - w, a - w)``."""
    r = np.arange(-half_width, half_width + 1)
    sy, sx = np.meshgrid(r, r, indexing="ij")
    return sx, sy


def log_offset_prior(sigma_offset: float, n: int, half_width: int) -> np.ndarray:
    """``log P(s)`` on the window (§1.4): ``P ~ exp(-|s|^2 / 2 xi^2)`` normalised over N x N.

    The normalisation runs over the whole cyclic grid (logical coordinates ``-N/2 .. N/2-1``),
    not only the window. ``xi = 0`` gives a delta at ``s = 0`` (``-inf`` elsewhere).
    """
    sx, sy = window_shifts(half_width)
    r2 = (sx**2 + sy**2).astype(np.float64)
    if sigma_offset <= 0:
        return np.where(r2 == 0, 0.0, -np.inf)
    c = np.arange(n) - n // 2
    full = -(c[:, None] ** 2 + c[None, :] ** 2) / (2.0 * sigma_offset**2)
    top = full.max()
    log_norm = top + np.log(np.exp(full - top).sum())
    return -r2 / (2.0 * sigma_offset**2) - log_norm


def physical_offset(f, sx, sy) -> tuple[np.ndarray, np.ndarray]:
    """Particle position ``t = F_f s`` (px) of hypotheses with flip ``f`` and shift ``s``."""
    m = FLIP_MATRICES[np.asarray(f)]
    sx = np.asarray(sx)
    sy = np.asarray(sy)
    return m[..., 0, 0] * sx + m[..., 0, 1] * sy, m[..., 1, 0] * sx + m[..., 1, 1] * sy


def window_shift_of(f, tx, ty) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`physical_offset`: ``s = F_f^{-1} t``."""
    return physical_offset(INVERSE_FLIP[np.asarray(f)], tx, ty)


def total_angle(f, psi_deg) -> np.ndarray:
    """``theta = 90 q + psi_j`` (deg) of hypotheses with flip ``f`` and reference angle ``psi``."""
    return 90.0 * flip_quarter(f) + np.asarray(psi_deg)


def hypothesis_log_priors(model, n_flips: int) -> np.ndarray:
    """``log(alpha_k * (1 - m_k or m_k))`` per class and flip, ``[K, n_flips]`` (spec §1.4), from
    the ``class_fractions`` and ``mirror_fractions`` ``[K]`` of ``model``.

    Without mirrors (4 flips) the mirror prior factor is 1. ``-inf`` marks impossible blocks
    (dead classes, ``m_k`` of 0 or 1), which are never computed.
    """
    alpha = model.class_fractions
    m = model.mirror_fractions
    with np.errstate(divide="ignore"):
        if n_flips == 4:
            lp = np.log(alpha)[:, None] * np.ones((1, 4))
        else:
            fam = np.stack([1.0 - m, m], axis=1)  # [K, 2]
            lp = np.log(alpha)[:, None] + np.log(np.repeat(fam, 4, axis=1))
    return np.where(np.isfinite(lp), lp, -np.inf)
