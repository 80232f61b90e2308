"""Scalar helpers of the rotation kernels, written once in plain Python and compiled by each
backend: ``numba.njit(inline="always")`` in ``kernels.cpu.image``, ``cuda.jit(device=True)``
in ``kernels.cuda.image`` (spec §0.1, §0.2: centre pixel ``N // 2``, ``Rot_phi[I](r) =
I(R(-phi) r)``).
"""

from __future__ import annotations

import math

__all__ = ["source_point", "bspline3_weights"]


def source_point(ca, sa, x, y, centre):  # pragma: no cover - compiled by the backends
    """Output pixel ``(x, y)`` (centred coordinates) mapped by the rotation ``(ca, sa) = (cos
    phi, sin phi)`` to the source image: the cell ``(ix, iy)`` (pixel indices) holding the
    source point and the fractions ``(fx, fy)`` inside it."""
    xs = ca * x - sa * y + centre
    ys = sa * x + ca * y + centre
    ix = int(math.floor(xs))  # an int on the CPU already; a float on the device
    iy = int(math.floor(ys))
    return ix, iy, xs - ix, ys - iy


def bspline3_weights(f):  # pragma: no cover - compiled by the backends
    """Cubic B-spline weights of the 4 taps ``floor - 1 .. floor + 2`` at fraction ``f``."""
    return (
        (1.0 - f) ** 3 / 6.0,
        (4.0 - 6.0 * f * f + 3.0 * f**3) / 6.0,
        (1.0 + 3.0 * f + 3.0 * f * f - 3.0 * f**3) / 6.0,
        f**3 / 6.0,
    )
