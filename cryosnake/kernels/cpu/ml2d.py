"""CPU kernels: the ML2D E-step inner loops (spec ``algorithms.md`` §1.6, §1.7, §3A).

Vocabulary shared with :mod:`cryosnake.ml2d.estep`:

* a **block** is one ``(image i, class k, angle j, flip f)`` triple; its ``W x W`` array holds
  the integer translations ``s = (sx, sy)`` of the square window ``-w..w`` (``W = 2w + 1``),
  window index ``(a, b)`` <-> ``sy = a - w``, ``sx = b - w``;
* blocks are stored image-major: the blocks of image ``i`` are
  ``img_ptr[i] .. img_ptr[i + 1] - 1``;
* correlations follow spec §0.4: ``c(s) = sum_p B(p) Y(p + s)`` (cyclic), with the numpy FFT
  convention (forward un-normalised, inverse ``1/N^2``), so no extra factor is applied.

The E-step path (§1.7): :func:`ml2d_permuted_operands` (spectra of the flipped images from one
FFT per image) and :func:`ml2d_reference_operands` feed :func:`ml2d_block_correlations`
(product and window-pruned inverse DFT fused per block); :func:`ml2d_block_posteriors` gives
the compact posteriors; :func:`ml2d_accumulate_direct` (few weights) or
:func:`ml2d_accumulate_windows` (its adjoint, pruned forward DFT of the weight window) build
``S_kj``; :func:`ml2d_shifted_projections` serves the fast-mode pre-selection (§1.12).

The pruned transforms are the hand-written mixed-radix DFT passes of :mod:`.dft`, run over many
"lanes" (columns) at once so that numba/LLVM vectorises them; several blocks sit side by side
in the lanes. The posteriors use the vectorisable exponential of :mod:`.fastexp`. No
``scipy.fft`` thread pool runs inside these kernels: one numba thread pool does all the work
(no oversubscription).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit, prange

from ..host import sort_by_key, spectrum_permutation_table
from ..interface import BlockPosteriors
from .dft import inverse_dft_passes, inverse_dft_tables
from .fastexp import fast_exp
from .image import irfft2, rfft2

__all__ = [
    "ml2d_window_phase",
    "ml2d_image_operands",
    "ml2d_permuted_operands",
    "ml2d_reference_operands",
    "ml2d_block_correlations",
    "ml2d_projection_operands",
    "ml2d_shifted_projections",
    "ml2d_block_posteriors",
    "ml2d_accumulate_direct",
    "ml2d_window_accumulator",
    "ml2d_accumulate_windows",
    "ml2d_window_sums",
]


def ml2d_window_phase(n: int, half_width: int) -> np.ndarray:
    """``exp(-2 pi i (kx + ky) w / N)`` on the rfft half plane ``[N, N//2+1]``.

    Multiplying a correlation spectrum by it moves shift ``s`` to index ``s + w``, so that the
    window ``-w..w`` becomes the leading ``W x W`` corner (a slice instead of a gather).
    Fold it into the (per-iteration) reference spectra.
    """
    ky = np.fft.fftfreq(n) * n
    kx = np.fft.rfftfreq(n) * n
    return np.exp(-2j * np.pi * (ky[:, None] + kx[None, :]) * half_width / n)


# --- fused correlation windows (spec §1.7): product + pruned 2D inverse real DFT -------------

_LANE_PAD = 8  # lane count of the second-pass scratch is padded to a multiple of this
_GROUP_BYTES = 1 << 17  # pass-1 scratch per group of blocks (L2-resident)
_MAX_GROUP = 8  # blocks side by side in the lanes of one group
_GROUPS_PER_TASK = 4  # groups per parallel task of _correlate_blocks (scratch is per task)
_KEY_CHUNKS = 32  # parallel tasks of _accumulate_windows (runs of key-sorted blocks)


@functools.lru_cache(maxsize=64)
def _correlation_plan(n: int, half_width: int, dtype) -> tuple:
    """Arguments of :func:`_correlate_blocks` that depend only on ``(N, w, dtype)``."""
    W = 2 * half_width + 1
    perm1, st1, tw1 = inverse_dft_tables(n)
    if n % 2 == 0:  # second axis: half-length complex DFT (even and odd outputs packed)
        perm2, st2, tw2 = inverse_dft_tables(n // 2)
        extra = np.exp(2j * np.pi * np.arange(n // 2) / n)
    else:  # second axis: direct real DFT, Hermitian weights 1, 2, 2, ...
        perm2, st2, tw2 = np.zeros(0, np.int64), np.zeros((0, 4), np.int64), np.zeros(0, complex)
        k = np.arange((n + 1) // 2)[None, :]
        sy = np.arange(W)[:, None]
        extra = (np.where(k == 0, 1.0, 2.0) * np.exp(2j * np.pi * k * sy / n)).ravel()
    out = [perm1, st1, tw1.real, tw1.imag, perm2, st2, tw2.real, tw2.imag, extra.real, extra.imag]
    return tuple(np.ascontiguousarray(a, a.dtype if a.dtype == np.int64 else dtype) for a in out)


@njit(parallel=True, cache=True)
def _correlate_blocks(
    xs, bs, blk_x, blk_b, group, perm1, st1, tw1r, tw1i, perm2, st2, tw2r, tw2i, exr, exi, out
):  # pragma: no cover - numba
    # Blocks are processed in groups of ``group``, side by side in the lanes of every pass
    # (long vector loops); scratch is allocated per parallel task of _GROUPS_PER_TASK groups.
    nb = blk_x.shape[0]
    n = xs.shape[2]
    h = xs.shape[3]
    even = n % 2 == 0
    hv = n // 2
    l1 = hv if even else h  # lanes per block, pass 1 (even n: Nyquist column in lane 0)
    W = out.shape[1]
    wp = ((group * W + _LANE_PAD - 1) // _LANE_PAD) * _LANE_PAD
    rows2 = hv if even else W
    M = (W + 1) // 2 if even else W
    pmax = 4
    for s in range(st1.shape[0]):
        pmax = max(pmax, st1[s, 0])
    for s in range(st2.shape[0]):
        pmax = max(pmax, st2[s, 0])
    n_groups = (nb + group - 1) // group
    n_tasks = (n_groups + _GROUPS_PER_TASK - 1) // _GROUPS_PER_TASK
    for task in prange(n_tasks):
        ar = np.empty((n, group * l1), xs.dtype)
        ai = np.empty((n, group * l1), xs.dtype)
        ttr = np.empty((l1, wp), xs.dtype)  # lanes >= bg W are never read
        tti = np.empty((l1, wp), xs.dtype)
        zr = np.empty((rows2, wp), xs.dtype)
        zi = np.empty((rows2, wp), xs.dtype)
        tr = np.empty((pmax, max(group * l1, wp)), xs.dtype)
        ti = np.empty((pmax, max(group * l1, wp)), xs.dtype)
        g1 = min(n_groups, (task + 1) * _GROUPS_PER_TASK)
        for grp in range(task * _GROUPS_PER_TASK, g1):
            b0 = grp * group
            bg = min(group, nb - b0)
            # 1. P = conj(B^) Y^ (window phase and 1/N^2 in B^), rows digit-reversed
            for t in range(bg):
                x = xs[blk_x[b0 + t]]
                r = bs[blk_b[b0 + t]]
                lo = t * l1
                for k in range(n):
                    q = perm1[k]
                    for c in range(l1):
                        ar[q, lo + c] = r[0, k, c] * x[0, k, c] - r[1, k, c] * x[1, k, c]
                        ai[q, lo + c] = r[0, k, c] * x[1, k, c] + r[1, k, c] * x[0, k, c]
                    if even:  # lane 0 also carries i P[., N/2] (both columns Hermitian)
                        ar[q, lo] -= r[0, k, hv] * x[1, k, hv] + r[1, k, hv] * x[0, k, hv]
                        ai[q, lo] += r[0, k, hv] * x[0, k, hv] - r[1, k, hv] * x[1, k, hv]
            # 2. inverse DFT along the full (x) axis, output rows (x shifts) < W only
            inverse_dft_passes(ar, ai, n, bg * l1, st1, tw1r, tw1i, W, tr, ti)
            # 3. transpose: tt[k, t W + s] = T_t[s, k] (lanes = x shifts of all blocks)
            lanes = bg * W
            for t in range(bg):
                for s in range(W):
                    for k in range(l1):
                        ttr[k, t * W + s] = ar[s, t * l1 + k]
                        tti[k, t * W + s] = ai[s, t * l1 + k]
            if even:
                # 4. real inverse along y as a half-length complex DFT: Z[k] = E[k] + i O[k],
                #    E[k] = X[k] + X[k + N/2], O[k] = (X[k] - X[k + N/2]) e^{2 pi i k / N},
                #    X[k + N/2] = conj(X[N/2 - k]); z[m] = c(y = 2m) + i c(y = 2m + 1)
                q = perm2[0]
                for s in range(lanes):
                    zr[q, s] = ttr[0, s] + tti[0, s]
                    zi[q, s] = ttr[0, s] - tti[0, s]
                for k in range(1, hv):
                    q = perm2[k]
                    km = hv - k
                    er = exr[k]
                    ei = exi[k]
                    for s in range(lanes):
                        dr = ttr[k, s] - ttr[km, s]
                        di = tti[k, s] + tti[km, s]
                        zr[q, s] = ttr[k, s] + ttr[km, s] - (dr * ei + di * er)
                        zi[q, s] = tti[k, s] - tti[km, s] + (dr * er - di * ei)
                inverse_dft_passes(zr, zi, hv, lanes, st2, tw2r, tw2i, M, tr, ti)
                for t in range(bg):
                    o = out[b0 + t]
                    for m in range(M):
                        for s in range(W):
                            o[2 * m, s] = zr[m, t * W + s]
                        if 2 * m + 1 < W:
                            for s in range(W):
                                o[2 * m + 1, s] = zi[m, t * W + s]
            else:
                # 4'. odd N: direct real DFT along y (Hermitian weights folded in exr/exi)
                for sy in range(W):
                    for s in range(lanes):
                        zr[sy, s] = 0.0
                    for k in range(h):
                        er = exr[sy * h + k]
                        ei = exi[sy * h + k]
                        for s in range(lanes):
                            zr[sy, s] += er * ttr[k, s] - ei * tti[k, s]
                for t in range(bg):
                    o = out[b0 + t]
                    for sy in range(W):
                        for s in range(W):
                            o[sy, s] = zr[sy, t * W + s]


def ml2d_image_operands(images: np.ndarray) -> np.ndarray:
    """Operands of :func:`ml2d_block_correlations` for images ``Y`` ``[m, N, N]``.

    ``[m, 2, N, N//2+1]`` (real and imaginary parts) of ``rfft2`` of the *transposed* images
    (axis 2 = frequency along x, full; axis 3 = along y, half plane); float32 for float32
    input, else float64. The layout makes the inner loops of the kernel contiguous.
    """
    images = np.asarray(images)
    spec = rfft2(np.ascontiguousarray(np.swapaxes(images, -1, -2)))
    rtype = np.float32 if spec.dtype == np.complex64 else np.float64
    out = np.empty((spec.shape[0], 2, *spec.shape[1:]), dtype=rtype)
    out[:, 0] = spec.real
    out[:, 1] = spec.imag
    return out


@njit(parallel=True, cache=True)
def _permuted_operands(spec, src, conj, phase, out):  # pragma: no cover - numba
    # spec: [m, P] complex; src, conj, phase: [F, P]; out: [m * F, 2, P] real
    m = spec.shape[0]
    nm, npx = src.shape
    for t in prange(m * nm):
        i = t // nm
        f = t % nm
        sp = spec[i]
        o = out[t]
        for p in range(npx):
            v = sp[src[f, p]]
            vr = v.real
            vi = -v.imag if conj[f, p] else v.imag
            w = phase[f, p]
            o[0, p] = vr * w.real - vi * w.imag
            o[1, p] = vr * w.imag + vi * w.real


def ml2d_permuted_operands(spectra: np.ndarray, matrices: np.ndarray, n: int) -> np.ndarray:
    """:func:`ml2d_image_operands` of ``permute_images(images, matrices)`` (flattened to
    ``[m * F, ...]``, image-major) from ``spectra = rfft2(images)`` ``[m, N, N//2+1]``.

    The flipped and transposed images are exact pixel permutations, so their spectra are
    gathered from the one spectrum per image (:func:`~cryosnake.kernels.cpu.permute_spectra`)
    instead of transformed again (spec §1.7: "8 FFTs per image" become one).
    """
    spectra = np.ascontiguousarray(spectra)
    mats = np.asarray(matrices, dtype=np.int64) @ np.array([[0, 1], [1, 0]])  # then transpose
    m, h = spectra.shape[0], n // 2 + 1
    if spectra.shape[1:] != (n, h):
        raise ValueError(f"spectra are {spectra.shape[1:]}, expected {(n, h)} for N = {n}")
    src, conj, phase = spectrum_permutation_table(n, np.ascontiguousarray(mats).tobytes())
    rtype = np.float32 if spectra.dtype == np.complex64 else np.float64
    out = np.empty((m * len(mats), 2, n, h), dtype=rtype)
    _permuted_operands(
        spectra.reshape(m, n * h),
        src,
        conj,
        phase.astype(spectra.dtype),
        out.reshape(m * len(mats), 2, n * h),
    )
    return out


def ml2d_reference_operands(references: np.ndarray, half_width: int) -> np.ndarray:
    """Operands of :func:`ml2d_block_correlations` for references ``B`` ``[m, N, N]``.

    Like :func:`ml2d_image_operands` for ``conj(FFT(B^T))`` times :func:`ml2d_window_phase`
    and ``1 / N^2`` (the inverse-FFT normalisation). Build once per iteration.
    """
    references = np.asarray(references)
    n = references.shape[-1]
    spec = rfft2(np.ascontiguousarray(np.swapaxes(references, -1, -2)))
    spec = np.conj(spec) * (ml2d_window_phase(n, half_width) / n**2).astype(spec.dtype)
    rtype = np.float32 if spec.dtype == np.complex64 else np.float64
    out = np.empty((spec.shape[0], 2, *spec.shape[1:]), dtype=rtype)
    out[:, 0] = spec.real
    out[:, 1] = spec.imag
    return out


def ml2d_block_correlations(
    image_ops: np.ndarray,
    reference_ops: np.ndarray,
    blk_x: np.ndarray,
    blk_b: np.ndarray,
    half_width: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Correlation windows ``c[t, a, b] = sum_p B(p) Y(p + s)`` of every block, fused.

    The inverse FFT of the spectral products ``conj(B^) Y^``, window only (spec §1.6,
    §1.7, trap 6: ``sy = a - w``, ``sx = b - w``), for ``Y = images[blk_x[t]]`` and
    ``B = references[blk_b[t]]`` given as :func:`ml2d_image_operands` and
    :func:`ml2d_reference_operands` (same dtype). Per block, in one pass over cache-resident
    scratch: the spectral product; the inverse DFT along x for the ``W`` window columns only
    (mixed radix, vectorised over the half-plane frequencies, the Nyquist column riding in the
    imaginary part of the zero column); then the real inverse along y for the ``W`` window
    rows only, as a half-length complex DFT vectorised over the window columns. About a third
    of the arithmetic of a full ``irfft2`` for ``W ~ N/2``; parallel over blocks (numba).
    ``out``: optional C-contiguous ``[nb, W, W]`` of the operands' dtype.
    """
    n = image_ops.shape[2]
    W = 2 * int(half_width) + 1
    if reference_ops.dtype != image_ops.dtype or reference_ops.shape[1:] != image_ops.shape[1:]:
        raise ValueError("image and reference operands differ in dtype or shape")
    if W > n:
        raise ValueError(f"window {W} exceeds the image size {n}")
    nb = len(blk_x)
    if out is None:
        out = np.empty((nb, W, W), dtype=image_ops.dtype)
    if out.shape != (nb, W, W) or out.dtype != image_ops.dtype or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous [nb, W, W] array of the operands' dtype")
    if nb == 0:
        return out
    pass1_bytes = 2 * n * (n // 2 + 1) * image_ops.itemsize
    group = int(np.clip(_GROUP_BYTES // pass1_bytes, 1, _MAX_GROUP))
    _correlate_blocks(
        np.ascontiguousarray(image_ops),
        np.ascontiguousarray(reference_ops),
        np.ascontiguousarray(blk_x, np.int64),
        np.ascontiguousarray(blk_b, np.int64),
        group,
        *_correlation_plan(n, int(half_width), np.dtype(image_ops.dtype)),
        out,
    )
    return out


@functools.lru_cache(maxsize=64)
def _accumulation_plan(n: int, half_width: int, dtype) -> tuple:
    """Arguments of :func:`_accumulate_windows` that depend only on ``(N, w, dtype)``."""
    W = 2 * half_width + 1
    perm1, st1, tw1 = inverse_dft_tables(n)
    if n % 2 == 0:  # first axis: half-length complex DFT, post-twiddles e^{-2 pi i v / N}
        perm2, st2, tw2 = inverse_dft_tables(n // 2)
        extra = np.exp(-2j * np.pi * np.arange(n // 2) / n)
    else:  # first axis: direct real DFT e^{-2 pi i v a / N}, [h, W]
        perm2, st2, tw2 = np.zeros(0, np.int64), np.zeros((0, 4), np.int64), np.zeros(0, complex)
        v = np.arange((n + 1) // 2)[:, None]
        a = np.arange(W)[None, :]
        extra = np.exp(-2j * np.pi * v * a / n).ravel()
    out = [perm1, st1, tw1.real, tw1.imag, perm2, st2, tw2.real, tw2.imag, extra.real, extra.imag]
    return tuple(np.ascontiguousarray(a, a.dtype if a.dtype == np.int64 else dtype) for a in out)


@njit(parallel=True, cache=True)
def _accumulate_windows(
    gamma,
    rows,
    xs,
    blk_x,
    blk_scale,
    blk_key,
    chunk_ptr,
    group,
    perm1,
    st1,
    tw1r,
    tw1i,
    perm2,
    st2,
    tw2r,
    tw2i,
    exr,
    exi,
    acc,
):  # pragma: no cover - numba
    # Adjoint of _correlate_blocks. Blocks sorted by key, cut into chunks at key boundaries: one
    # parallel task per chunk (no two tasks write the same key). A chunk's blocks go in groups
    # of ``group`` side by side in the lanes; their products are summed per key in ``pr_``/
    # ``pi_`` and flushed to the float64 accumulator when the key changes and after every
    # group. Forward DFTs are inverse passes on conjugated data: DFT(x) = conj(IDFT(conj(x))).
    n = xs.shape[2]
    h = xs.shape[3]
    even = n % 2 == 0
    hv = n // 2
    l1 = hv if even else h  # lanes per block along the second axis (even: Nyquist packed)
    W = gamma.shape[1]
    wp = ((group * W + _LANE_PAD - 1) // _LANE_PAD) * _LANE_PAD
    pmax = 4
    for s in range(st1.shape[0]):
        pmax = max(pmax, st1[s, 0])
    for s in range(st2.shape[0]):
        pmax = max(pmax, st2[s, 0])
    half = xs.dtype.type(0.5)
    for chunk in prange(chunk_ptr.shape[0] - 1):  # scratch is allocated once per chunk
        ar = np.empty((n, group * l1), xs.dtype)
        ai = np.empty((n, group * l1), xs.dtype)
        zr = np.empty((h, wp), xs.dtype)
        zi = np.empty((h, wp), xs.dtype)
        ttr = np.empty((h, wp), xs.dtype)
        tti = np.empty((h, wp), xs.dtype)
        tr = np.empty((pmax, max(group * l1, wp, n)), xs.dtype)
        ti = np.empty((pmax, max(group * l1, wp, n)), xs.dtype)
        pr_ = np.zeros((n, h), xs.dtype)  # sum of scale conj(G^) Y^ of the current key
        pi_ = np.zeros((n, h), xs.dtype)
        c0 = chunk_ptr[chunk]
        c1 = chunk_ptr[chunk + 1]
        current = blk_key[c0]
        for g0 in range(c0, c1, group):
            bg = min(group, c1 - g0)
            lanes = bg * W
            # A. real DFT along the window rows a (y), lanes = (block, window column b):
            #    R[v] = sum_a gamma[a, b] e^{-2 pi i v a / N}, v < N/2 + 1 (row 0 of tt packs
            #    R[0] + i R[N/2] for even N)
            if even:  # z[m] = g[2m] + i g[2m + 1], Z = DFT_{N/2}(z), split into even/odd parts
                for t in range(bg):
                    gt = gamma[rows[g0 + t]]
                    lo = t * W
                    for a in range(0, W - 1, 2):
                        q = perm2[a >> 1]
                        for b in range(W):
                            zr[q, lo + b] = gt[a, b]
                            zi[q, lo + b] = -gt[a + 1, b]
                    q = perm2[(W - 1) >> 1]  # W is odd: the last row has no partner
                    for b in range(W):
                        zr[q, lo + b] = gt[W - 1, b]
                        zi[q, lo + b] = 0.0
                for m in range((W + 1) // 2, hv):
                    q = perm2[m]
                    for s in range(lanes):
                        zr[q, s] = 0.0
                        zi[q, s] = 0.0
                inverse_dft_passes(zr, zi, hv, lanes, st2, tw2r, tw2i, hv, tr, ti)  # conj(Z)
                for s in range(lanes):
                    ttr[0, s] = zr[0, s] - zi[0, s]  # R[0]
                    tti[0, s] = zr[0, s] + zi[0, s]  # R[N/2]
                for v in range(1, hv):
                    vm = hv - v
                    er = exr[v]
                    ei = exi[v]
                    for s in range(lanes):
                        # E = (Z[v] + conj Z[vm]) / 2, O = (Z[v] - conj Z[vm]) / 2i, R = E + e O
                        evr = (zr[v, s] + zr[vm, s]) * half
                        evi = (zi[vm, s] - zi[v, s]) * half
                        odr = -(zi[v, s] + zi[vm, s]) * half
                        odi = (zr[vm, s] - zr[v, s]) * half
                        ttr[v, s] = evr + er * odr - ei * odi
                        tti[v, s] = evi + er * odi + ei * odr
            else:  # odd N: direct real DFT, table [h, W]
                for v in range(h):
                    for s in range(lanes):
                        ttr[v, s] = 0.0
                        tti[v, s] = 0.0
                    for t in range(bg):
                        gt = gamma[rows[g0 + t]]
                        for a in range(W):
                            er = exr[v * W + a]
                            ei = exi[v * W + a]
                            for b in range(W):
                                ttr[v, t * W + b] += er * gt[a, b]
                                tti[v, t * W + b] += ei * gt[a, b]
            # B. transpose (conjugated) into digit-reversed rows b, lanes (block, v); rows >= W
            #    are zero
            for t in range(bg):
                for b in range(W):
                    q = perm1[b]
                    for v in range(l1):
                        ar[q, t * l1 + v] = ttr[v, t * W + b]
                        ai[q, t * l1 + v] = -tti[v, t * W + b]
            for b in range(W, n):
                q = perm1[b]
                for c in range(bg * l1):
                    ar[q, c] = 0.0
                    ai[q, c] = 0.0
            # C. DFT along the window columns b (x): (ar, ai) = conj(G^)[u, v], all N rows u
            inverse_dft_passes(ar, ai, n, bg * l1, st1, tw1r, tw1i, n, tr, ti)
            # D. acc += scale conj(G^) Y^: summed per key over at most one group in the
            #    operands' precision (pr_, pi_), then added to the float64 accumulator
            for t in range(bg + 1):
                if t == bg or blk_key[g0 + t] != current:  # flush
                    for u in range(n):
                        for v in range(h):
                            acc[current, 0, u, v] += pr_[u, v]
                            acc[current, 1, u, v] += pi_[u, v]
                            pr_[u, v] = 0.0
                            pi_[u, v] = 0.0
                    if t == bg:
                        break
                    current = blk_key[g0 + t]
                lo = t * l1
                if even:  # lane 0 carries conj DFT(R0 + i Rn): unpack R0 to lane 0, Rn aside
                    for u in range(n):
                        um = (n - u) % n
                        pr = ar[u, lo]
                        pi = ai[u, lo]
                        mr = ar[um, lo]
                        mi = ai[um, lo]
                        tr[0, u] = (pr + mr) * half  # conj(A), A = DFT of the R[0] column
                        ti[0, u] = (pi - mi) * half
                        tr[1, u] = -(pi + mi) * half  # conj(B), B = DFT of the R[N/2] column
                        ti[1, u] = (pr - mr) * half
                    for u in range(n):
                        ar[u, lo] = tr[0, u]
                        ai[u, lo] = ti[0, u]
                x = xs[blk_x[g0 + t]]
                sc = blk_scale[g0 + t]
                for u in range(n):
                    for v in range(l1):
                        cr = sc * ar[u, lo + v]
                        ci = sc * ai[u, lo + v]
                        pr_[u, v] += cr * x[0, u, v] - ci * x[1, u, v]
                        pi_[u, v] += cr * x[1, u, v] + ci * x[0, u, v]
                    if even:
                        cr = sc * tr[1, u]
                        ci = sc * ti[1, u]
                        pr_[u, hv] += cr * x[0, u, hv] - ci * x[1, u, hv]
                        pi_[u, hv] += cr * x[1, u, hv] + ci * x[0, u, hv]


def ml2d_window_accumulator(n_keys: int, n: int) -> np.ndarray:
    """Zeroed accumulator of :func:`ml2d_accumulate_windows`: float64 ``[n_keys, 2, N, N//2+1]``."""
    return np.zeros((n_keys, 2, n, n // 2 + 1))


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

    The spectral accumulation of ``S_kj`` (spec §1.6.3, §1.7) for blocks with many non-zero
    weights, adjoint of :func:`ml2d_block_correlations`: per block the ``W x W`` weight window
    ``gamma`` ``[nb, W, W]`` (``gamma[t, a, b]`` at ``sy = a - w``, ``sx = b - w``) is
    transformed with the zero rows and columns pruned, multiplied by ``Y^`` (``image_ops``
    ``[nX, 2, N, N//2+1]`` from :func:`ml2d_image_operands`, row ``blk_x``) and added to
    ``acc[blk_key]`` (:func:`ml2d_window_accumulator`); parallel over runs of keys. Read the
    sums with :func:`ml2d_window_sums`. ``gamma_rows`` (optional ``[nb]``): block ``t`` uses
    ``gamma[gamma_rows[t]]`` (no gathered copy of the windows).
    """
    nb = len(blk_key)
    if nb == 0:
        return
    n = image_ops.shape[2]
    W = 2 * int(half_width) + 1
    if gamma_rows is None:
        gamma_rows = np.arange(nb)
    if gamma.shape[1:] != (W, W) or acc.shape[1:] != (2, n, n // 2 + 1):
        raise ValueError("gamma or acc do not match the window and the image size")
    if acc.dtype != np.float64 or not acc.flags.c_contiguous:
        raise ValueError("acc must be a C-contiguous float64 accumulator")
    order, keys_sorted, run_ptr = sort_by_key(blk_key)
    starts = run_ptr[:-1]
    # chunks of about nb / _KEY_CHUNKS blocks, cut at key boundaries
    pos = np.searchsorted(starts, np.linspace(0, nb, _KEY_CHUNKS + 1)[1:-1])
    chunk_ptr = np.unique(np.r_[0, starts[pos[pos < starts.size]], nb]).astype(np.int64)
    dtype = np.dtype(image_ops.dtype)
    pass1_bytes = 2 * n * (n // 2 + 1) * dtype.itemsize
    group = int(np.clip(_GROUP_BYTES // pass1_bytes, 1, _MAX_GROUP))
    _accumulate_windows(
        np.ascontiguousarray(gamma),
        np.ascontiguousarray(np.asarray(gamma_rows, np.int64)[order]),
        np.ascontiguousarray(image_ops),
        np.ascontiguousarray(np.asarray(blk_x, np.int64)[order]),
        np.ascontiguousarray(np.asarray(blk_scale, dtype)[order]),
        np.ascontiguousarray(keys_sorted),
        chunk_ptr,
        group,
        *_accumulation_plan(n, int(half_width), dtype),
        acc,
    )


def ml2d_window_sums(acc: np.ndarray, half_width: int) -> np.ndarray:
    """The real-space sums ``S_key`` ``[n_keys, N, N]`` of a :func:`ml2d_accumulate_windows`
    accumulator (window phase, inverse FFT and the transposed layout undone)."""
    n = acc.shape[2]
    spec = (acc[:, 0] + 1j * acc[:, 1]) * ml2d_window_phase(n, half_width)
    return np.ascontiguousarray(np.swapaxes(irfft2(spec, n), -1, -2))


_PROJ_PAIRS = 4  # shifted images per task of _shifted_projections (register blocking)
_LANES = 8  # independent partial sums of the vectorised reductions (fixed summation order)


@njit(parallel=True, cache=True)
def _shifted_projections(images, index, shifts, refs_t, out):  # pragma: no cover - numba
    # refs_t: [npx, nref] (transposed). Each dot product is a plain sum over pixels in pixel
    # order; the loops vectorise over the references instead (no reassociation needed), so
    # the result does not depend on the CPU, the compiler or the numba cache (kernels/cpu/jit.py).
    npair = index.shape[0]
    nref = refs_t.shape[1]
    size = images.shape[1]
    for task in prange((npair + _PROJ_PAIRS - 1) // _PROJ_PAIRS):
        p0 = task * _PROJ_PAIRS
        cnt = min(npair, p0 + _PROJ_PAIRS) - p0
        acc = np.zeros((_PROJ_PAIRS, nref), images.dtype)
        for t in range(cnt):  # dot products of Sh_v[images[index]] (content moves by +v)
            src = images[index[p0 + t]]
            sx = shifts[p0 + t, 0] % size
            sy = shifts[p0 + t, 1] % size
            a = acc[t]
            for row in range(size):
                line = src[(row - sy) % size]
                o = row * size
                for col in range(size):
                    v = line[(col - sx) % size]
                    r_row = refs_t[o + col]
                    for r in range(nref):
                        a[r] += v * r_row[r]
        for t in range(cnt):
            for r in range(nref):
                out[p0 + t, r] = acc[t, r]


def ml2d_projection_operands(references: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Operands of :func:`ml2d_shifted_projections` for references ``[n_ref, N, N]`` (or
    ``[n_ref, N*N]``): ``[N*N, n_ref]`` (transposed, ``dtype``). Build once per E-step."""
    refs = np.asarray(references)
    return np.ascontiguousarray(refs.reshape(refs.shape[0], -1).T, dtype=dtype)


def ml2d_shifted_projections(
    images: np.ndarray, index: np.ndarray, shifts_xy: np.ndarray, reference_ops: np.ndarray
) -> np.ndarray:
    """``out[p, r] = <Sh_v[images[index[p]]], references[r]>`` with ``v = shifts_xy[p]``.

    Integer cyclic shifts as :func:`~cryosnake.kernels.cpu.roll_images` (content moves by
    ``+v``, ``v = (vx, vy)`` px), dotted with every reference of ``reference_ops``
    (:func:`ml2d_projection_operands`, the dtype of ``images``): the real-space distances of
    the fast-mode pre-selection (spec §1.12). Parallel over images (numba); each product is a
    sum over pixels in pixel order, in the dtype of ``images``. Returns
    ``[len(index), n_ref]``.
    """
    images = np.ascontiguousarray(images)
    if reference_ops.dtype != images.dtype or reference_ops.shape[0] != images[0].size:
        raise ValueError("reference operands differ from the images in dtype or size")
    index = np.ascontiguousarray(index, np.int64)
    out = np.empty((index.shape[0], reference_ops.shape[1]), dtype=images.dtype)
    if index.size:
        _shifted_projections(
            images,
            index,
            np.ascontiguousarray(np.asarray(shifts_xy, np.int64).reshape(-1, 2)),
            reference_ops,
            out,
        )
    return out


@njit(parallel=True, cache=True)
def _block_maxima(
    c,
    blk_const,
    blk_scale,
    img_ptr,
    blk_logprior,
    log_offset_prior,
    inv_sigma2,
    log_skip,
    blk_logmax,
    blk_argmax,
    blk_alive,
    img_big,
    img_best_blk,
):  # pragma: no cover - numba
    # pass 1: largest log-weight per block and per image (log-sum-exp shift, §1.6.1), then the
    # skip rule of §1.6.2 (global-maximum variant). c: [nb, W, W]. The block maximum is taken
    # per window column first (independent, vectorisable selects), keeping the first row that
    # reaches it, so the argmax is the first flat index of the maximum.
    n_img = img_ptr.shape[0] - 1
    W = c.shape[1]
    for i in prange(n_img):
        b0 = img_ptr[i]
        b1 = img_ptr[i + 1]
        colmax = np.empty(W)
        colarg = np.empty(W, np.int64)
        big = -np.inf
        best_b = -1
        for b in range(b0, b1):
            lp = blk_logprior[b]
            k0 = blk_const[b]
            k1 = blk_scale[b]
            for s in range(W):
                colmax[s] = -np.inf
                colarg[s] = 0
            for a in range(W):
                cb = c[b, a]
                lpa = log_offset_prior[a]
                for s in range(W):
                    v = lp + lpa[s] - (k0 - k1 * cb[s]) * inv_sigma2
                    cm = colmax[s]
                    gt = v > cm
                    colmax[s] = v if gt else cm
                    colarg[s] = a if gt else colarg[s]
            m = -np.inf
            am = 0
            for s in range(W):
                flat = colarg[s] * W + s
                if colmax[s] > m or (colmax[s] == m and flat < am):
                    m = colmax[s]
                    am = flat
            blk_logmax[b] = m
            blk_argmax[b] = am
            if best_b < 0 or m > big:
                big = m
                best_b = b
        img_big[i] = big
        img_best_blk[i] = best_b
        for b in range(b0, b1):
            blk_alive[b] = blk_logmax[b] - big > log_skip


@njit(parallel=True, cache=True)
def _block_posteriors(
    c,
    blk_const,
    blk_scale,
    img_ptr,
    blk_logprior,
    log_offset_prior,
    shift_r2,
    inv_sigma2,
    entry_cutoff,
    blk_row,
    img_big,
    gamma,
    blk_wsum,
    blk_count,
    img_logsum,
    img_pmax,
    img_noise,
    img_offset,
):  # pragma: no cover - numba
    # pass 2: weights of the surviving blocks (rows blk_row >= 0 of the compact gamma)
    # relative to the image maximum, then the posteriors and the expectations of §1.6.3.
    # The sums over translations run in _LANES independent partial sums, added in a fixed
    # order at the end: they vectorise without fast-math, and the result does not depend on
    # the compiler, the CPU or the numba cache (see kernels/cpu/jit.py).
    n_img = img_ptr.shape[0] - 1
    ww = c.shape[1]
    body = ww - ww % _LANES
    for i in prange(n_img):
        b0 = img_ptr[i]
        b1 = img_ptr[i + 1]
        big = img_big[i]
        lane_w = np.zeros(_LANES)
        lane_noise = np.zeros(_LANES)
        lane_off = np.zeros(_LANES)
        total = 0.0
        for b in range(b0, b1):
            blk_wsum[b] = 0.0
            blk_count[b] = 0
            g = blk_row[b]
            if g < 0:
                continue
            lp = blk_logprior[b]
            k0 = blk_const[b]
            k1 = blk_scale[b]
            cnt = 0
            for s in range(ww):  # branch-free: vectorises (with fast_exp)
                dv = k0 - k1 * c[b, s]
                w = fast_exp(lp + log_offset_prior[s] - dv * inv_sigma2 - big)
                keep = w >= entry_cutoff
                gamma[g, s] = w if keep else 0.0
                cnt += keep
            for q in range(_LANES):
                lane_w[q] = 0.0
            for s0 in range(0, body, _LANES):
                for q in range(_LANES):
                    w = gamma[g, s0 + q]
                    lane_w[q] += w
                    lane_noise[q] += w * (k0 - k1 * c[b, s0 + q])
                    lane_off[q] += w * shift_r2[s0 + q]
            for s in range(body, ww):
                w = gamma[g, s]
                lane_w[0] += w
                lane_noise[0] += w * (k0 - k1 * c[b, s])
                lane_off[0] += w * shift_r2[s]
            acc = 0.0
            for q in range(_LANES):
                acc += lane_w[q]
            blk_wsum[b] = acc
            blk_count[b] = cnt
            total += acc
        if b1 == b0:
            img_logsum[i] = -np.inf
            img_pmax[i] = 0.0
            img_noise[i] = 0.0
            img_offset[i] = 0.0
            continue
        noise = 0.0
        off = 0.0
        for q in range(_LANES):
            noise += lane_noise[q]
            off += lane_off[q]
        inv_total = 1.0 / total
        for b in range(b0, b1):
            g = blk_row[b]
            if g < 0:
                continue
            for s in range(ww):
                gamma[g, s] *= inv_total
            blk_wsum[b] *= inv_total
        img_logsum[i] = big + math.log(total)
        img_pmax[i] = inv_total
        img_noise[i] = 2.0 * noise * inv_total
        img_offset[i] = off * inv_total


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

    ``c``: ``[nb, W, W]`` correlations (float32 or float64); ``d_h = blk_const[b] -
    blk_scale[b] * c`` (the squared-distance halves of §1.6/§1.13, formed on the fly, float64);
    ``blk_logprior``: ``[nb]`` ``log(alpha_k * mirror prior)``; ``log_offset_prior``,
    ``shift_r2``: ``[W, W]`` ``log P(s)`` and ``|s|^2`` (px^2); ``sigma2``: ``sigma^2``
    (squared intensity units).

    ``log w_h = blk_logprior + log P(s) - d_h / sigma^2``. Per image, with ``M = max_h log w_h``:
    blocks whose largest ``w_h / e^M`` is ``<= block_skip`` are dropped entirely (§1.6.2,
    deterministic global-maximum variant), single translations with ``w_h / e^M < entry_cutoff``
    are set to 0; ``gamma_h = w_h / W`` over the rest. Returns a
    :class:`~cryosnake.kernels.interface.BlockPosteriors` of:

    * ``kept``: indices of the blocks that survive the skip rule (ascending) and ``gamma``
      float64 ``[len(kept), W, W]``, their posteriors (skipped blocks are all zero and not
      stored); ``gamma`` is a view of ``gamma_buffer`` (float64 ``[>= nb, W, W]``, optional,
      reused across calls to spare page faults) when that is large enough;
    * per block ``wsum`` (sum of gamma), ``logmax``/``argmax`` (largest log-weight and its
      flat window index, also for skipped blocks; used by fast mode §1.12), ``count``
      (non-zero translations; 0 = skipped);
    * per image ``logsum = log sum_h pi_h e^{-d_h/sigma^2}`` (``LL_i`` without the
      ``D log(sqrt(2 pi) sigma)`` term, §1.9), ``pmax``, ``best_block``, ``best_shift``,
      ``noise = sum gamma 2 d`` and ``offset = sum gamma |s|^2``.
    """
    nb = c.shape[0]
    n_img = len(img_ptr) - 1
    W = c.shape[1]
    ww = W * c.shape[2]
    c2 = np.ascontiguousarray(c).reshape(nb, ww)
    img_ptr = np.ascontiguousarray(img_ptr, np.int64)
    blk_const = np.ascontiguousarray(blk_const, np.float64)
    blk_scale = np.ascontiguousarray(blk_scale, np.float64)
    blk_logprior = np.ascontiguousarray(blk_logprior, np.float64)
    log_offset_prior = np.ascontiguousarray(log_offset_prior, np.float64).reshape(ww)
    inv_sigma2 = 1.0 / float(sigma2)
    res = {
        "wsum": np.empty(nb),
        "logmax": np.empty(nb),
        "argmax": np.empty(nb, np.int64),
        "count": np.empty(nb, np.int64),
        "logsum": np.empty(n_img),
        "pmax": np.empty(n_img),
        "best_block": np.empty(n_img, np.int64),
        "best_shift": np.empty(n_img, np.int64),
        "noise": np.empty(n_img),
        "offset": np.empty(n_img),
    }
    alive = np.empty(nb, np.bool_)
    big = np.empty(n_img)
    _block_maxima(
        np.ascontiguousarray(c),
        blk_const,
        blk_scale,
        img_ptr,
        blk_logprior,
        log_offset_prior.reshape(W, c.shape[2]),
        inv_sigma2,
        math.log(block_skip) if block_skip > 0 else -np.inf,
        res["logmax"],
        res["argmax"],
        alive,
        big,
        res["best_block"],
    )
    kept = np.flatnonzero(alive)
    row = np.full(nb, -1, np.int64)
    row[kept] = np.arange(kept.size)
    if gamma_buffer is not None and gamma_buffer.shape[0] >= kept.size:
        gamma = gamma_buffer[: kept.size]
    else:
        gamma = np.empty((kept.size, W, c.shape[2]))
    _block_posteriors(
        c2,
        blk_const,
        blk_scale,
        img_ptr,
        blk_logprior,
        log_offset_prior,
        np.ascontiguousarray(shift_r2, np.float64).reshape(ww),
        inv_sigma2,
        float(entry_cutoff),
        row,
        big,
        gamma.reshape(kept.size, ww),
        res["wsum"],
        res["count"],
        res["logsum"],
        res["pmax"],
        res["noise"],
        res["offset"],
    )
    best = res["best_block"]
    res["best_shift"][:] = np.where(best >= 0, res["argmax"][np.maximum(best, 0)], -1)
    return BlockPosteriors(kept=kept, gamma=gamma, **res)


@njit(parallel=True, cache=True)
def _accumulate_direct(
    acc, images, gamma, key_ptr, order, blk_key, blk_img, blk_scale, half_width
):  # pragma: no cover - numba
    n_keys = key_ptr.shape[0] - 1
    size = images.shape[1]
    wside = gamma.shape[1]
    for t in prange(n_keys):
        p0 = key_ptr[t]
        p1 = key_ptr[t + 1]
        if p1 == p0:
            continue
        out = acc[blk_key[order[p0]]]
        for p in range(p0, p1):
            b = order[p]
            y = images[blk_img[b]]
            sc = blk_scale[b]
            for a in range(wside):
                sy = a - half_width
                for c in range(wside):
                    g = gamma[b, a, c]
                    if g == 0.0:
                        continue
                    g *= sc
                    sx = (c - half_width) % size
                    for r in range(size):  # out[r, col] += g y[r + sy, col + sx] (cyclic)
                        src = y[(r + sy) % size]
                        dst = out[r]
                        for col in range(size - sx):
                            dst[col] += g * src[col + sx]
                        for col in range(size - sx, size):
                            dst[col] += g * src[col + sx - size]


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
    ``acc``: ``[n_keys, N, N]`` float64; ``images``: ``[nY, N, N]`` flipped images ``G_f X``;
    ``gamma``: ``[nb, W, W]``; ``blk_key`` (row of ``acc``), ``blk_img`` (row of ``images``),
    ``blk_scale``: ``[nb]``. Parallel over keys (no write races).
    """
    if blk_key.shape[0] == 0:
        return
    blk_key = np.ascontiguousarray(blk_key, np.int64)
    order, _, key_ptr = sort_by_key(blk_key)
    _accumulate_direct(
        acc,
        np.ascontiguousarray(images),
        np.ascontiguousarray(gamma),
        key_ptr,
        order,
        blk_key,
        np.ascontiguousarray(blk_img, np.int64),
        np.ascontiguousarray(blk_scale, np.float64),
        int(half_width),
    )
