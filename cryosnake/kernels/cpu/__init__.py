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

import importlib

NAME = "cpu"

#: The kernel families, loaded on the first use of any kernel (module ``__getattr__``): numba
#: and scipy.fft take ~0.3 s to import, which a job that uses no kernel (an ML2D M-step) should
#: not pay (issue 16).
FAMILIES = ("align", "image", "linalg", "ml2d", "mlf2d", "volume")


def _load() -> None:
    for family in FAMILIES:
        module = importlib.import_module(f"{__name__}.{family}")
        globals().update({name: getattr(module, name) for name in module.__all__})


def __getattr__(name: str):
    if not name.startswith("__"):
        _load()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
