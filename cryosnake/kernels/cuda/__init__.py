"""CUDA backend: numba-cuda kernels plus CuPy's cuFFT, the same functions as ``kernels.cpu``.

Every public function takes and returns host (numpy) arrays with the signature and dtype of its
CPU twin, so the algorithms run unchanged on either backend. Inside a call the work is one
batched launch over all items (images x poses, blocks x window entries, ...): there is no
per-particle launch and no host round trip per pose. Host-only helpers that do no numerical
work (thread counts, masks, constant tables) are the CPU ones, re-exported by the submodules.

Submodules mirror ``kernels.cpu``: ``image``, ``ml2d``, ``mlf2d``, ``volume``, ``align``,
``linalg`` (CuPy/cuBLAS matrix products); ``runtime`` holds the device plumbing (transfers,
launch geometry, FFTs, memory budget).

Importable when a CUDA GPU and CuPy are present, or under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``), where FFTs and matrix products fall back to numpy and kernels
run in Python (tiny inputs only: that is how CI checks parity without a GPU).
"""

from cryosnake.kernels import BackendUnavailable, cuda_available

if not cuda_available():
    raise BackendUnavailable(
        "the cuda backend needs a CUDA GPU with numba-cuda and CuPy (pip install "
        "'cryosnake[cuda]'), or NUMBA_ENABLE_CUDASIM=1 for the simulator; "
        "set compute.backend: cpu (or auto)"
    )

from .align import *  # noqa: E402,F401,F403
from .image import *  # noqa: E402,F401,F403
from .linalg import *  # noqa: E402,F401,F403
from .ml2d import *  # noqa: E402,F401,F403
from .mlf2d import *  # noqa: E402,F401,F403
from .volume import *  # noqa: E402,F401,F403

NAME = "cuda"
