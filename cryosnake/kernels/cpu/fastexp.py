"""A vectorisable ``exp`` for numba kernels (float64, arithmetic only).

libm's ``exp`` is an opaque call that stops LLVM from vectorising a loop; :func:`fast_exp` is
made of a Cody-Waite range reduction, a Taylor polynomial and an exponent built by bit
reinterpretation (:func:`bits_as_float64`), so loops that call it vectorise. Used by the
ML2D posteriors (:mod:`.ml2d`, spec §1.6); within ~1 ulp of ``math.exp``
(``tests/test_kernels_ml2d.py``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["bits_as_float64", "fast_exp"]


@intrinsic
def bits_as_float64(typingctx, bits):
    """Reinterpret the bits of an int64 as a float64 (LLVM ``bitcast``; vectorises)."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # Cody-Waite split of ln 2 (n * _LN2_HI exact)
_LN2_LO = 1.90821492927058770002e-10


@njit(inline="always", cache=True)
def fast_exp(x):  # pragma: no cover - numba
    """``e^x`` (float64) within ~1 ulp of ``math.exp`` for ``x <= 709``, 0 below -746; made of
    arithmetic only so that loops calling it vectorise (libm's ``exp`` does not)."""
    xc = min(max(x, -746.0), 709.0)
    nf = np.floor(xc * _LOG2E + 0.5)
    r = (xc - nf * _LN2_HI) - nf * _LN2_LO  # |r| <= ln(2) / 2: Taylor to r^13 is exact
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    n = np.int64(nf)  # 2^n as two normal powers of two (subnormal results rounded once)
    n1 = n >> 1
    w = p * bits_as_float64((n1 + 1023) << 52) * bits_as_float64((n - n1 + 1023) << 52)
    return w if x > -746.0 else 0.0
