"""Hypothesis -> output pose, and the pose applied to an image (spec §1.14, Decisions); the
same convention for ML2D and MLF2D.

Output convention (RELION's, verified by running RELION; see ``spec/conventions.md``):
a particle ``X`` with pose ``(psi, o, mu)`` is ``X = Sh_{-o}[Mir^mu[Rot_psi[A]]]`` for its class
average ``A`` (``o`` = origin in px, ``(x, y)``; ``psi`` in degrees, ``Rot`` as
``scipy.ndimage.rotate(+psi)`` about ``N // 2``; ``Mir``: ``x -> -x`` about ``N // 2``). So
applying the pose brings the particle onto its class average:

    A ~ Rot_{-psi}[Mir^mu[Sh_{+o}[X]]]

The ML hypothesis (§1.14) states ``A ~ Rot_theta[Mir^mu[Sh_{-t}[X]]]`` with the physical
particle position ``t``, hence ``psi = -theta`` (wrapped to ``(-180, 180]``), ``o = -t``.
"""

from __future__ import annotations

import numpy as np

from cryosnake.kernels import cpu

_MIRROR = np.array([[[-1, 0], [0, 1]]])


def wrap_angle_deg(angle) -> np.ndarray:
    """Wrap degrees to ``(-180, 180]``."""
    a = np.mod(np.asarray(angle, dtype=np.float64), 360.0)
    return np.where(a > 180.0, a - 360.0, a)


def hypothesis_to_pose(theta_deg, mirror, tx, ty):
    """``(psi_deg, origin_x_px, origin_y_px, mirror)`` of hypotheses ``(theta, mu, t)`` (§1.14).

    ``theta``: total in-plane angle (deg) of the hypothesis; ``t = (tx, ty)``: physical particle
    position (px). Returns ``psi = wrap(-theta)``, ``origin = -t``, ``mirror = mu``.
    """
    return (
        wrap_angle_deg(-np.asarray(theta_deg, dtype=np.float64)),
        -np.asarray(tx, dtype=np.float64),
        -np.asarray(ty, dtype=np.float64),
        np.asarray(mirror, dtype=np.int64),
    )


def apply_pose(image, psi_deg, origin_x_px, origin_y_px, mirror, backend=cpu) -> np.ndarray:
    """``Rot_{-psi}[Mir^mu[Sh_{+o}[X]]]``: bring particles onto their class average.

    ``image``: ``[N, N]`` with scalar pose, or ``[n, N, N]`` with ``[n]`` pose arrays. The shift
    is a Fourier phase ramp (sub-pixel origins allowed), the mirror an exact permutation about
    ``N // 2``, the rotation a cubic B-spline (all periodic). float64 output.
    """
    image = np.asarray(image, dtype=np.float64)
    single = image.ndim == 2
    stack = image[None] if single else image
    n = stack.shape[0]
    o = np.stack(
        [np.broadcast_to(origin_x_px, (n,)), np.broadcast_to(origin_y_px, (n,))], axis=1
    ).astype(np.float64)
    shifted = backend.shift_images(stack, o)
    mir = np.broadcast_to(np.asarray(mirror).astype(bool), (n,))
    if mir.any():
        shifted[mir] = backend.permute_images(shifted[mir], _MIRROR)[:, 0]
    out = backend.rotate_images(shifted, -np.broadcast_to(psi_deg, (n,)), order=3)
    return out[0] if single else out
