"""Device plumbing for the CUDA backend: transfers, launch geometry, FFTs, memory budget.

* ``cp`` is CuPy on a real GPU and ``None`` under numba's CUDA simulator; numba kernels accept
  CuPy arrays directly (``__cuda_array_interface__``), so data stays on the device between a
  cuFFT and the kernel that consumes it.
* :func:`rfft2` / :func:`irfft2` are batched cuFFT transforms (numpy under the simulator) with
  the layout and precision rules of ``kernels.cpu.image``.
* :func:`batch_size` chooses how many items of a given byte size fit in the free device memory
  (a fraction of it), which is how every kernel chunks its launches; :func:`chunk_ranges` turns
  it into ``(start, stop)`` item ranges that also respect :data:`MAX_LAUNCH_THREADS`.
* :func:`launch` runs one thread per item (1D grid); :func:`launch_items`
  a grid-stride kernel over items (cheap under the simulator).
* :func:`rfft2_device` / :func:`irfft2_device`: the same transforms of device arrays, result
  left on the device (CuPy array on a GPU), so FFTs chain with kernels without round trips.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cryosnake.kernels import cuda_simulated

SIMULATED = cuda_simulated()

if SIMULATED:
    cp = None
else:  # pragma: no cover - needs a GPU
    import cupy as cp

THREADS_PER_BLOCK = 128
MEMORY_FRACTION = 0.5  # of the free device memory a single call may use
SIMULATED_MEMORY = 1 << 30  # bytes assumed free under the simulator
SIMULATED_THREADS = 8  # threads of a grid-stride launch under the simulator
MAX_BLOCKS = 1 << 16  # grid-stride launches cap the grid here (more items loop in-thread)
MAX_LAUNCH_THREADS = 1 << 30  # threads of one 1D launch (flat indices stay well inside int32)


def blocks_for(n_threads: int, threads_per_block: int = THREADS_PER_BLOCK) -> int:
    """Number of thread blocks covering ``n_threads`` (at least 1)."""
    return max(1, math.ceil(n_threads / threads_per_block))


def launch(kernel, n_threads: int, *args) -> None:
    """Launch a 1D-grid kernel over ``n_threads`` threads (no-op when ``n_threads`` is 0)."""
    if n_threads > 0:
        kernel[blocks_for(n_threads), THREADS_PER_BLOCK](*args)


def launch_items(kernel, n_items: int, *args, simulated_threads: int = SIMULATED_THREADS
                 ) -> None:
    """Launch a grid-stride kernel (``for t in range(cuda.grid(1), n, cuda.gridsize(1))``) over
    ``n_items`` items: one thread per item on a GPU (grid capped at :data:`MAX_BLOCKS`, the
    rest loops in-thread), ``simulated_threads`` threads under the simulator, where every
    simulated thread costs ~0.2 ms but a loop pass ~1 us (pass 1 for kernels full of atomics:
    the simulator's atomics share one lock and convoy). No-op when ``n_items`` is 0."""
    if n_items <= 0:
        return
    if SIMULATED:
        kernel[1, simulated_threads](*args)
    else:  # pragma: no cover - needs a GPU
        kernel[min(blocks_for(n_items), MAX_BLOCKS), THREADS_PER_BLOCK](*args)


def is_device_array(a) -> bool:
    """True for numba / CuPy device arrays (and the simulator's, which lack the interface)."""
    if SIMULATED:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return isinstance(a, FakeCUDAArray)
    return cuda.is_cuda_array(a)  # pragma: no cover - needs a GPU


def to_device(a):
    """Copy a host array to the device (C-contiguous); device arrays pass through."""
    if is_device_array(a):
        return a
    return cuda.to_device(np.ascontiguousarray(a))


def device_empty(shape, dtype):
    """An uninitialised device array."""
    return cuda.device_array(shape, dtype=np.dtype(dtype))


def device_zeros(shape, dtype):
    """A zero-filled device array."""
    if cp is not None:  # pragma: no cover - needs a GPU
        return cuda.as_cuda_array(cp.zeros(shape, dtype=dtype))
    return cuda.to_device(np.zeros(shape, dtype=dtype))


def to_host(d) -> np.ndarray:
    """Copy a device array (numba or CuPy) back to a numpy array."""
    if isinstance(d, np.ndarray):
        return d
    if cp is not None and isinstance(d, cp.ndarray):  # pragma: no cover - needs a GPU
        return cp.asnumpy(d)
    return d.copy_to_host()


def complex_parts(d):
    """``(real, imag)`` strided real views of a complex device array (no copy), so kernels can
    read and write complex data as two real arrays of the same shape."""
    v = d.view(np.float32 if d.dtype == np.complex64 else np.float64)
    lead = (slice(None),) * (v.ndim - 1)  # numba device arrays take no Ellipsis
    return v[(*lead, slice(0, None, 2))], v[(*lead, slice(1, None, 2))]


def device_name() -> str:
    """Name of the GPU the kernels run on (``numba CUDA simulator`` under the simulator)."""
    if SIMULATED:
        return "numba CUDA simulator"
    name = cuda.get_current_device().name  # pragma: no cover - needs a GPU
    return name.decode() if isinstance(name, bytes) else str(name)  # pragma: no cover


def free_memory_bytes() -> int:
    """Free device memory in bytes (a fixed 1 GiB under the simulator)."""
    if SIMULATED:
        return SIMULATED_MEMORY
    free, _total = cuda.current_context().get_memory_info()  # pragma: no cover - needs a GPU
    return int(free)  # pragma: no cover


def batch_size(bytes_per_item: int, n_items: int, fraction: float = MEMORY_FRACTION) -> int:
    """How many items of ``bytes_per_item`` device bytes to process per launch (>= 1)."""
    budget = int(free_memory_bytes() * fraction)
    return int(max(1, min(n_items, budget // max(1, int(bytes_per_item)))))


def chunk_ranges(n_items: int, bytes_per_item: int, threads_per_item: int = 1
                 ) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges covering ``n_items`` items, each sized by :func:`batch_size`
    (``bytes_per_item`` device bytes per item) and to at most :data:`MAX_LAUNCH_THREADS`
    threads when an item takes ``threads_per_item`` threads."""
    if n_items <= 0:
        return []
    size = min(batch_size(bytes_per_item, n_items),
               max(1, MAX_LAUNCH_THREADS // max(1, int(threads_per_item))))
    return [(s, min(n_items, s + size)) for s in range(0, n_items, size)]


def real_of(dtype) -> type:
    """The real type of a precision: float32 for float32 and complex64, else float64."""
    return np.float32 if np.dtype(dtype) in (np.float32, np.complex64) else np.float64


def complex_of(dtype) -> type:
    """The complex type of a precision: complex64 for float32 and complex64, else complex128."""
    return np.complex64 if real_of(dtype) == np.float32 else np.complex128


def rfft2(images: np.ndarray) -> np.ndarray:
    """Batched 2D real FFT over the last two axes (host in, host out; precision kept)."""
    a = np.asarray(images)
    real = np.float32 if a.dtype == np.float32 else np.float64
    if cp is None:
        return np.fft.rfft2(a.astype(real, copy=False)).astype(complex_of(real))
    d = cp.asarray(a, dtype=real)  # pragma: no cover - needs a GPU
    return cp.asnumpy(cp.fft.rfft2(d))  # pragma: no cover


def irfft2(spectra: np.ndarray, n: int) -> np.ndarray:
    """Batched inverse of :func:`rfft2` for ``n x n`` images (host in, host out)."""
    s = np.asarray(spectra)
    real = np.float32 if s.dtype == np.complex64 else np.float64
    if cp is None:
        return np.fft.irfft2(s, s=(n, n)).astype(real)
    return cp.asnumpy(cp.fft.irfft2(cp.asarray(s), s=(n, n))).astype(real)  # pragma: no cover


def rfft2_device(d, norm: str = "backward"):
    """:func:`rfft2` of a device array (float32 -> complex64, else complex128); the spectrum
    stays on the device (a CuPy array on a GPU). ``norm`` as in numpy."""
    if cp is None:
        a = to_host(d)
        real = np.float32 if a.dtype == np.float32 else np.float64
        spec = np.fft.rfft2(a.astype(real, copy=False), norm=norm)
        return cuda.to_device(spec.astype(complex_of(real)))
    return cp.fft.rfft2(cp.asarray(d), norm=norm)  # pragma: no cover - needs a GPU


def irfft2_device(d, n: int, norm: str = "backward"):
    """Inverse of :func:`rfft2_device` for ``n x n`` images, on the device (precision kept)."""
    if cp is None:
        s = to_host(d)
        real = np.float32 if s.dtype == np.complex64 else np.float64
        return cuda.to_device(np.fft.irfft2(s, s=(n, n), norm=norm).astype(real, copy=False))
    return cp.fft.irfft2(cp.asarray(d), s=(n, n), norm=norm)  # pragma: no cover - needs a GPU
