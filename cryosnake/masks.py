"""Soft circular masks (about the centre pixel ``N // 2``, spec §0.1).

RELION's ``--particle_diameter`` mask: 1 inside the radius, a raised-cosine edge of ``edge``
pixels outside it, 0 beyond. Images are masked before the comparison with the references and
the references are multiplied by it after every update ("solvent flattening"), so the noise
of the background takes no part in the likelihood.
"""

from __future__ import annotations

import numpy as np

#: RELION's default width of the soft edge (``--width_mask_edge``), pixels.
EDGE_PX = 5.0


def soft_circular_mask(n: int, radius_px: float, edge_px: float = EDGE_PX) -> np.ndarray:
    """``[N, N]`` float64 mask: 1 for ``r <= radius``, ``(1 + cos(pi (r - radius) / edge)) / 2``
    up to ``radius + edge``, 0 beyond (``r`` from pixel ``N // 2``)."""
    c = n // 2
    y, x = np.mgrid[0:n, 0:n]
    r = np.hypot(x - c, y - c)
    t = np.clip((r - radius_px) / max(edge_px, 1e-9), 0.0, 1.0)
    return 0.5 + 0.5 * np.cos(np.pi * t)


def noise_pixels(n: int, diameter_A: float, sampling: float) -> float:
    """How many pixels carry noise: ``N^2``, or ``sum M^2`` with the particle mask ``M``
    (masked white noise of variance ``sigma^2`` has total variance ``sigma^2 sum M^2``)."""
    mask = particle_mask(n, diameter_A, sampling)
    return float(n * n) if mask is None else float((mask**2).sum())


def apply(images: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``images`` times ``mask`` (broadcast over leading axes), or ``images`` when there is
    no mask."""
    return images if mask is None else images * mask


#: ``particle_diameter: auto``: the mask's diameter as a fraction of the box (its soft edge
#: then reaches the box edge for N ≈ 100 and only the corners are lost, as with cryoSPARC's
#: default window of 0.85-0.99 of the box).
AUTO_FRACTION = 0.9


def diameter_px(n: int, diameter_A, sampling: float) -> float:
    """The mask diameter in pixels: ``diameter_A`` / ``sampling``, or ``AUTO_FRACTION`` × N
    for ``"auto"``; 0 = no mask."""
    if diameter_A == "auto":
        return AUTO_FRACTION * n
    return diameter_A / sampling if diameter_A and diameter_A > 0 else 0.0


def particle_mask(n: int, diameter_A, sampling: float) -> np.ndarray | None:
    """The mask of a particle of ``diameter_A`` Å (or ``"auto"``: :data:`AUTO_FRACTION` of
    the box) in an ``N`` box of ``sampling`` Å/px, or ``None`` when it is 0 (no mask)."""
    d = diameter_px(n, diameter_A, sampling)
    return soft_circular_mask(n, 0.5 * d) if d > 0 else None
