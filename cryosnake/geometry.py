"""Rotation conventions shared by every module (spec §0.2, §0.5; conventions.md).

* 2D: ``rotation2d(phi)`` is Xmipp's ``R(φ) = [[cos, sin], [−sin, cos]]`` acting on ``(x, y)``
  column vectors, ``x`` along columns, ``y`` along rows, centre pixel ``N // 2``. Rotating an
  image by ``+φ`` (content moves by ``R(φ)``) is what ``scipy.ndimage.rotate(img, +φ)`` does and
  what a positive ``rlnAnglePsi`` means.
* 3D: Euler ZYZ ``E(rot, tilt, psi) = Rz(psi) Ry(tilt) Rz(rot)`` (RELION = Xmipp), angles in
  degrees, with ``Rz(a) = [[c, s, 0], [−s, c, 0], [0, 0, 1]]``,
  ``Ry(b) = [[c, 0, −s], [0, 1, 0], [s, 0, c]]``. A projection at ``E`` is
  ``P(x, y) = Σ_z V(Eᵀ (x, y, z))`` (at (0, 0, 0): ``vol[z, y, x].sum(axis=0)``), its Fourier
  transform the central slice ``V̂(Eᵀ (kx, ky, 0))``, and the projection direction the third
  row of ``E``: ``(sin tilt cos rot, sin tilt sin rot, cos tilt)``.
"""

from __future__ import annotations

import numpy as np


def rotation2d(phi_deg) -> np.ndarray:
    """``R(φ)`` (shape ``[..., 2, 2]``) for angles in degrees."""
    phi = np.deg2rad(np.asarray(phi_deg, dtype=np.float64))
    c, s = np.cos(phi), np.sin(phi)
    return np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)


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


def wrap_angle(angle_deg):
    """Wrap degrees to ``(−180, 180]``."""
    a = np.mod(np.asarray(angle_deg, dtype=np.float64) + 180.0, 360.0) - 180.0
    return np.where(a == -180.0, 180.0, a)


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` near-uniform unit vectors ``(x, y, z)`` (golden-angle spiral), shape ``(n, 3)``."""
    j = np.arange(n, dtype=np.float64)
    z = 1.0 - (2.0 * j + 1.0) / n
    phi = j * np.pi * (3.0 - np.sqrt(5.0))
    s = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    return np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=1)
