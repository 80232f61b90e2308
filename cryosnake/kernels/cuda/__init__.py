"""CUDA backend (numba-cuda kernels + CuPy cuFFT), same functions as ``kernels.cpu``.

Filled by the GPU issue; until a kernel exists here it falls back to nothing: importing this
backend raises so that ``compute.backend: cuda`` fails at start-up with a clear message
instead of silently running on the CPU.
"""

from cryosnake.kernels import BackendUnavailable

raise BackendUnavailable(
    "the CUDA backend is not implemented yet in this version of cryosnake; "
    "set compute.backend: cpu (or auto)"
)
