"""CUDA twins of ``kernels.cpu.linalg``: dense (batched) matrix products on the device.

A product is CuPy's ``cp.matmul`` (cuBLAS GEMM, strided-batched over the leading axes) on a
GPU; under numba's CUDA simulator, where CuPy is absent, it is numpy's ``matmul`` on the host,
as :func:`runtime.rfft2` falls back to numpy for FFTs. Precision is the inputs' (complex64
stays complex64, as on the CPU), so results agree with the CPU to float rounding only: BLAS
and cuBLAS sum in different orders.

Operands: host arrays are uploaded by every call; a :func:`device_operand` handle (a CuPy
array on a GPU, a simulator device array otherwise) is uploaded once and reused by every call
that gets it: the gallery of Significant's alignment across image blocks, MLF2D's class
operators across batches and stages.

Chunking: rows of ``a`` (axis -2); a chunk's rows of ``a`` and of the result fit the device
budget of :func:`runtime.chunk_ranges` (``b`` stays whole on the device), and each chunk's
result is copied into the host output before the next one starts.
"""

from __future__ import annotations

import math

import numpy as np

from . import runtime as rt

__all__ = ["device_operand", "batched_matmul"]


def device_operand(b):
    """A device copy of ``b`` (C-contiguous) for repeated :func:`batched_matmul` calls; device
    arrays pass through. Handles take numpy's basic slicing (views)."""
    if rt.cp is not None:  # pragma: no cover - needs a GPU
        return rt.cp.asarray(b)
    return rt.to_device(b)


def _operand(x):
    """``x`` as an array of the product library: CuPy (uploaded when on the host) on a GPU,
    numpy (downloaded when a simulator device array) under the simulator."""
    if rt.cp is not None:  # pragma: no cover - needs a GPU
        return rt.cp.asarray(x)
    return rt.to_host(x)


def _product(a, b) -> np.ndarray:
    """``a @ b`` of two :func:`_operand` arrays, as a host array."""
    if rt.cp is not None:  # pragma: no cover - needs a GPU
        return rt.cp.asnumpy(rt.cp.matmul(a, b))
    return np.matmul(a, b)


def batched_matmul(a, b) -> np.ndarray:
    """``a @ b`` with numpy's rules: ``(..., n, k) @ (..., k, p) -> (..., n, p)``, batch axes
    broadcast, dtype promoted; as :func:`cryosnake.kernels.cpu.batched_matmul`. ``a``, ``b``:
    host arrays or :func:`device_operand` handles; returns a host array."""
    a = a if rt.is_device_array(a) else np.asarray(a)
    b = b if rt.is_device_array(b) else np.asarray(b)
    sa, sb = tuple(a.shape), tuple(b.shape)  # device shapes take no negative indices
    if len(sa) < 2 or len(sb) < 2 or sa[-1] != sb[-2]:
        raise ValueError(f"batched_matmul: shapes {sa} and {sb} do not chain")
    n, k, p = sa[-2], sa[-1], sb[-1]
    batch = np.broadcast_shapes(sa[:-2], sb[:-2])
    out = np.zeros(batch + (n, p), np.result_type(a.dtype, b.dtype))
    if out.size == 0 or k == 0:
        return out
    d_b = _operand(b)
    per_row = math.prod(batch) * (k * a.dtype.itemsize + p * out.itemsize)
    lead = (slice(None),) * (len(sa) - 2)  # numba device arrays take no Ellipsis
    for s, e in rt.chunk_ranges(n, per_row):
        out[..., s:e, :] = _product(_operand(a[(*lead, slice(s, e))]), d_b)
    return out
