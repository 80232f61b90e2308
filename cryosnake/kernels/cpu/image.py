"""CPU kernels: 2D image operations (spec ``algorithms.md`` §0.1, §0.2, §0.4).

Conventions (spec §0.1/§0.2), for every function here:

* arrays are ``[..., y, x]`` (rows = y, columns = x), square ``N x N``;
* the centre is the pixel with index ``N // 2``; logical coordinates ``x = j - N//2``,
  ``y = i - N//2``;
* ``Rot_phi[I](r) = I(R(-phi) r)`` with ``R(phi) = [[cos, sin], [-sin, cos]]`` acting on
  ``(x, y)``: the content turns by ``R(phi)``; ``rotate_images(img, +phi)`` is
  ``scipy.ndimage.rotate(img, +phi)`` about ``N // 2`` (angles in degrees);
* ``Sh_v[I](r) = I(r - v)``: the content moves by ``+v`` (pixels, ``v = (vx, vy)``);
* every boundary is periodic ("wrap"), as in ML2D.

Rotations use a cubic B-spline (``order=3``; exact periodic prefilter by FFT, as Xmipp does for
reference rotations) or bilinear interpolation (``order=1``). Real FFTs use ``scipy.fft`` with
``workers`` threads (default: ``CRYOSNAKE_THREADS`` or the number of CPUs) and keep the input
precision (float32 -> complex64, float64 -> complex128). numba kernels are parallel over
images x rows and cached on disk.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

# numba's OpenMP workers must not spin while the FFT / BLAS threads of the E-step run (on a
# 2-core machine spinning costs ~30 %); takes effect if set before the first parallel kernel.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
from numba import njit, prange  # noqa: E402

from .. import interp  # noqa: E402
from ..host import bspline3_denominator, spectrum_permutation_table  # noqa: E402

__all__ = [
    "fft_workers",
    "parallel_batches",
    "rfft2",
    "irfft2",
    "bspline3_coefficients",
    "rotate_images",
    "permute_images",
    "permute_spectra",
    "roll_images",
    "shift_images",
    "radius_grid",
    "circular_mask",
    "radial_average",
]


def fft_workers(workers: int | None = None) -> int:
    """Number of threads for ``scipy.fft``: ``workers``, else ``$CRYOSNAKE_THREADS``, else CPUs."""
    if workers is not None:
        return int(workers)
    env = os.environ.get("CRYOSNAKE_THREADS")
    return int(env) if env else (os.cpu_count() or 1)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def parallel_batches(fn, n_items: int, workers: int | None = None, min_items: int = 64) -> None:
    """Call ``fn(start, stop)`` on ``workers`` contiguous parts of ``range(n_items)`` in threads.

    scipy's own ``workers=`` does not parallelise batches of small 2D transforms well; pocketfft
    releases the GIL, so splitting the batch over a thread pool does (``fn`` must write its
    results into disjoint slices of preallocated output).
    """
    wk = fft_workers(workers)
    if wk <= 1 or n_items < min_items:
        fn(0, n_items)
        return
    pool = _POOLS.get(wk)
    if pool is None:
        pool = _POOLS[wk] = ThreadPoolExecutor(wk, thread_name_prefix="cryosnake-fft")
    edges = np.linspace(0, n_items, wk + 1).astype(int)
    futures = [pool.submit(fn, a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    for f in futures:
        f.result()


def rfft2(images: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Batched 2D real FFT over the last two axes (numpy convention: forward un-normalised).

    Output ``[..., N, N//2 + 1]`` (half plane along x), complex64 for float32 input; batches
    are split over ``workers`` threads (:func:`parallel_batches`).
    """
    images = np.asarray(images)
    if images.ndim < 3:
        return scipy.fft.rfft2(images, axes=(-2, -1))
    flat = images.reshape(-1, *images.shape[-2:])
    ctype = np.complex64 if flat.dtype == np.float32 else np.complex128
    out = np.empty((flat.shape[0], flat.shape[1], flat.shape[2] // 2 + 1), dtype=ctype)

    def part(a, b):
        out[a:b] = scipy.fft.rfft2(flat[a:b], axes=(-2, -1))

    parallel_batches(part, flat.shape[0], workers)
    return out.reshape(*images.shape[:-2], *out.shape[-2:])


def irfft2(spectra: np.ndarray, n: int, workers: int | None = None) -> np.ndarray:
    """Inverse of :func:`rfft2` for ``N = n`` (inverse normalised by ``1/N^2``), threaded."""
    spectra = np.asarray(spectra)
    if spectra.ndim < 3:
        return scipy.fft.irfft2(spectra, s=(n, n), axes=(-2, -1))
    flat = spectra.reshape(-1, *spectra.shape[-2:])
    rtype = np.float32 if flat.dtype == np.complex64 else np.float64
    out = np.empty((flat.shape[0], n, n), dtype=rtype)

    def part(a, b):
        out[a:b] = scipy.fft.irfft2(flat[a:b], s=(n, n), axes=(-2, -1))

    parallel_batches(part, flat.shape[0], workers)
    return out.reshape(*spectra.shape[:-2], n, n)


def bspline3_coefficients(images: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Periodic cubic B-spline coefficients of ``images`` (``[..., N, N]``), float64.

    Exact inverse of the periodic B-spline sampling filter, applied by FFT (separable):
    ``c = IFFT(FFT(f) / (b(ky) b(kx)))`` with ``b(k) = (4 + 2 cos 2 pi k / N) / 6``.
    """
    images = np.asarray(images, dtype=np.float64)
    n = images.shape[-1]
    by = bspline3_denominator(n)
    bx = bspline3_denominator(n)[: n // 2 + 1]
    spec = rfft2(images, workers) / (by[:, None] * bx[None, :])
    return irfft2(spec, n, workers)


_source_point = njit(inline="always", cache=True)(interp.source_point)
_bspline3_weights = njit(inline="always", cache=True)(interp.bspline3_weights)


@njit(parallel=True, cache=True)
def _rotate_bspline3(coef, cos_a, sin_a, centre, out):  # pragma: no cover - numba
    n, size, _ = coef.shape
    for t in prange(n * size):
        m = t // size
        i = t % size
        y = i - centre
        ca = cos_a[m]
        sa = sin_a[m]
        for j in range(size):
            ix, iy, fx, fy = _source_point(ca, sa, j - centre, y, centre)
            wx0, wx1, wx2, wx3 = _bspline3_weights(fx)
            wy = _bspline3_weights(fy)
            c0 = (ix - 1) % size
            c1 = ix % size
            c2 = (ix + 1) % size
            c3 = (ix + 2) % size
            acc = 0.0
            for a in range(4):
                row = coef[m, (iy - 1 + a) % size]
                acc += wy[a] * (wx0 * row[c0] + wx1 * row[c1] + wx2 * row[c2] + wx3 * row[c3])
            out[m, i, j] = acc


@njit(parallel=True, cache=True)
def _rotate_bilinear(img, cos_a, sin_a, centre, out):  # pragma: no cover - numba
    n, size, _ = img.shape
    for t in prange(n * size):
        m = t // size
        i = t % size
        y = i - centre
        ca = cos_a[m]
        sa = sin_a[m]
        for j in range(size):
            ix, iy, fx, fy = _source_point(ca, sa, j - centre, y, centre)
            c0 = ix % size
            c1 = (ix + 1) % size
            r0 = iy % size
            r1 = (iy + 1) % size
            out[m, i, j] = (1.0 - fy) * ((1.0 - fx) * img[m, r0, c0] + fx * img[m, r0, c1]) + fy * (
                (1.0 - fx) * img[m, r1, c0] + fx * img[m, r1, c1]
            )


def rotate_images(
    images: np.ndarray, angles_deg, order: int = 3, workers: int | None = None
) -> np.ndarray:
    """``Rot_phi`` (spec §0.2) of each image about ``N // 2``, periodic boundary; float64 out.

    ``images``: ``[n, N, N]`` (or ``[N, N]``); ``angles_deg``: scalar or ``[n]`` (degrees,
    image ``m`` is rotated by ``angles_deg[m]``). ``order=3``: cubic B-spline interpolation
    (reference rotations in ML2D, §1.5); ``order=1``: bilinear. Output value at ``r`` is the
    interpolated input at ``R(-phi) r``.
    """
    images = np.asarray(images)
    single = images.ndim == 2
    stack = images[None] if single else images
    n = stack.shape[0]
    angles = np.broadcast_to(np.asarray(angles_deg, dtype=np.float64), (n,))
    rad = np.deg2rad(angles)
    cos_a = np.ascontiguousarray(np.cos(rad))
    sin_a = np.ascontiguousarray(np.sin(rad))
    out = np.empty(stack.shape, dtype=np.float64)
    centre = float(stack.shape[-1] // 2)
    if order == 3:
        coef = np.ascontiguousarray(bspline3_coefficients(stack, workers))
        _rotate_bspline3(coef, cos_a, sin_a, centre, out)
    elif order == 1:
        _rotate_bilinear(np.ascontiguousarray(stack, dtype=np.float64), cos_a, sin_a, centre, out)
    else:
        raise ValueError(f"order must be 1 (bilinear) or 3 (cubic B-spline), got {order}")
    return out[0] if single else out


@functools.lru_cache(maxsize=32)
def _permutation_table(n: int, mats_key: bytes) -> np.ndarray:
    """Flat source index ``[F, N*N]`` of ``out(r) = in(M_f r)`` about ``N // 2`` (wrap)."""
    mats = np.frombuffer(mats_key, dtype=np.int64).reshape(-1, 2, 2)
    c = n // 2
    i, j = np.mgrid[0:n, 0:n]
    x, y = j - c, i - c
    out = np.empty((len(mats), n * n), np.int64)
    for f, m in enumerate(mats):
        xs = (m[0, 0] * x + m[0, 1] * y + c) % n
        ys = (m[1, 0] * x + m[1, 1] * y + c) % n
        out[f] = (ys * n + xs).ravel()
    return out


@njit(parallel=True, cache=True)
def _permute(images, table, out):  # pragma: no cover - numba
    # images: [n, P]; table: [F, P] source pixel of every output pixel; out: [n, F, P]
    n = images.shape[0]
    nm, npx = table.shape
    for t in prange(n * nm):
        i = t // nm
        f = t % nm
        src = images[i]
        idx = table[f]
        dst = out[i, f]
        for p in range(npx):
            dst[p] = src[idx[p]]


def permute_images(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Exact integer pull-back ``out[i, f](r) = images[i](M_f r)`` about ``N // 2`` (wrap).

    ``images``: ``[n, N, N]``; ``matrices``: integer ``[F, 2, 2]`` acting on logical ``(x, y)``
    (e.g. the ML2D flips ``F_f``, spec §1.3). Output ``[n, F, N, N]``, dtype of ``images``.
    For orthogonal integer matrices (90° rotations, mirrors) this is a pixel permutation.
    """
    images = np.ascontiguousarray(images)
    mats = np.ascontiguousarray(np.asarray(matrices, dtype=np.int64))
    n, size = images.shape[0], images.shape[-1]
    out = np.empty((n, mats.shape[0], size, size), dtype=images.dtype)
    table = _permutation_table(size, mats.tobytes())
    _permute(images.reshape(n, size * size), table, out.reshape(n, mats.shape[0], size * size))
    return out


@njit(parallel=True, cache=True)
def _permute_spectra(spec, src, conj, phase, out):  # pragma: no cover - numba
    # spec: [n, P] complex; src, conj, phase: [F, P]; out: [n, F, P]
    n = spec.shape[0]
    nm, npx = src.shape
    for t in prange(n * nm):
        i = t // nm
        f = t % nm
        s = spec[i]
        for p in range(npx):
            v = s[src[f, p]]
            if conj[f, p]:
                v = v.conjugate()
            out[i, f, p] = v * phase[f, p]


def permute_spectra(spectra: np.ndarray, matrices: np.ndarray, n: int) -> np.ndarray:
    """``rfft2(permute_images(images, matrices))`` from ``spectra = rfft2(images)``, exactly.

    ``spectra``: ``[m, N, N//2+1]`` (:func:`rfft2` of ``N x N`` images); ``matrices``: integer
    orthogonal ``[F, 2, 2]`` (pixel permutations about ``N // 2``). A permutation of the image
    is a permutation of its spectrum, ``Z^(k) = e^{-2 pi i k.d / N} X^(M k)`` with
    ``d = c - M^T c``, ``c = N // 2``, the other half plane by Hermitian symmetry: one gather
    per output coefficient instead of one FFT per permuted image. Output ``[m, F, N, N//2+1]``
    in the dtype of ``spectra``.
    """
    spectra = np.ascontiguousarray(spectra)
    mats = np.ascontiguousarray(np.asarray(matrices, dtype=np.int64))
    m, h = spectra.shape[0], n // 2 + 1
    if spectra.shape[1:] != (n, h):
        raise ValueError(f"spectra are {spectra.shape[1:]}, expected {(n, h)} for N = {n}")
    src, conj, phase = spectrum_permutation_table(n, mats.tobytes())
    out = np.empty((m, len(mats), n, h), dtype=spectra.dtype)
    _permute_spectra(
        spectra.reshape(m, n * h),
        src,
        conj,
        phase.astype(spectra.dtype),
        out.reshape(m, len(mats), n * h),
    )
    return out


@njit(parallel=True, cache=True)
def _roll(images, index, shifts, out):  # pragma: no cover - numba
    m = index.shape[0]
    size = images.shape[1]
    for t in prange(m):
        src = images[index[t]]
        sx = shifts[t, 0]
        sy = shifts[t, 1]
        for r in range(size):
            rr = (r - sy) % size
            for col in range(size):
                out[t, r, col] = src[rr, (col - sx) % size]


def roll_images(images: np.ndarray, index: np.ndarray, shifts_xy: np.ndarray) -> np.ndarray:
    """Integer cyclic shifts ``out[t] = Sh_v[images[index[t]]]`` with ``v = shifts_xy[t]``.

    ``Sh_v[I](r) = I(r - v)`` (content moves by ``+v``; ``v = (vx, vy)`` in pixels). Gathers
    and shifts in one pass: ``out`` is ``[len(index), N, N]`` with the dtype of ``images``.
    """
    images = np.ascontiguousarray(images)
    index = np.ascontiguousarray(index, dtype=np.int64)
    shifts = np.ascontiguousarray(np.asarray(shifts_xy, dtype=np.int64).reshape(-1, 2))
    out = np.empty((index.shape[0], *images.shape[1:]), dtype=images.dtype)
    _roll(images, index, shifts, out)
    return out


def shift_images(images: np.ndarray, shifts_xy, workers: int | None = None) -> np.ndarray:
    """Sub-pixel ``Sh_v`` (spec §0.2) by a Fourier phase ramp (periodic), float64 out.

    ``images``: ``[n, N, N]``; ``shifts_xy``: ``[n, 2]`` (or ``[2]``) as ``(vx, vy)`` px.
    ``Sh_v[I]^(k) = I^(k) exp(-2 pi i k.v / N)``; for even ``N`` the Nyquist terms keep only
    their real part (``irfft2``), so a non-integer shift is band-limited there.
    """
    images = np.asarray(images, dtype=np.float64)
    single = images.ndim == 2
    stack = images[None] if single else images
    n = stack.shape[-1]
    v = np.broadcast_to(np.asarray(shifts_xy, dtype=np.float64).reshape(-1, 2), (len(stack), 2))
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.rfftfreq(n)[None, :]
    phase = np.exp(-2j * np.pi * (kx[None] * v[:, 0, None, None] + ky[None] * v[:, 1, None, None]))
    out = irfft2(rfft2(stack, workers) * phase, n, workers)
    return out[0] if single else out


def radius_grid(n: int) -> np.ndarray:
    """Distance of every pixel from the centre ``N // 2`` (``[N, N]`` float64, pixels)."""
    c = n // 2
    y, x = np.mgrid[0:n, 0:n]
    return np.hypot(x - c, y - c)


def circular_mask(n: int, radius: float | None = None, inside: bool = True) -> np.ndarray:
    """Boolean disc ``r^2 <= radius^2`` about ``N // 2`` (``inside``), else ``r^2 >= radius^2``.

    ``radius`` defaults to ``N / 2`` (the inscribed circle used by ML2D, spec §1.5).
    """
    radius = n / 2 if radius is None else float(radius)
    c = n // 2
    y, x = np.mgrid[0:n, 0:n]
    r2 = (x - c) ** 2 + (y - c) ** 2
    return r2 <= radius**2 if inside else r2 >= radius**2


def radial_average(images: np.ndarray) -> np.ndarray:
    """Mean over integer shells ``round(r)`` about ``N // 2``: ``[..., N, N] -> [..., R]``.

    ``R = max(round(r)) + 1`` covers the corners; shell ``s`` averages the pixels with
    ``round(r) == s``.
    """
    images = np.asarray(images)
    n = images.shape[-1]
    shells = np.rint(radius_grid(n)).astype(np.int64).ravel()
    nshell = int(shells.max()) + 1
    onehot = np.zeros((n * n, nshell))
    onehot[np.arange(n * n), shells] = 1.0
    counts = onehot.sum(axis=0)
    flat = images.reshape(-1, n * n).astype(np.float64)
    return (flat @ onehot / counts).reshape(*images.shape[:-2], nshell)
