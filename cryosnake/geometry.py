"""Rotation conventions shared by every module (spec §0.2, §0.5; conventions.md).

* 2D: ``rotation2d(phi)`` is Xmipp's ``R(φ) = [[cos, sin], [−sin, cos]]`` acting on ``(x, y)``
  column vectors, ``x`` along columns, ``y`` along rows, centre pixel ``N // 2``. Rotating an
  image by ``+φ`` (content moves by ``R(φ)``) is what ``scipy.ndimage.rotate(img, +φ)`` does and
  what a positive ``rlnAnglePsi`` means.
* 3D: Euler ZYZ ``E(rot, tilt, psi) = Rz(psi) Ry(tilt) Rz(rot)`` (RELION = Xmipp), angles in
  degrees; the projection direction is the third row of ``E``.
"""

from __future__ import annotations

import numpy as np


def rotation2d(phi_deg) -> np.ndarray:
    """``R(φ)`` (shape ``[..., 2, 2]``) for angles in degrees."""
    phi = np.deg2rad(np.asarray(phi_deg, dtype=np.float64))
    c, s = np.cos(phi), np.sin(phi)
    return np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)


def euler_matrix(rot, tilt, psi) -> np.ndarray:
    """ZYZ Euler matrix ``E = Rz(psi) Ry(tilt) Rz(rot)`` (degrees), shape ``[..., 3, 3]``."""
    angles = (np.deg2rad(np.asarray(v, np.float64)) for v in (rot, tilt, psi))
    a, b, g = np.broadcast_arrays(*angles)
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    rows = [
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ]
    return np.stack([np.stack(r, -1) for r in rows], -2)


def euler_from_matrix(matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`euler_matrix`: ``(rot, tilt, psi)`` in degrees, tilt in [0, 180]."""
    m = np.asarray(matrix, dtype=np.float64)
    tilt = np.arccos(np.clip(m[..., 2, 2], -1.0, 1.0))
    sin_tilt = np.sin(tilt)
    regular = sin_tilt > 1e-6
    rot = np.where(regular, np.arctan2(m[..., 2, 1], m[..., 2, 0]), 0.0)
    psi = np.where(
        regular,
        np.arctan2(m[..., 1, 2], -m[..., 0, 2]),
        # gimbal lock: rot and psi are not separable, put everything in psi
        np.arctan2(-m[..., 1, 0], m[..., 0, 0]) * np.where(m[..., 2, 2] > 0, 1.0, -1.0),
    )
    return np.rad2deg(rot), np.rad2deg(tilt), np.rad2deg(psi)


def direction_from_euler(rot, tilt) -> np.ndarray:
    """Unit projection direction (third row of ``E``) for ``rot, tilt`` in degrees."""
    a, b = np.deg2rad(np.asarray(rot, float)), np.deg2rad(np.asarray(tilt, float))
    return np.stack([np.sin(b) * np.cos(a), np.sin(b) * np.sin(a), np.cos(b)], -1)


def wrap_angle(angle_deg):
    """Wrap degrees to ``(−180, 180]``."""
    a = np.mod(np.asarray(angle_deg, dtype=np.float64) + 180.0, 360.0) - 180.0
    return np.where(a == -180.0, 180.0, a)
