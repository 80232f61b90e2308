"""Euler angles and projection directions (spec ``algorithms.md`` §0.5, ``conventions.md``).

Convention (Xmipp = RELION, ZYZ): ``E(rot, tilt, psi) = R_z(psi) R_y(tilt) R_z(rot)`` with

    R_z(a) = [[c, s, 0], [-s, c, 0], [0, 0, 1]],   R_y(b) = [[c, 0, -s], [0, 1, 0], [s, 0, c]].

A projection at angles ``E`` is ``P(x, y) = sum_z V(E^T (x, y, z))``; its Fourier transform is
the central slice ``P^(kx, ky) = V^(E^T (kx, ky, 0))`` and the projection direction is the third
row of ``E``: ``(sin tilt cos rot, sin tilt sin rot, cos tilt)``. At ``(0, 0, 0)`` the projection
is ``vol[z, y, x].sum(axis=0)``. Vectors are ``(x, y, z)``; arrays are ``[z, y, x]``.

All angles are in degrees.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "direction_from_angles",
    "angles_from_direction",
]


def euler_to_matrix(rot_deg, tilt_deg, psi_deg) -> np.ndarray:
    """Rotation matrices ``E = R_z(psi) R_y(tilt) R_z(rot)``, shape ``(..., 3, 3)`` (float64)."""
    a, b, g = (np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (rot_deg, tilt_deg, psi_deg))
    a, b, g = np.broadcast_arrays(a, b, g)
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    E = np.empty(a.shape + (3, 3))
    E[..., 0, 0] = cg * cb * ca - sg * sa
    E[..., 0, 1] = cg * cb * sa + sg * ca
    E[..., 0, 2] = -cg * sb
    E[..., 1, 0] = -sg * cb * ca - cg * sa
    E[..., 1, 1] = -sg * cb * sa + cg * ca
    E[..., 1, 2] = sg * sb
    E[..., 2, 0] = sb * ca
    E[..., 2, 1] = sb * sa
    E[..., 2, 2] = cb
    return E


def matrix_to_euler(E) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`euler_to_matrix`: ``(rot, tilt, psi)`` in degrees, tilt in [0, 180].

    At the poles (``sin tilt ~ 0``) rot is set to 0 and the whole in-plane angle goes to psi.
    """
    E = np.asarray(E, dtype=np.float64)
    tilt = np.arccos(np.clip(E[..., 2, 2], -1.0, 1.0))
    sb = np.sqrt(E[..., 2, 0] ** 2 + E[..., 2, 1] ** 2)
    pole = sb < 1e-9
    rot = np.where(pole, 0.0, np.arctan2(E[..., 2, 1], E[..., 2, 0]))
    psi_gen = np.arctan2(E[..., 1, 2], -E[..., 0, 2])
    # tilt = 0: E = R_z(psi + rot); tilt = 180: E00 = -cos(psi - rot), E01 = sin(psi - rot)
    psi_pole = np.where(E[..., 2, 2] > 0, np.arctan2(E[..., 0, 1], E[..., 0, 0]),
                        np.arctan2(E[..., 0, 1], -E[..., 0, 0]))
    psi = np.where(pole, psi_pole, psi_gen)
    return np.rad2deg(rot), np.rad2deg(tilt), np.rad2deg(psi)


def direction_from_angles(rot_deg, tilt_deg) -> np.ndarray:
    """Unit projection directions (third row of ``E``), shape ``(..., 3)`` as ``(x, y, z)``."""
    a = np.deg2rad(np.asarray(rot_deg, dtype=np.float64))
    b = np.deg2rad(np.asarray(tilt_deg, dtype=np.float64))
    a, b = np.broadcast_arrays(a, b)
    return np.stack([np.sin(b) * np.cos(a), np.sin(b) * np.sin(a), np.cos(b)], axis=-1)


def angles_from_direction(v) -> tuple[np.ndarray, np.ndarray]:
    """``(rot, tilt)`` in degrees of unit vectors ``v`` (``(..., 3)``); rot in (-180, 180]."""
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    tilt = np.rad2deg(np.arccos(np.clip(v[..., 2], -1.0, 1.0)))
    rot = np.rad2deg(np.arctan2(v[..., 1], v[..., 0]))
    return rot, tilt
