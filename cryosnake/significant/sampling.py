"""Projection directions of the gallery (spec ``algorithms.md`` §3.5, V-RS4).

The sphere is sampled by a Fibonacci (golden-angle) spiral with ``n = round(4 pi / step^2)``
points (``step`` in radians), the density of Xmipp's geodesic grid: 1650 directions at 5 degrees
(Xmipp's table: 1652). The points are then restricted to ``tilt_min <= tilt <= tilt_max`` and to
one asymmetric unit of the group's rotations.

Asymmetric unit: for a generic reference direction ``q`` inside the tilt band, a direction ``n``
is kept when, among the copies ``L n`` (``L`` a proper rotation of the group) that fall inside
the tilt band, ``n`` itself is the one closest to ``q``. This is a fundamental domain (a
Dirichlet cell of ``q`` clipped to the band), so each symmetry orbit that meets the band is
represented once and a full-band gallery holds ``|G+|`` times fewer directions. For ``cN`` the
cell is the wedge ``0 <= rot < 360/N``. Improper elements are not used (see
:mod:`cryosnake.volume3d.symmetry`).

Directions carry ``psi = 0``; in-plane rotation is left to the 2D alignment.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.spatial import cKDTree

from cryosnake.geometry import angles_from_direction, direction_from_angles, fibonacci_sphere
from cryosnake.volume3d.symmetry import parse_symmetry, proper_rotations

__all__ = [
    "n_directions_full_sphere",
    "gallery_directions",
    "angular_neighbours",
    "symmetric_angular_distance",
]


def n_directions_full_sphere(angular_sampling_deg: float) -> int:
    """``round(4 pi / step^2)``: the number of directions of the full sphere at this step."""
    step = np.deg2rad(float(angular_sampling_deg))
    if step <= 0:
        raise ValueError(f"angular_sampling must be > 0 degrees, got {angular_sampling_deg}")
    return max(1, int(round(4.0 * np.pi / step ** 2)))


def _reference_direction(symmetry: str, tilt_min: float, tilt_max: float,
                         rots: np.ndarray) -> np.ndarray:
    family, n = parse_symmetry(symmetry)
    tilt = tilt_min + 0.37 * (tilt_max - tilt_min)
    rot = 180.0 / n if family.startswith(("cN", "dN")) else 17.3
    for _ in range(20):
        q = direction_from_angles(rot, tilt)
        moved = np.linalg.norm(rots[1:] @ q - q, axis=1) if len(rots) > 1 else np.array([1.0])
        if moved.min() > 0.05:
            return q
        rot += 3.1
        tilt = min(tilt_max, tilt + 1.3)
    return q


@lru_cache(maxsize=32)
def _gallery(symmetry: str, step: float, tilt_min: float, tilt_max: float):
    rots = proper_rotations(symmetry)
    pts = fibonacci_sphere(n_directions_full_sphere(step))
    lo, hi = np.cos(np.deg2rad(tilt_max)) - 1e-9, np.cos(np.deg2rad(tilt_min)) + 1e-9
    q = _reference_direction(symmetry, tilt_min, tilt_max, rots)
    orbit = np.einsum("gij,nj->gni", rots, pts)  # (g, n, 3)
    in_band = (orbit[..., 2] >= lo) & (orbit[..., 2] <= hi)
    score = np.where(in_band, orbit @ q, -np.inf)
    keep = in_band[0] & (score[0] >= score.max(axis=0) - 1e-12)
    rot, tilt = angles_from_direction(pts[keep])
    if symmetry.startswith("c") and len(rots) > 1:
        rot = np.mod(rot, 360.0)
    return rot, tilt


def gallery_directions(symmetry: str = "c1", angular_sampling: float = 5.0,
                       tilt_min: float = 0.0, tilt_max: float = 180.0):
    """Gallery directions ``(rot_deg, tilt_deg)`` (float64 arrays) for one asymmetric unit.

    ``tilt_min``/``tilt_max`` (degrees, 0 = top view, 90 = side view) restrict the tilt.
    Raises ``ValueError`` for an empty range or unknown symmetry.
    """
    tilt_min, tilt_max = float(tilt_min), float(tilt_max)
    if not (0.0 <= tilt_min <= tilt_max <= 180.0):
        raise ValueError(f"need 0 <= tilt_min <= tilt_max <= 180, got {tilt_min}, {tilt_max}")
    rot, tilt = _gallery(str(symmetry).strip().lower(), float(angular_sampling), tilt_min,
                         tilt_max)
    if len(rot) == 0:
        raise ValueError(f"no projection direction with {tilt_min} <= tilt <= {tilt_max} at "
                         f"{angular_sampling} degrees sampling; widen the tilt range")
    return rot.copy(), tilt.copy()


def symmetric_angular_distance(rot1, tilt1, rot2, tilt2, symmetry: str = "c1") -> np.ndarray:
    """Angle (degrees) between directions, minimised over the group's rotations (broadcast)."""
    v1 = direction_from_angles(rot1, tilt1)
    v2 = direction_from_angles(rot2, tilt2)
    rots = proper_rotations(symmetry)
    cos = np.max(np.einsum("...i,gij,...j->g...", v1, rots, v2), axis=0)
    return np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0)))


def angular_neighbours(rot, tilt, symmetry: str, max_angle_deg: float):
    """Directions within ``max_angle_deg`` of each direction (symmetry-aware), self included.

    Returns CSR arrays ``(indptr, indices)`` (int64): the neighbours of direction ``d`` are
    ``indices[indptr[d]:indptr[d + 1]]`` (sorted). With ``max_angle_deg <= 0`` each direction
    is its only neighbour.
    """
    v = direction_from_angles(rot, tilt)
    n = len(v)
    if max_angle_deg <= 0:
        return np.arange(n + 1, dtype=np.int64), np.arange(n, dtype=np.int64)
    rots = proper_rotations(symmetry)
    orbit = np.einsum("gij,nj->gni", rots, v).reshape(-1, 3)
    tree = cKDTree(orbit)
    chord = 2.0 * np.sin(np.deg2rad(min(float(max_angle_deg), 180.0)) / 2.0) + 1e-12
    lists = tree.query_ball_point(v, chord)
    indptr = np.zeros(n + 1, dtype=np.int64)
    parts = []
    for d, lst in enumerate(lists):
        nb = np.unique(np.asarray(lst, dtype=np.int64) % n)
        parts.append(nb)
        indptr[d + 1] = indptr[d] + len(nb)
    return indptr, np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
