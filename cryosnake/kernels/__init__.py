"""The kernel module: one interface, two backends.

The algorithms call ``backend.<kernel>(...)`` on the object returned by :func:`get_backend`
and never branch on the device themselves. ``cpu`` is numba (parallel) plus ``scipy.fft``;
``cuda`` is numba-cuda plus CuPy (cuFFT, cuBLAS) and is only importable when those extras and
a GPU (or numba's CUDA simulator) are present.

Both backends expose the same functions with the same signatures and return host (numpy)
arrays, so results are interchangeable; ``interface.KernelBackend`` lists them, with shapes,
units and results. The job layer (``cryosnake.pipeline``) turns the backend's name into its
module once; everything below it takes the module (default ``kernels.cpu``).
What the two backends share is written once: ``host`` (numpy-only tables and key sorting
computed on the host) and ``interp`` (the rotation kernels' scalar helpers, in plain Python,
compiled by each backend).
"""

from __future__ import annotations

import importlib
import os

BACKENDS = ("auto", "cpu", "cuda")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine."""


def cuda_simulated() -> bool:
    """True when numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1``, tests only)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def gpu_present() -> bool:
    """True when numba sees a real CUDA GPU and CuPy (cuFFT) imports."""
    if cuda_simulated():
        return False
    try:
        from numba import cuda

        if not cuda.is_available():
            return False
        importlib.import_module("cupy")
    except Exception:
        return False
    return True


def cuda_available() -> bool:
    """True when the cuda backend can run: a real GPU with CuPy, or the CUDA simulator."""
    return cuda_simulated() or gpu_present()


def resolve_backend_name(name: str = "auto") -> str:
    """Map ``auto`` to ``cuda`` when a real GPU is usable, else ``cpu``; check explicit names.

    ``auto`` never picks the simulator (it is thousands of times slower than the CPU); an
    explicit ``cuda`` accepts it, which is how the parity tests run without a GPU.
    """
    if name not in BACKENDS:
        raise ValueError(f"compute.backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        return "cuda" if gpu_present() else "cpu"
    if name == "cuda" and not cuda_available():
        raise BackendUnavailable(
            "compute.backend is 'cuda' but no usable CUDA GPU was found (numba.cuda.is_available() "
            "is False or CuPy is not installed). Install the extra with `pip install "
            "'cryosnake[cuda]'` on a GPU node, or set compute.backend: cpu (or auto)."
        )
    return name


def get_backend(name: str = "auto"):
    """Return the backend module (``cryosnake.kernels.cpu`` or ``cryosnake.kernels.cuda``)."""
    return importlib.import_module(f"cryosnake.kernels.{resolve_backend_name(name)}")
