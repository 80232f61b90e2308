"""CPU backend: numba (parallel) kernels and batched ``scipy.fft`` transforms.

Each submodule owns one family of kernels and lists them in its ``__all__``:

* ``image``  - 2D image kernels (rotation, Fourier shifts, batched real FFTs, radial averages)
* ``ml2d``   - the ML2D E-step inner loops (weights, accumulation)
* ``mlf2d``  - the MLF2D E-step inner loops (transformed Fourier rows, posteriors)
* ``volume`` - 3D Fourier projection (central slices) and weighted Fourier insertion
* ``align``  - gallery alignment for Reconstruct Significant
* ``linalg`` - dense (batched) matrix products (Significant's ring correlations, MLF2D's
  per-class products)

``dft`` (the pruned mixed-radix DFT passes) and ``fastexp`` (a vectorisable ``exp``) are numba
building blocks inlined into the ``ml2d`` kernels; they export no kernels.

Reproducibility: no kernel is compiled with fast-math. With fast-math flags (contraction into
fused multiply-adds, reassociation) numba's cached object code and the code it compiles
afresh differ in the last bits, so a run with a cold cache gave other numbers than the same
run with a warm one (issue 13). The reductions that needed reassociation to vectorise keep
independent partial sums or vectorise over another axis instead, so every kernel gives the
same bits whatever the cache state and the number of threads (``tests/test_reproducible.py``);
numba's code no longer depends on the CPU's vector width either (FFTs and BLAS may). Jitted
helpers called by other kernels are ``inline="always"``.
"""

from .align import *  # noqa: F401,F403
from .image import *  # noqa: F401,F403
from .linalg import *  # noqa: F401,F403
from .ml2d import *  # noqa: F401,F403
from .mlf2d import *  # noqa: F401,F403
from .volume import *  # noqa: F401,F403

NAME = "cpu"
