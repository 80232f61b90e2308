"""CPU kernels: dense (batched) matrix products of the algorithms' hot loops.

* Reconstruct Significant's gallery alignment: the ring coefficients of all image x shift x
  direction correlations, ``(n_m, rows, R) @ (n_m, R, n_dir)`` complex64 (spec §3.6);
* MLF2D's cross terms, reference numerators and energies: per-class real products on the
  Fourier points, float32 or float64 (spec §2.7, §2.9).

On the CPU a product is numpy's ``@`` (BLAS), unchanged, and an operand handle is the array
itself; the CUDA twin keeps operands reused across calls on the device. The caller chooses the
BLAS threading (``blas_single_thread`` of :mod:`.align`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["device_operand", "batched_matmul"]


def device_operand(b):
    """A handle on ``b`` for repeated :func:`batched_matmul` calls: ``b`` itself here (no copy),
    a device copy on the CUDA backend. Handles take numpy's basic slicing (views)."""
    return b if isinstance(b, np.ndarray) else np.asarray(b)


def batched_matmul(a, b) -> np.ndarray:
    """``a @ b`` with numpy's rules: ``(..., n, k) @ (..., k, p) -> (..., n, p)``, batch axes
    broadcast, dtype promoted (e.g. complex64 stays complex64). ``a``, ``b``: arrays or
    :func:`device_operand` handles; returns a host array."""
    return a @ b
