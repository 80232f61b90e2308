"""CUDA twins of ``kernels.cpu.ml2d``: the ML2D E-step inner loops (spec §1.6, §1.7, §1.12).

Same vocabulary, signatures, dtypes and results as the CPU module (see its docstring): a block
is one ``(image, class, angle, flip)``, its ``W x W`` window holds the integer translations
(``sy = a - w``, ``sx = b - w``), blocks are image-major (``img_ptr``), operands are
``[m, 2, N, N//2+1]`` real/imaginary planes of the transposed spectra. Host arrays in and out.

How the work maps to the GPU (one launch per step over all items of a run, grid-stride):

* operands: one batched cuFFT per image, then one gather kernel over images x flips x
  coefficients (flips and the transpose are permutations of the spectrum);
* correlations: a product kernel over blocks x coefficients, one batched cuFFT inverse of all
  blocks (``norm="forward"``: the 1/N^2 is in the reference operands), a kernel that cuts the
  ``W x W`` window out (transposed back); the pruned DFTs of the CPU are not needed on a GPU;
* posteriors: kernels over blocks x window rows (maxima, weights), blocks and images (the
  log-sum-exp reductions, in a fixed order: deterministic, float64 as on the CPU); one
  host round trip per run for the list of surviving blocks;
* accumulations: blocks sorted by key on the host; one thread per (key, pixel) or (key,
  coefficient) sums its key's blocks in float64 and adds to the accumulator (no atomics, no
  races, deterministic); the spectral path embeds the weight windows and transforms them with
  one batched cuFFT.

Chunking: the items of a call (blocks, images or keys) are cut into runs with
:func:`runtime.chunk_ranges`, sized from the device bytes one item needs (its intermediates
plus cuFFT work space, see each ``per_*`` below) so that a run fits in half of the free device
memory; inputs that every item reads (operands, images, accumulators) go to the device once per
call. Posteriors are cut at image boundaries (the log-sum-exp is per image). On a real GPU a
run is normally the whole call: the E-step already bounds a call by ``max_blocks``.

``ml2d_window_phase`` and ``ml2d_window_accumulator`` (a constant table and a zeroed host
array) are the CPU ones.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cryosnake.kernels.cpu import ml2d as _cpu
from cryosnake.kernels.cpu.ml2d import (  # noqa: F401 - host-only helpers, re-exported
    ml2d_window_accumulator,
    ml2d_window_phase,
)
from cryosnake.kernels.host import key_runs, sort_by_key
from cryosnake.kernels.interface import BlockPosteriors

from . import runtime as rt
from .image import _FFT_COPIES, _rolled, gather_spectra, spectrum_permutation, split3

__all__ = list(_cpu.__all__)  # the CPU twin's names, in its order

_TRANSPOSE = np.array([[[0, 1], [1, 0]]])


# --- kernels: spectra and windows ------------------------------------------------------------


@cuda.jit
def _products(xre, xim, bre, bim, blk_x, blk_b, ore, oim):  # pragma: no cover - device code
    # out[t, p] = x[blk_x[t], p] * b[blk_b[t], p] (complex, as parts; [n, P] each)
    nb = blk_x.shape[0]
    npx = xre.shape[1]
    for t in range(cuda.grid(1), nb * npx, cuda.gridsize(1)):
        k = t // npx
        p = t % npx
        i = blk_x[k]
        j = blk_b[k]
        ore[k, p] = xre[i, p] * bre[j, p] - xim[i, p] * bim[j, p]
        oim[k, p] = xre[i, p] * bim[j, p] + xim[i, p] * bre[j, p]


@cuda.jit
def _window(src, transpose, out):  # pragma: no cover - device code
    # out[t, a, b] = src[t, a, b] (or src[t, b, a]) for the leading W x W corner
    m, ww = out.shape[0], out.shape[1]
    for t in range(cuda.grid(1), m * ww * ww, cuda.gridsize(1)):
        k, a, b = split3(t, ww, ww)
        out[k, a, b] = src[k, b, a] if transpose else src[k, a, b]


@cuda.jit
def _embed(gamma, rows, offset, transpose, out):  # pragma: no cover - device code
    # out[t, (a + offset) % N, (b + offset) % N] = gamma[rows[t], a, b] (or at [b, a]); out is
    # zeroed beforehand
    m, ww = rows.shape[0], gamma.shape[1]
    n = out.shape[1]
    for t in range(cuda.grid(1), m * ww * ww, cuda.gridsize(1)):
        k, a, b = split3(t, ww, ww)
        r = (a + offset) % n
        c = (b + offset) % n
        if transpose:
            out[k, c, r] = gamma[rows[k], a, b]
        else:
            out[k, r, c] = gamma[rows[k], a, b]


@cuda.jit
def _projections(images, index, shifts, refs, zero, out):  # pragma: no cover - device code
    # out[p, r] = <Sh_v images[index[p]], refs[r]>, v = shifts[p], summed in the images' dtype
    npair, nref = out.shape
    size = images.shape[1]
    for t in range(cuda.grid(1), npair * nref, cuda.gridsize(1)):
        p = t // nref
        r = t % nref
        img = images[index[p]]
        sx = shifts[p, 0]
        sy = shifts[p, 1]
        acc = zero
        for row in range(size):
            for col in range(size):
                acc += _rolled(img, sx, sy, row, col, size) * refs[r, row * size + col]
        out[p, r] = acc


# --- kernels: posteriors (spec §1.6.1, §1.6.2) -----------------------------------------------


@cuda.jit
def _row_maxima(
    c, blk_const, blk_scale, blk_logprior, log_offset_prior, inv_sigma2, row_max, row_arg
):  # pragma: no cover - device code
    # largest log-weight of every window row (b, a) and its first flat index a W + s
    nb, ww = c.shape[0], c.shape[1]
    for t in range(cuda.grid(1), nb * ww, cuda.gridsize(1)):
        b, a = t // ww, t % ww
        lp, k0, k1 = blk_logprior[b], blk_const[b], blk_scale[b]
        m = -math.inf
        arg = 0
        for s in range(ww):
            v = lp + log_offset_prior[a, s] - (k0 - k1 * c[b, a, s]) * inv_sigma2
            if v > m:
                m = v
                arg = a * ww + s
        row_max[t] = m
        row_arg[t] = arg


@cuda.jit
def _block_maxima(row_max, row_arg, ww, blk_logmax, blk_argmax):  # pragma: no cover
    # per block: the first row that reaches the maximum (first flat index of the maximum)
    nb = blk_logmax.shape[0]
    for b in range(cuda.grid(1), nb, cuda.gridsize(1)):
        m = -math.inf
        arg = 0
        for a in range(b * ww, (b + 1) * ww):
            if row_max[a] > m:
                m = row_max[a]
                arg = row_arg[a]
        blk_logmax[b] = m
        blk_argmax[b] = arg


@cuda.jit
def _image_maxima(
    img_ptr, blk_logmax, blk_argmax, log_skip, blk_alive, img_big, img_best, img_shift
):  # pragma: no cover - device code
    # per image: largest log-weight (first block reaching it), then the skip rule
    n_img = img_ptr.shape[0] - 1
    for i in range(cuda.grid(1), n_img, cuda.gridsize(1)):
        big = -math.inf
        best = -1
        for b in range(img_ptr[i], img_ptr[i + 1]):
            if best < 0 or blk_logmax[b] > big:
                big = blk_logmax[b]
                best = b
        img_big[i] = big
        img_best[i] = best
        img_shift[i] = blk_argmax[best] if best >= 0 else -1
        for b in range(img_ptr[i], img_ptr[i + 1]):
            blk_alive[b] = blk_logmax[b] - big > log_skip


@cuda.jit
def _row_weights(
    c,
    blk_const,
    blk_scale,
    blk_logprior,
    log_offset_prior,
    shift_r2,
    inv_sigma2,
    entry_cutoff,
    kept,
    blk_img,
    img_big,
    gamma,
    row_sums,
    row_count,
):  # pragma: no cover - device code
    # weights e^{log w - M} of every row of the kept blocks (entries below the cut-off are 0)
    # and the row sums of w, w 2 d, w |s|^2 (float64)
    nk, ww = kept.shape[0], c.shape[1]
    for t in range(cuda.grid(1), nk * ww, cuda.gridsize(1)):
        g, a = t // ww, t % ww
        b = kept[g]
        lp, k0, k1 = blk_logprior[b], blk_const[b], blk_scale[b]
        big = img_big[blk_img[b]]
        acc = 0.0
        noise = 0.0
        off = 0.0
        cnt = 0
        for s in range(ww):
            dv = k0 - k1 * c[b, a, s]
            w = math.exp(lp + log_offset_prior[a, s] - dv * inv_sigma2 - big)
            if w >= entry_cutoff:
                cnt += 1
            else:
                w = 0.0
            acc += w
            noise += w * 2.0 * dv
            off += w * shift_r2[a, s]
            gamma[g, a, s] = w
        row_sums[t, 0] = acc
        row_sums[t, 1] = noise
        row_sums[t, 2] = off
        row_count[t] = cnt


@cuda.jit
def _image_totals(
    img_ptr,
    blk_row,
    row_sums,
    row_count,
    ww,
    img_big,
    blk_wsum,
    blk_count,
    img_logsum,
    img_pmax,
    img_noise,
    img_offset,
    img_inv_total,
):  # pragma: no cover - device code
    # per image, blocks and rows in order: block sums, the total W, LL and the expectations
    n_img = img_ptr.shape[0] - 1
    for i in range(cuda.grid(1), n_img, cuda.gridsize(1)):
        b0 = img_ptr[i]
        b1 = img_ptr[i + 1]
        total = 0.0
        noise = 0.0
        off = 0.0
        for b in range(b0, b1):
            g = blk_row[b]
            wsum = 0.0
            cnt = 0
            if g >= 0:
                for r in range(g * ww, (g + 1) * ww):
                    wsum += row_sums[r, 0]
                    noise += row_sums[r, 1]
                    off += row_sums[r, 2]
                    cnt += row_count[r]
            blk_wsum[b] = wsum
            blk_count[b] = cnt
            total += wsum
        if b1 == b0:
            img_logsum[i] = -math.inf
            img_pmax[i] = 0.0
            img_noise[i] = 0.0
            img_offset[i] = 0.0
            img_inv_total[i] = 0.0
            continue
        inv_total = 1.0 / total
        for b in range(b0, b1):
            blk_wsum[b] *= inv_total
        img_logsum[i] = img_big[i] + math.log(total)
        img_pmax[i] = inv_total
        img_noise[i] = noise * inv_total
        img_offset[i] = off * inv_total
        img_inv_total[i] = inv_total


@cuda.jit
def _normalise(gamma, kept, blk_img, img_inv_total):  # pragma: no cover - device code
    nk, ww = gamma.shape[0], gamma.shape[1]
    for t in range(cuda.grid(1), nk * ww * ww, cuda.gridsize(1)):
        g, a, s = split3(t, ww, ww)
        gamma[g, a, s] *= img_inv_total[blk_img[kept[g]]]


# --- kernels: accumulation (spec §1.6.3, §1.7) ----------------------------------------------


@cuda.jit
def _accumulate_shifted(
    acc, images, run_key, run_ptr, ent_img, ent_sx, ent_sy, ent_g, ent_scale
):  # pragma: no cover - device code
    # acc[key](p) += sum over the key's entries of scale gamma Y(p + s), one thread per pixel
    nruns = run_key.shape[0]
    size = images.shape[1]
    npx = size * size
    for t in range(cuda.grid(1), nruns * npx, cuda.gridsize(1)):
        k, r, col = split3(t, size, size)
        total = 0.0
        for e in range(run_ptr[k], run_ptr[k + 1]):
            y = _rolled(images[ent_img[e]], -ent_sx[e], -ent_sy[e], r, col, size)
            total += ent_g[e] * ent_scale[e] * y
        acc[run_key[k], r, col] += total


@cuda.jit
def _accumulate_products(
    acc_re, acc_im, gre, gim, xre, xim, run_key, run_ptr, blk_g, blk_x, blk_scale
):  # pragma: no cover - device code
    # acc[key, p] += sum over the key's blocks of scale conj(G[blk_g, p]) X[blk_x, p]; products
    # in the operands' precision, sums in float64
    nruns = run_key.shape[0]
    npx = gre.shape[1]
    for t in range(cuda.grid(1), nruns * npx, cuda.gridsize(1)):
        k = t // npx
        p = t % npx
        sr = 0.0
        si = 0.0
        for q in range(run_ptr[k], run_ptr[k + 1]):
            sc = blk_scale[q]
            cr = sc * gre[blk_g[q], p]
            ci = -sc * gim[blk_g[q], p]
            x = blk_x[q]
            sr += float(cr * xre[x, p] - ci * xim[x, p])
            si += float(cr * xim[x, p] + ci * xre[x, p])
        acc_re[run_key[k], p] += sr
        acc_im[run_key[k], p] += si


# --- host helpers -----------------------------------------------------------------------------


def _planes(d, m: int):
    """Real and imaginary planes ``[m, P]`` of device operands ``[m, 2, N, N//2+1]``."""
    flat = d.reshape(m, 2, d.size // (2 * max(m, 1)))
    return flat[:, 0], flat[:, 1]


def _operands(spectra_of, m: int, n: int, tables, flip: bool, rtype) -> np.ndarray:
    """Operands ``[m F, 2, N, N//2+1]`` gathered from device spectra ``spectra_of(a, b)``
    (``[b - a, N (N//2+1)]``) with the ``F`` tables of :func:`spectrum_permutation`."""
    h = n // 2 + 1
    nf = tables[0].shape[0]
    out = np.empty((m * nf, 2, n, h), dtype=rtype)
    per_image = (_FFT_COPIES + nf) * 2 * n * h * np.dtype(rtype).itemsize
    for a, b in rt.chunk_ranges(m, per_image):
        dout = rt.device_empty(((b - a) * nf, 2, n * h), rtype)
        gather_spectra(spectra_of(a, b), tables, flip, dout[:, 0], dout[:, 1])
        out[a * nf : b * nf] = rt.to_host(dout).reshape(-1, 2, n, h)
    return out


def _spectra_of_images(images: np.ndarray):
    n = images.shape[-1]
    return lambda a, b: rt.rfft2_device(rt.to_device(images[a:b])).reshape(b - a, n * (n // 2 + 1))


def _windows_of(d_real, ww: int, transpose: bool, dtype):
    """Device ``[m, W, W]`` leading corners of device images ``[m, N, N]`` (transposed)."""
    out = rt.device_empty((d_real.shape[0], ww, ww), dtype)
    rt.launch_items(_window, d_real.shape[0] * ww * ww, d_real, transpose, out)
    return out


def _image_runs(img_ptr: np.ndarray, max_blocks: int):
    """Runs ``(i0, i1)`` of consecutive images with at most ``max_blocks`` blocks (>= 1 image)."""
    n_img = len(img_ptr) - 1
    i0 = 0
    while i0 < n_img:
        i1 = int(np.searchsorted(img_ptr, img_ptr[i0] + max_blocks, side="right")) - 1
        i1 = min(n_img, max(i1, i0 + 1))
        yield i0, i1
        i0 = i1


# --- public kernels ---------------------------------------------------------------------------


def ml2d_image_operands(images: np.ndarray) -> np.ndarray:
    """Operands of :func:`ml2d_block_correlations` for images ``Y`` ``[m, N, N]``: real and
    imaginary planes of ``rfft2`` of the transposed images ``[m, 2, N, N//2+1]`` (float32 for
    float32 input, else float64); the transpose is a gather of each image's spectrum."""
    images = np.asarray(images)
    n = images.shape[-1]
    rtype = np.float32 if images.dtype == np.float32 else np.float64
    tables = spectrum_permutation(n, _TRANSPOSE, rtype)
    return _operands(_spectra_of_images(images), images.shape[0], n, tables, False, rtype)


def ml2d_permuted_operands(spectra: np.ndarray, matrices: np.ndarray, n: int) -> np.ndarray:
    """:func:`ml2d_image_operands` of ``permute_images(images, matrices)`` (flattened to
    ``[m * F, ...]``, image-major) from ``spectra = rfft2(images)`` ``[m, N, N//2+1]``: one
    gather kernel over images x flips x coefficients (spec §1.7)."""
    spectra = np.ascontiguousarray(spectra)
    mats = np.asarray(matrices, dtype=np.int64) @ _TRANSPOSE[0]  # then transpose
    m, h = spectra.shape[0], n // 2 + 1
    if spectra.shape[1:] != (n, h):
        raise ValueError(f"spectra are {spectra.shape[1:]}, expected {(n, h)} for N = {n}")
    tables = spectrum_permutation(n, mats, spectra.dtype)
    flat = spectra.reshape(m, n * h)
    return _operands(
        lambda a, b: rt.to_device(flat[a:b]), m, n, tables, False, rt.real_of(spectra.dtype)
    )


def ml2d_reference_operands(references: np.ndarray, half_width: int) -> np.ndarray:
    """Operands of :func:`ml2d_block_correlations` for references ``B`` ``[m, N, N]``:
    ``conj(FFT(B^T))`` times :func:`ml2d_window_phase` and ``1 / N^2``, as planes."""
    references = np.asarray(references)
    n = references.shape[-1]
    rtype = np.float32 if references.dtype == np.float32 else np.float64
    src, conj, _, _ = spectrum_permutation(n, _TRANSPOSE, rtype)  # the transpose has phase 1
    phase = (ml2d_window_phase(n, half_width) / n**2).astype(rt.complex_of(rtype)).reshape(1, -1)
    tables = (src, conj, rt.to_device(phase.real.copy()), rt.to_device(phase.imag.copy()))
    return _operands(_spectra_of_images(references), references.shape[0], n, tables, True, rtype)


def ml2d_block_correlations(
    image_ops: np.ndarray,
    reference_ops: np.ndarray,
    blk_x: np.ndarray,
    blk_b: np.ndarray,
    half_width: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Correlation windows ``c[t, a, b] = sum_p B(p) Y(p + s)`` of every block (spec §1.6, §1.7,
    trap 6: ``sy = a - w``, ``sx = b - w``), ``Y = images[blk_x[t]]``, ``B =
    references[blk_b[t]]`` as operands (same dtype). Per run of blocks: the product kernel,
    one batched inverse cuFFT, the window kernel. ``out``: optional C-contiguous ``[nb, W, W]``
    of the operands' dtype.
    """
    n = image_ops.shape[2]
    W = 2 * int(half_width) + 1
    if reference_ops.dtype != image_ops.dtype or reference_ops.shape[1:] != image_ops.shape[1:]:
        raise ValueError("image and reference operands differ in dtype or shape")
    if W > n:
        raise ValueError(f"window {W} exceeds the image size {n}")
    nb = len(blk_x)
    dtype = image_ops.dtype
    if out is None:
        out = np.empty((nb, W, W), dtype=dtype)
    if out.shape != (nb, W, W) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous [nb, W, W] array of the operands' dtype")
    if nb == 0:
        return out
    h = n // 2 + 1
    xs = _planes(rt.to_device(np.ascontiguousarray(image_ops)), image_ops.shape[0])
    bs = _planes(rt.to_device(np.ascontiguousarray(reference_ops)), reference_ops.shape[0])
    blk_x = np.asarray(blk_x, np.int64)
    blk_b = np.asarray(blk_b, np.int64)
    per_block = (_FFT_COPIES * 2 * n * h + n * n + W * W) * dtype.itemsize
    for a, b in rt.chunk_ranges(nb, per_block):
        prod = rt.device_empty((b - a, n, h), rt.complex_of(dtype))
        rt.launch_items(
            _products,
            (b - a) * n * h,
            *xs,
            *bs,
            rt.to_device(blk_x[a:b]),
            rt.to_device(blk_b[a:b]),
            *rt.complex_parts(prod.reshape(b - a, n * h)),
        )
        # rows of the inverse are x shifts, columns y shifts (transposed operands)
        real = rt.irfft2_device(prod, n, norm="forward")
        out[a:b] = rt.to_host(_windows_of(real, W, True, dtype))
    return out


def ml2d_projection_operands(references: np.ndarray, dtype=np.float32):
    """Operands of :func:`ml2d_shifted_projections`: the references ``[n_ref, N*N]``
    (``dtype``) on the device. Build once per E-step."""
    refs = np.asarray(references)
    return rt.to_device(np.ascontiguousarray(refs.reshape(refs.shape[0], -1), dtype=dtype))


def ml2d_shifted_projections(
    images: np.ndarray, index: np.ndarray, shifts_xy: np.ndarray, reference_ops
) -> np.ndarray:
    """``out[p, r] = <Sh_v[images[index[p]]], references[r]>`` with ``v = shifts_xy[p]``
    (integer cyclic shifts, content moves by ``+v``): the fast-mode pre-selection (spec §1.12).
    ``reference_ops`` from :func:`ml2d_projection_operands`. One thread per (image,
    reference), summed in the dtype of ``images``. ``[len(index), n_ref]``."""
    images = np.ascontiguousarray(images)
    dref = reference_ops
    n_ref = dref.shape[0]
    if dref.dtype != images.dtype or dref.shape[1] != images[0].size:
        raise ValueError("reference operands differ from the images in dtype or size")
    index = np.ascontiguousarray(index, np.int64)
    shifts = np.ascontiguousarray(np.asarray(shifts_xy, np.int64).reshape(-1, 2))
    out = np.empty((index.shape[0], n_ref), dtype=images.dtype)
    if index.size == 0:
        return out
    dimg = rt.to_device(images)
    zero = images.dtype.type(0)
    for a, b in rt.chunk_ranges(len(index), 16 + n_ref * images.itemsize):
        dout = rt.device_empty((b - a, n_ref), images.dtype)
        rt.launch_items(
            _projections,
            (b - a) * n_ref,
            dimg,
            rt.to_device(index[a:b]),
            rt.to_device(shifts[a:b]),
            dref,
            zero,
            dout,
        )
        out[a:b] = rt.to_host(dout)
    return out


def _posteriors_run(c, args, consts, res, i0, i1, img_ptr):
    """Posteriors of the images ``i0 .. i1 - 1`` (all their blocks on the device at once);
    fills their per-block and per-image entries of ``res``, returns ``(kept, gamma)``."""
    W, inv_sigma2, log_skip, entry_cutoff = consts
    b0 = int(img_ptr[i0])
    ptr = img_ptr[i0 : i1 + 1] - b0
    n_img, nb = i1 - i0, int(ptr[-1])
    bsl, isl = slice(b0, b0 + nb), slice(i0, i1)
    dc = rt.to_device(c[bsl])
    const, scale, logprior = (rt.to_device(x[bsl]) for x in args[:3])
    lpo, r2 = rt.to_device(args[3]), rt.to_device(args[4])
    dptr = rt.to_device(ptr)
    # pass 1: maxima per window row, block and image; the skip rule (one host round trip)
    row_max = rt.device_empty(nb * W, np.float64)
    row_arg = rt.device_empty(nb * W, np.int64)
    rt.launch_items(
        _row_maxima, nb * W, dc, const, scale, logprior, lpo, inv_sigma2, row_max, row_arg
    )
    logmax = rt.device_empty(nb, np.float64)
    argmax = rt.device_empty(nb, np.int64)
    rt.launch_items(_block_maxima, nb, row_max, row_arg, W, logmax, argmax)
    alive = rt.device_empty(nb, np.bool_)
    big = rt.device_empty(n_img, np.float64)
    best = rt.device_empty(n_img, np.int64)
    best_shift = rt.device_empty(n_img, np.int64)
    rt.launch_items(
        _image_maxima, n_img, dptr, logmax, argmax, log_skip, alive, big, best, best_shift
    )
    kept = np.flatnonzero(rt.to_host(alive)) if nb else np.zeros(0, np.int64)
    row = np.full(nb, -1, np.int64)
    row[kept] = np.arange(kept.size)
    # pass 2: weights of the kept blocks, sums per block and image, normalisation
    blk_img = rt.to_device(np.repeat(np.arange(n_img), np.diff(ptr)))
    dkept = rt.to_device(kept)
    gamma = rt.device_empty((kept.size, W, W), np.float64)
    row_sums = rt.device_empty((kept.size * W, 3), np.float64)
    row_count = rt.device_empty(kept.size * W, np.int64)
    rt.launch_items(
        _row_weights,
        kept.size * W,
        dc,
        const,
        scale,
        logprior,
        lpo,
        r2,
        inv_sigma2,
        entry_cutoff,
        dkept,
        blk_img,
        big,
        gamma,
        row_sums,
        row_count,
    )
    wsum = rt.device_empty(nb, np.float64)
    count = rt.device_empty(nb, np.int64)
    per_image = [rt.device_empty(n_img, np.float64) for _ in range(5)]
    rt.launch_items(
        _image_totals,
        n_img,
        dptr,
        rt.to_device(row),
        row_sums,
        row_count,
        W,
        big,
        wsum,
        count,
        *per_image,
    )
    rt.launch_items(_normalise, kept.size * W * W, gamma, dkept, blk_img, per_image[4])
    for name, d in (("wsum", wsum), ("logmax", logmax), ("argmax", argmax), ("count", count)):
        res[name][bsl] = rt.to_host(d)
    for name, d in zip(("logsum", "pmax", "noise", "offset"), per_image[:4], strict=True):
        res[name][isl] = rt.to_host(d)
    b = rt.to_host(best)
    res["best_block"][isl] = np.where(b >= 0, b + b0, -1)
    res["best_shift"][isl] = rt.to_host(best_shift)
    return kept + b0, rt.to_host(gamma)


def ml2d_block_posteriors(
    c: np.ndarray,
    blk_const: np.ndarray,
    blk_scale: np.ndarray,
    img_ptr: np.ndarray,
    blk_logprior: np.ndarray,
    log_offset_prior: np.ndarray,
    shift_r2: np.ndarray,
    sigma2: float,
    block_skip: float = 1e-8,
    entry_cutoff: float = 0.0,
    gamma_buffer: np.ndarray | None = None,
) -> BlockPosteriors:
    """Posteriors of every translation of every block, log-sum-exp per image (spec §1.6).

    Same inputs and result as ``cpu.ml2d_block_posteriors``: ``log w_h = blk_logprior +
    log P(s) - (blk_const - blk_scale c) / sigma^2``; blocks whose largest ``w_h / e^M`` is
    ``<= block_skip`` are dropped, entries below ``entry_cutoff`` are 0. Returns a
    :class:`~cryosnake.kernels.interface.BlockPosteriors` (its ``gamma`` a view of
    ``gamma_buffer`` when that is large enough).
    """
    nb, W = c.shape[0], c.shape[1]
    n_img = len(img_ptr) - 1
    img_ptr = np.asarray(img_ptr, np.int64)
    args = (
        np.asarray(blk_const, np.float64),
        np.asarray(blk_scale, np.float64),
        np.asarray(blk_logprior, np.float64),
        np.asarray(log_offset_prior, np.float64).reshape(W, W),
        np.asarray(shift_r2, np.float64).reshape(W, W),
    )
    res = {name: np.empty(nb) for name in ("wsum", "logmax")}
    res.update(argmax=np.empty(nb, np.int64), count=np.empty(nb, np.int64))
    res.update({name: np.empty(n_img) for name in ("logsum", "pmax", "noise", "offset")})
    res.update(best_block=np.empty(n_img, np.int64), best_shift=np.empty(n_img, np.int64))
    log_skip = math.log(block_skip) if block_skip > 0 else -np.inf
    consts = (W, 1.0 / float(sigma2), log_skip, float(entry_cutoff))
    per_block = W * W * (c.itemsize + 8) + W * 48 + 64  # c, gamma, row partials, block arrays
    runs = _image_runs(img_ptr, rt.batch_size(per_block, max(nb, 1)))
    parts = [_posteriors_run(c, args, consts, res, i0, i1, img_ptr) for i0, i1 in runs]
    kept = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    if gamma_buffer is not None and gamma_buffer.shape[0] >= kept.size:
        gamma = gamma_buffer[: kept.size]
    else:
        gamma = np.empty((kept.size, W, c.shape[2]))
    if parts:
        np.concatenate([p[1] for p in parts], out=gamma)
    return BlockPosteriors(kept=kept, gamma=gamma, **res)


def ml2d_accumulate_direct(
    acc: np.ndarray,
    images: np.ndarray,
    gamma: np.ndarray,
    blk_key: np.ndarray,
    blk_img: np.ndarray,
    blk_scale: np.ndarray,
    half_width: int,
) -> None:
    """``acc[key] += sum_s scale * gamma(s) * Y(. + s)`` for each listed block, in place.

    Real-space accumulation of ``S_kj`` (spec §1.6.3) for blocks with few non-zero weights:
    ``acc`` ``[n_keys, N, N]`` float64, ``images`` ``[nY, N, N]``, ``gamma`` ``[nb, W, W]``,
    ``blk_key``, ``blk_img``, ``blk_scale`` ``[nb]``. The non-zero weights are listed by key
    on the host; one thread per (key, pixel) sums them (inputs and ``acc`` go to the device
    once, no intermediate buffers).
    """
    if blk_key.shape[0] == 0:
        return
    gamma = np.asarray(gamma)
    blk, a, b = np.nonzero(gamma)
    key = np.asarray(blk_key, np.int64)[blk]
    order = np.argsort(key, kind="stable")
    blk, a, b = blk[order], a[order], b[order]
    run_key, run_ptr = key_runs(key[order])
    size = images.shape[-1]
    d_acc = rt.to_device(acc)
    rt.launch_items(
        _accumulate_shifted,
        len(run_key) * size * size,
        d_acc,
        rt.to_device(images),
        rt.to_device(run_key),
        rt.to_device(run_ptr),
        rt.to_device(np.asarray(blk_img, np.int64)[blk]),
        rt.to_device((b - half_width).astype(np.int64)),
        rt.to_device((a - half_width).astype(np.int64)),
        rt.to_device(gamma[blk, a, b].astype(np.float64)),
        rt.to_device(np.asarray(blk_scale, np.float64)[blk]),
    )
    acc[...] = rt.to_host(d_acc)


def _accumulate_keyed(acc_parts, g_of, x_parts, blk_key, blk_x, blk_scale, per_block) -> None:
    """Add ``scale conj(G) X`` of every block to its key, on the device: blocks sorted by key,
    cut into runs of :func:`runtime.chunk_ranges`; ``g_of(order_chunk)`` returns the device
    ``(G parts [c, P], rows of G for each block of the chunk)``."""
    order, keys, _ = sort_by_key(blk_key)
    bx = np.asarray(blk_x, np.int64)[order]
    sc = np.asarray(blk_scale)[order]
    for a, b in rt.chunk_ranges(len(order), per_block):
        (gre, gim), g_rows = g_of(order[a:b])
        run_key, run_ptr = key_runs(keys[a:b])
        rt.launch_items(
            _accumulate_products,
            len(run_key) * gre.shape[1],
            *acc_parts,
            gre,
            gim,
            *x_parts,
            rt.to_device(run_key),
            rt.to_device(run_ptr),
            rt.to_device(g_rows),
            rt.to_device(bx[a:b]),
            rt.to_device(sc[a:b]),
        )


def ml2d_accumulate_windows(
    acc: np.ndarray,
    gamma: np.ndarray,
    image_ops: np.ndarray,
    blk_key: np.ndarray,
    blk_x: np.ndarray,
    blk_scale: np.ndarray,
    half_width: int,
    gamma_rows: np.ndarray | None = None,
) -> None:
    """``S_key += sum_s scale * gamma(s) * Y(. + s)`` for every block, in Fourier space, in place.

    As ``cpu.ml2d_accumulate_windows`` (spec §1.6.3, §1.7): the weight windows ``gamma``
    ``[nb, W, W]`` (row ``gamma_rows[t]`` for block ``t``) are embedded (transposed) in
    ``N x N`` arrays, transformed by one batched cuFFT, multiplied by ``conj`` of it times the
    image operands and summed per key into ``acc`` (:func:`ml2d_window_accumulator`).
    """
    n, W = image_ops.shape[2], 2 * int(half_width) + 1
    if gamma.shape[1:] != (W, W) or acc.shape[1:] != (2, n, n // 2 + 1):
        raise ValueError("gamma or acc do not match the window and the image size")
    if acc.dtype != np.float64 or not acc.flags.c_contiguous:
        raise ValueError("acc must be a C-contiguous float64 accumulator")
    if len(blk_key) == 0:
        return
    rows = np.arange(len(blk_key)) if gamma_rows is None else np.asarray(gamma_rows, np.int64)
    dtype = np.dtype(image_ops.dtype)
    dg = rt.to_device(np.ascontiguousarray(gamma))
    d_acc = rt.to_device(acc)

    def transformed(sel):
        emb = rt.device_zeros((len(sel), n, n), dtype)
        rt.launch_items(_embed, len(sel) * W * W, dg, rt.to_device(rows[sel]), 0, True, emb)
        spec = rt.rfft2_device(emb).reshape(len(sel), n * (n // 2 + 1))
        return rt.complex_parts(spec), np.arange(len(sel), dtype=np.int64)

    _accumulate_keyed(
        _planes(d_acc, acc.shape[0]),
        transformed,
        _planes(rt.to_device(np.ascontiguousarray(image_ops)), image_ops.shape[0]),
        blk_key,
        blk_x,
        np.asarray(blk_scale, dtype),
        (_FFT_COPIES + 1) * n * n * dtype.itemsize,
    )
    acc[...] = rt.to_host(d_acc)


def ml2d_window_sums(acc: np.ndarray, half_width: int) -> np.ndarray:
    """The real-space sums ``S_key`` ``[n_keys, N, N]`` of a :func:`ml2d_accumulate_windows`
    accumulator: window phase (product kernel), batched inverse cuFFT, transpose kernel."""
    n_keys, n = acc.shape[0], acc.shape[2]
    h = n // 2 + 1
    phase = rt.complex_parts(rt.to_device(ml2d_window_phase(n, half_width).reshape(1, n * h)))
    out = np.empty((n_keys, n, n))
    for a, b in rt.chunk_ranges(n_keys, (_FFT_COPIES + 1) * acc[0].nbytes):
        spec = rt.device_empty((b - a, n, h), np.complex128)
        rt.launch_items(
            _products,
            (b - a) * n * h,
            *_planes(rt.to_device(np.ascontiguousarray(acc[a:b])), b - a),
            *phase,
            rt.to_device(np.arange(b - a, dtype=np.int64)),
            rt.to_device(np.zeros(b - a, np.int64)),
            *rt.complex_parts(spec.reshape(b - a, n * h)),
        )
        out[a:b] = rt.to_host(_windows_of(rt.irfft2_device(spec, n), n, True, np.float64))
    return out
