"""The kernel module: one interface, two backends.

The algorithms call ``backend.<kernel>(...)`` on the object returned by :func:`get_backend`
and never branch on the device themselves. ``cpu`` is numba (parallel) plus ``scipy.fft``;
``cuda`` is numba-cuda plus CuPy's cuFFT and is only importable when those extras and a GPU
(or numba's CUDA simulator) are present.

Both backends expose the same functions with the same signatures and return host (numpy)
arrays, so results are interchangeable; see ``cpu/__init__.py`` for the list.
"""

from __future__ import annotations

import importlib
import os

BACKENDS = ("auto", "cpu", "cuda")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine."""


def cuda_available() -> bool:
    """True when numba sees a CUDA GPU (or ``NUMBA_ENABLE_CUDASIM=1`` is set) and CuPy imports."""
    try:
        from numba import cuda
    except Exception:  # pragma: no cover - numba always installed, numba.cuda may fail
        return False
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True
    try:
        if not cuda.is_available():
            return False
        importlib.import_module("cupy")
    except Exception:
        return False
    return True


def resolve_backend_name(name: str = "auto") -> str:
    """Map ``auto`` to ``cuda`` when a GPU is usable, else ``cpu``; check explicit names."""
    if name not in BACKENDS:
        raise ValueError(f"compute.backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
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
