"""CUDA twins of ``kernels.cpu.image``: 2D image operations (spec ``algorithms.md`` §0.1-§0.4).

Same conventions, signatures, dtypes and results as the CPU module (see its docstring):
``[..., y, x]`` arrays, centre ``N // 2``, ``Rot_phi[I](r) = I(R(-phi) r)``, ``Sh_v[I](r) =
I(r - v)``, periodic boundaries, numpy FFT normalisation. Host arrays in, host arrays out;
``workers`` is accepted and ignored.

Every per-pixel loop is a grid-stride numba-cuda kernel over all items of a call at once
(images x pixels, or images x flips x pixels); FFTs are batched cuFFT transforms that stay on
the device between the kernels (``runtime.rfft2_device``). The cubic B-spline prefilter is the
CPU's exact periodic inverse filter, applied between two device FFTs.

Chunking: a call is cut into runs of images with :func:`runtime.chunk_ranges`, sized so that
one run's device buffers (input, output, spectra and cuFFT work space, counted per image below)
fit in half of the free device memory; on a real GPU a run is normally the whole call.
``fft_workers``, ``parallel_batches``, ``radius_grid`` and ``circular_mask`` do no numerical
work and are the CPU ones.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from cryosnake.kernels import interp
from cryosnake.kernels.cpu import image as _cpu
from cryosnake.kernels.cpu.image import (  # noqa: F401 - host-only helpers, re-exported
    circular_mask,
    fft_workers,
    parallel_batches,
    radius_grid,
)
from cryosnake.kernels.host import bspline3_denominator, spectrum_permutation_table

from . import runtime as rt

__all__ = list(_cpu.__all__)  # the CPU twin's names, in its order

_FFT_COPIES = 4  # device bytes of an FFT call per input byte (input, spectrum, cuFFT work area)


# --- device functions shared by the kernels -------------------------------------------------


@cuda.jit(device=True)
def split3(t, n1, n2):
    """Flat index ``t`` of an ``[n0, n1, n2]`` array as ``(i0, i1, i2)``."""
    return t // (n1 * n2), (t // n2) % n1, t % n2


_source_point = cuda.jit(device=True)(interp.source_point)
_bspline3_weights = cuda.jit(device=True)(interp.bspline3_weights)


@cuda.jit(device=True)
def _rolled(img, sx, sy, r, c, size):
    """Pixel ``(r, c)`` of ``Sh_v[img]`` for the integer shift ``v = (sx, sy)`` (cyclic)."""
    return img[(r - sy) % size, (c - sx) % size]


# --- kernels ----------------------------------------------------------------------------------


@cuda.jit
def _divide_bspline3(re, im, by, bx):  # pragma: no cover - device code
    # spectrum [m, N, N//2+1] (parts) /= b(ky) b(kx): the periodic B-spline prefilter
    m, ny, nx = re.shape
    for t in range(cuda.grid(1), m * ny * nx, cuda.gridsize(1)):
        k, r, c = split3(t, ny, nx)
        d = by[r] * bx[c]
        re[k, r, c] /= d
        im[k, r, c] /= d


@cuda.jit(device=True)
def _tap(k, w0, w1, w2, w3):
    """The ``k``-th of four tap weights."""
    return w0 if k == 0 else (w1 if k == 1 else (w2 if k == 2 else w3))


@cuda.jit(device=True)
def _bspline3_at(coef, ix, iy, fx, fy, size):
    """Cubic B-spline interpolation of the coefficients ``coef`` ``[N, N]`` (wrap): taps
    ``floor - 1 .. floor + 2`` along both axes, summed row by row."""
    wx0, wx1, wx2, wx3 = _bspline3_weights(fx)
    wy0, wy1, wy2, wy3 = _bspline3_weights(fy)
    acc = 0.0
    for a in range(4):
        row = coef[(iy - 1 + a) % size]
        line = 0.0
        for b in range(4):
            line += _tap(b, wx0, wx1, wx2, wx3) * row[(ix - 1 + b) % size]
        acc += _tap(a, wy0, wy1, wy2, wy3) * line
    return acc


@cuda.jit(device=True)
def _bilinear_at(img, ix, iy, fx, fy, size):
    """Bilinear interpolation of ``img`` ``[N, N]`` (wrap)."""
    c0 = ix % size
    c1 = (ix + 1) % size
    r0 = iy % size
    r1 = (iy + 1) % size
    return (1.0 - fy) * ((1.0 - fx) * img[r0, c0] + fx * img[r0, c1]) + fy * (
        (1.0 - fx) * img[r1, c0] + fx * img[r1, c1]
    )


@cuda.jit
def _rotate(src, cos_a, sin_a, centre, order, out):  # pragma: no cover - device code
    # out[m](r) = src[m] at R(-phi_m) r: B-spline coefficients (order 3) or pixels (order 1)
    n, size = out.shape[0], out.shape[1]
    for t in range(cuda.grid(1), n * size * size, cuda.gridsize(1)):
        m, i, j = split3(t, size, size)
        ix, iy, fx, fy = _source_point(cos_a[m], sin_a[m], j - centre, i - centre, centre)
        if order == 3:
            out[m, i, j] = _bspline3_at(src[m], ix, iy, fx, fy, size)
        else:
            out[m, i, j] = _bilinear_at(src[m], ix, iy, fx, fy, size)


@cuda.jit
def _permute(images, mats, centre, out):  # pragma: no cover - device code
    # out[i, f](r) = images[i](M_f r) about the centre (wrap); out: [n, F, N, N]
    n, nf, size = out.shape[0], out.shape[1], out.shape[2]
    npx = size * size
    for t in range(cuda.grid(1), n * nf * npx, cuda.gridsize(1)):
        i, f, q = split3(t, nf, npx)
        x = q % size - centre
        y = q // size - centre
        xs = (mats[f, 0, 0] * x + mats[f, 0, 1] * y + centre) % size
        ys = (mats[f, 1, 0] * x + mats[f, 1, 1] * y + centre) % size
        out[i, f, q // size, q % size] = images[i, ys, xs]


@cuda.jit
def _gather_spectra(sre, sim, src, conj, wre, wim, flip, ore, oim):  # pragma: no cover
    # out[i F + f, p] = (conj^(conj[f, p] xor flip) spec[i, src[f, p]]) * w[f, p]; all as parts
    # (spectra [m, P], tables [F, P], out [m F, P])
    m = sre.shape[0]
    nf, npx = src.shape
    for t in range(cuda.grid(1), m * nf * npx, cuda.gridsize(1)):
        i, f, p = split3(t, nf, npx)
        q = src[f, p]
        vr = sre[i, q]
        vi = sim[i, q]
        if conj[f, p] != flip:
            vi = -vi
        ore[i * nf + f, p] = vr * wre[f, p] - vi * wim[f, p]
        oim[i * nf + f, p] = vr * wim[f, p] + vi * wre[f, p]


@cuda.jit
def _roll(images, index, shifts, out):  # pragma: no cover - device code
    m, size = out.shape[0], out.shape[1]
    for t in range(cuda.grid(1), m * size * size, cuda.gridsize(1)):
        k, r, c = split3(t, size, size)
        out[k, r, c] = _rolled(images[index[k]], shifts[k, 0], shifts[k, 1], r, c, size)


@cuda.jit
def _phase_ramp(re, im, shifts, n):  # pragma: no cover - device code
    # spectrum [m, N, N//2+1] (parts) *= exp(-2 pi i k.v / N), v = shifts[m] (px)
    m, ny, nx = re.shape
    inv_n = 1.0 / n
    for t in range(cuda.grid(1), m * ny * nx, cuda.gridsize(1)):
        k, r, c = split3(t, ny, nx)
        ky = r if r <= (n - 1) // 2 else r - n  # numpy fftfreq order
        arg = -2.0 * math.pi * (c * inv_n * shifts[k, 0] + ky * inv_n * shifts[k, 1])
        cr = math.cos(arg)
        ci = math.sin(arg)
        a = re[k, r, c]
        b = im[k, r, c]
        re[k, r, c] = a * cr - b * ci
        im[k, r, c] = a * ci + b * cr


@cuda.jit
def _shell_means(images, ptr, pix, out):  # pragma: no cover - device code
    # out[i, s] = mean of images[i, pix[ptr[s]:ptr[s+1]]] (float64)
    m, ns = out.shape
    for t in range(cuda.grid(1), m * ns, cuda.gridsize(1)):
        i = t // ns
        s = t % ns
        acc = 0.0
        for q in range(ptr[s], ptr[s + 1]):
            acc += float(images[i, pix[q]])  # float64 sum (also under the simulator)
        out[i, s] = acc / (ptr[s + 1] - ptr[s])


# --- host wrappers ----------------------------------------------------------------------------


def _transform_batches(flat: np.ndarray, out: np.ndarray, transform) -> np.ndarray:
    """``out[a:b] = transform(device flat[a:b])`` over device-sized runs of ``flat``."""
    per_item = _FFT_COPIES * max(flat[0].nbytes, out[0].nbytes) if len(flat) else 1
    for a, b in rt.chunk_ranges(len(flat), per_item):
        out[a:b] = rt.to_host(transform(rt.to_device(flat[a:b])))
    return out


def rfft2(images: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Batched 2D real FFT over the last two axes (cuFFT): ``[..., N, N//2 + 1]``, complex64
    for float32 input, else complex128; numpy normalisation (forward un-normalised)."""
    images = np.asarray(images)
    flat = images.reshape(-1, *images.shape[-2:])
    ctype = np.complex64 if flat.dtype == np.float32 else np.complex128
    out = np.empty((flat.shape[0], flat.shape[1], flat.shape[2] // 2 + 1), dtype=ctype)
    _transform_batches(flat, out, rt.rfft2_device)
    return out.reshape(*images.shape[:-2], *out.shape[-2:])


def irfft2(spectra: np.ndarray, n: int, workers: int | None = None) -> np.ndarray:
    """Inverse of :func:`rfft2` for ``N = n`` (normalised by ``1/N^2``), batched cuFFT."""
    spectra = np.asarray(spectra)
    flat = spectra.reshape(-1, *spectra.shape[-2:])
    rtype = np.float32 if flat.dtype == np.complex64 else np.float64
    out = np.empty((flat.shape[0], n, n), dtype=rtype)
    _transform_batches(flat, out, lambda d: rt.irfft2_device(d, n))
    return out.reshape(*spectra.shape[:-2], n, n)


def bspline3_device(d_images, n: int):
    """Periodic cubic B-spline coefficients of device images ``[m, N, N]`` (float64), on the
    device: ``IFFT(FFT(f) / (b(ky) b(kx)))``, ``b(k) = (4 + 2 cos 2 pi k / N) / 6``."""
    spec = rt.rfft2_device(d_images)
    re, im = rt.complex_parts(spec)
    by = rt.to_device(bspline3_denominator(n))
    bx = rt.to_device(bspline3_denominator(n)[: n // 2 + 1])
    rt.launch_items(_divide_bspline3, re.shape[0] * n * (n // 2 + 1), re, im, by, bx)
    return rt.irfft2_device(spec, n)


def bspline3_coefficients(images: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Periodic cubic B-spline coefficients of ``images`` (``[..., N, N]``), float64 (see
    ``cpu.bspline3_coefficients``; exact inverse of the sampling filter, by FFT)."""
    images = np.asarray(images, dtype=np.float64)
    n = images.shape[-1]
    flat = images.reshape(-1, n, n)
    out = np.empty_like(flat)
    _transform_batches(flat, out, lambda d: bspline3_device(d, n))
    return out.reshape(images.shape)


def rotate_images(
    images: np.ndarray, angles_deg, order: int = 3, workers: int | None = None
) -> np.ndarray:
    """``Rot_phi`` (spec §0.2) of each image about ``N // 2``, periodic boundary; float64 out.

    ``images``: ``[n, N, N]`` (or ``[N, N]``); ``angles_deg``: scalar or ``[n]`` (degrees).
    ``order=3``: cubic B-spline (prefilter by device FFTs, then the interpolation kernel);
    ``order=1``: bilinear. One launch over all images x pixels of a run.
    """
    if order not in (1, 3):
        raise ValueError(f"order must be 1 (bilinear) or 3 (cubic B-spline), got {order}")
    images = np.asarray(images)
    single = images.ndim == 2
    stack = np.asarray(images[None] if single else images, dtype=np.float64)
    n, size = stack.shape[0], stack.shape[-1]
    rad = np.deg2rad(np.broadcast_to(np.asarray(angles_deg, dtype=np.float64), (n,)))
    cos_a = np.cos(rad)
    sin_a = np.sin(rad)
    out = np.empty(stack.shape, dtype=np.float64)
    for a, b in rt.chunk_ranges(n, _FFT_COPIES * stack[0].nbytes):
        src = rt.to_device(stack[a:b])
        if order == 3:
            src = bspline3_device(src, size)
        dout = rt.device_empty((b - a, size, size), np.float64)
        rt.launch_items(
            _rotate,
            (b - a) * size * size,
            src,
            rt.to_device(cos_a[a:b]),
            rt.to_device(sin_a[a:b]),
            float(size // 2),
            order,
            dout,
        )
        out[a:b] = rt.to_host(dout)
    return out[0] if single else out


def permute_images(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Exact integer pull-back ``out[i, f](r) = images[i](M_f r)`` about ``N // 2`` (wrap).

    ``images``: ``[n, N, N]``; ``matrices``: integer ``[F, 2, 2]`` on logical ``(x, y)``.
    Output ``[n, F, N, N]`` in the dtype of ``images``.
    """
    images = np.ascontiguousarray(images)
    mats = rt.to_device(np.asarray(matrices, dtype=np.int64))
    n, size = images.shape[0], images.shape[-1]
    nf = mats.shape[0]
    out = np.empty((n, nf, size, size), dtype=images.dtype)
    for a, b in rt.chunk_ranges(n, (1 + nf) * images[0].nbytes):
        dout = rt.device_empty((b - a, nf, size, size), images.dtype)
        rt.launch_items(
            _permute, (b - a) * nf * size * size, rt.to_device(images[a:b]), mats, size // 2, dout
        )
        out[a:b] = rt.to_host(dout)
    return out


def spectrum_permutation(n: int, matrices: np.ndarray, dtype) -> tuple:
    """Device gather tables of a spectrum permutation (``cpu.permute_spectra``): source index,
    conjugation flag and the phase as real and imaginary parts in ``dtype``, ``[F, N(N//2+1)]``."""
    mats = np.ascontiguousarray(np.asarray(matrices, dtype=np.int64))
    src, conj, phase = spectrum_permutation_table(n, mats.tobytes())
    real = np.float32 if np.dtype(dtype) in (np.float32, np.complex64) else np.float64
    return (
        rt.to_device(src),
        rt.to_device(conj),
        rt.to_device(phase.real.astype(real)),
        rt.to_device(phase.imag.astype(real)),
    )


def gather_spectra(d_spec, tables, flip: bool, out_re, out_im) -> None:
    """Launch the spectrum gather: ``d_spec`` device complex ``[m, P]``, ``tables`` from
    :func:`spectrum_permutation` (``F`` rows), outputs ``[m F, P]`` real parts (device)."""
    re, im = rt.complex_parts(d_spec)
    nf, npx = tables[0].shape
    rt.launch_items(_gather_spectra, re.shape[0] * nf * npx, re, im, *tables, flip, out_re, out_im)


def permute_spectra(spectra: np.ndarray, matrices: np.ndarray, n: int) -> np.ndarray:
    """``rfft2(permute_images(images, matrices))`` from ``spectra = rfft2(images)``, exactly.

    ``spectra``: ``[m, N, N//2+1]``; ``matrices``: integer orthogonal ``[F, 2, 2]``. One gather
    per output coefficient (conjugated outside the half plane, times the phase of the moved
    centre). Output ``[m, F, N, N//2+1]`` in the dtype of ``spectra``.
    """
    spectra = np.ascontiguousarray(spectra)
    m, h = spectra.shape[0], n // 2 + 1
    if spectra.shape[1:] != (n, h):
        raise ValueError(f"spectra are {spectra.shape[1:]}, expected {(n, h)} for N = {n}")
    tables = spectrum_permutation(n, matrices, spectra.dtype)
    nf = tables[0].shape[0]
    out = np.empty((m, nf, n, h), dtype=spectra.dtype)
    for a, b in rt.chunk_ranges(m, (1 + nf) * spectra[0].nbytes):
        dout = rt.device_empty(((b - a) * nf, n * h), spectra.dtype)
        gather_spectra(
            rt.to_device(spectra[a:b].reshape(b - a, n * h)), tables, False, *rt.complex_parts(dout)
        )
        out[a:b] = rt.to_host(dout).reshape(b - a, nf, n, h)
    return out


def roll_images(images: np.ndarray, index: np.ndarray, shifts_xy: np.ndarray) -> np.ndarray:
    """Integer cyclic shifts ``out[t] = Sh_v[images[index[t]]]`` with ``v = shifts_xy[t]``.

    ``Sh_v[I](r) = I(r - v)`` (``v = (vx, vy)`` px). ``out``: ``[len(index), N, N]``, dtype of
    ``images`` (all images on the device once, outputs in runs).
    """
    images = np.ascontiguousarray(images)
    index = np.ascontiguousarray(index, dtype=np.int64)
    shifts = np.ascontiguousarray(np.asarray(shifts_xy, dtype=np.int64).reshape(-1, 2))
    out = np.empty((index.shape[0], *images.shape[1:]), dtype=images.dtype)
    if index.size == 0:
        return out
    size = images.shape[-1]
    dimg = rt.to_device(images)
    for a, b in rt.chunk_ranges(len(index), images[0].nbytes):
        dout = rt.device_empty((b - a, size, size), images.dtype)
        rt.launch_items(
            _roll,
            (b - a) * size * size,
            dimg,
            rt.to_device(index[a:b]),
            rt.to_device(shifts[a:b]),
            dout,
        )
        out[a:b] = rt.to_host(dout)
    return out


def shift_images(images: np.ndarray, shifts_xy, workers: int | None = None) -> np.ndarray:
    """Sub-pixel ``Sh_v`` (spec §0.2) by a Fourier phase ramp (periodic), float64 out.

    ``images``: ``[n, N, N]``; ``shifts_xy``: ``[n, 2]`` (or ``[2]``) as ``(vx, vy)`` px.
    Device FFT, the ramp kernel ``exp(-2 pi i k.v / N)`` in place, device inverse FFT.
    """
    images = np.asarray(images, dtype=np.float64)
    single = images.ndim == 2
    stack = images[None] if single else images
    n = stack.shape[-1]
    v = np.broadcast_to(np.asarray(shifts_xy, dtype=np.float64).reshape(-1, 2), (len(stack), 2))
    out = np.empty(stack.shape, dtype=np.float64)
    for a, b in rt.chunk_ranges(len(stack), _FFT_COPIES * stack[0].nbytes):
        spec = rt.rfft2_device(rt.to_device(stack[a:b]))
        re, im = rt.complex_parts(spec)
        dv = rt.to_device(v[a:b])
        rt.launch_items(_phase_ramp, (b - a) * n * (n // 2 + 1), re, im, dv, n)
        out[a:b] = rt.to_host(rt.irfft2_device(spec, n))
    return out[0] if single else out


@functools.lru_cache(maxsize=32)
def _shell_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of every integer shell ``round(r)`` about ``N // 2``: ``(ptr [R + 1], pix)``."""
    shells = np.rint(radius_grid(n)).astype(np.int64).ravel()
    pix = np.argsort(shells, kind="stable")
    ptr = np.searchsorted(shells[pix], np.arange(shells.max() + 2))
    return ptr.astype(np.int64), pix.astype(np.int64)


def radial_average(images: np.ndarray) -> np.ndarray:
    """Mean over integer shells ``round(r)`` about ``N // 2``: ``[..., N, N] -> [..., R]``
    (float64; ``R = max(round(r)) + 1``). One thread per (image, shell)."""
    images = np.asarray(images)
    n = images.shape[-1]
    ptr, pix = _shell_table(n)
    flat = np.ascontiguousarray(images.reshape(-1, n * n))
    ns = len(ptr) - 1
    out = np.empty((flat.shape[0], ns))
    dptr, dpix = rt.to_device(ptr), rt.to_device(pix)
    for a, b in rt.chunk_ranges(len(flat), flat[0].nbytes + 8 * ns):
        dout = rt.device_empty((b - a, ns), np.float64)
        rt.launch_items(_shell_means, (b - a) * ns, rt.to_device(flat[a:b]), dptr, dpix, dout)
        out[a:b] = rt.to_host(dout)
    return out.reshape(*images.shape[:-2], ns)
