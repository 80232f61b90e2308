"""CPU kernels: the ML2D E-step inner loops (spec ``algorithms.md`` §1.6, §1.7, §3A).

Vocabulary shared with :mod:`cryosnake.ml2d.estep`:

* a **block** is one ``(image i, class k, angle j, flip f)`` triple; its ``W x W`` array holds
  the integer translations ``s = (sx, sy)`` of the square window ``-w..w`` (``W = 2w + 1``),
  window index ``(a, b)`` <-> ``sy = a - w``, ``sx = b - w``;
* blocks are stored image-major: the blocks of image ``i`` are
  ``img_ptr[i] .. img_ptr[i + 1] - 1``;
* correlations follow spec §0.4: ``c(s) = sum_p B(p) Y(p + s)`` (cyclic), with the numpy FFT
  convention (forward un-normalised, inverse ``1/N^2``), so no extra factor is applied.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
from numba import njit, prange

from .image import parallel_batches

__all__ = [
    "ml2d_block_products",
    "ml2d_window_phase",
    "ml2d_correlation_windows",
    "ml2d_block_weights",
    "ml2d_accumulate_direct",
    "ml2d_embed_windows",
    "ml2d_accumulate_spectra",
]


@njit(parallel=True, cache=True)
def _block_products(xhat, bhat_conj, blk_x, blk_b, out):  # pragma: no cover - numba
    nb = blk_x.shape[0]
    ny = xhat.shape[1]
    nx = xhat.shape[2]
    for t in prange(nb):
        xa = xhat[blk_x[t]]
        ba = bhat_conj[blk_b[t]]
        for r in range(ny):
            for c in range(nx):
                out[t, r, c] = xa[r, c] * ba[r, c]


def ml2d_block_products(
    xhat: np.ndarray, bhat_conj: np.ndarray, blk_x: np.ndarray, blk_b: np.ndarray
) -> np.ndarray:
    """``out[t] = xhat[blk_x[t]] * bhat_conj[blk_b[t]]`` (gather and multiply in one pass).

    ``xhat``: ``[nX, N, N//2+1]`` spectra of the flipped images ``G_f X``; ``bhat_conj``:
    ``[nB, N, N//2+1]`` conjugated spectra of the rotated references ``B_kj`` (spec §1.7).
    The inverse FFT of a product is the cyclic correlation ``c_kjf(s)`` of §1.6.
    """
    out = np.empty((blk_x.shape[0], *xhat.shape[1:]), dtype=xhat.dtype)
    _block_products(
        xhat,
        bhat_conj,
        np.ascontiguousarray(blk_x, np.int64),
        np.ascontiguousarray(blk_b, np.int64),
        out,
    )
    return out


def ml2d_window_phase(n: int, half_width: int) -> np.ndarray:
    """``exp(-2 pi i (kx + ky) w / N)`` on the rfft half plane ``[N, N//2+1]``.

    Multiplying a correlation spectrum by it moves shift ``s`` to index ``s + w``, so that the
    window ``-w..w`` becomes the leading ``W x W`` corner (a slice instead of a gather).
    Fold it into the (per-iteration) reference spectra.
    """
    ky = np.fft.fftfreq(n) * n
    kx = np.fft.rfftfreq(n) * n
    return np.exp(-2j * np.pi * (ky[:, None] + kx[None, :]) * half_width / n)


def ml2d_correlation_windows(
    products: np.ndarray,
    n: int,
    half_width: int,
    out: np.ndarray | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Inverse real FFT of window-phased ``products`` ``[m, N, N//2+1]``, window only.

    ``products`` must carry :func:`ml2d_window_phase`; returns ``c[m, W, W]`` with
    ``c[t, a, b] = c_t(sx = b - w, sy = a - w)`` (spec §1.6, trap 6). The 2D inverse is split:
    complex inverse along y for the half-plane columns, then the real inverse along x for the
    ``W`` window rows only; batches run on ``workers`` threads. ``out`` (optional) receives the
    result (any real dtype).
    """
    W = 2 * half_width + 1
    m = products.shape[0]
    if out is None:
        rtype = np.float32 if products.dtype == np.complex64 else np.float64
        out = np.empty((m, W, W), dtype=rtype)

    def part(a, b):
        rows = scipy.fft.ifft(products[a:b], axis=-2)[:, :W, :]
        out[a:b] = scipy.fft.irfft(rows, n=n, axis=-1)[:, :, :W]

    parallel_batches(part, m, workers, min_items=32)
    return out


@njit(parallel=True, cache=True)
def _block_weights(
    c,
    blk_const,
    blk_scale,
    gamma,
    img_ptr,
    blk_logprior,
    log_offset_prior,
    shift_r2,
    inv_sigma2,
    log_skip,
    entry_cutoff,
    blk_wsum,
    blk_logmax,
    blk_argmax,
    blk_count,
    img_logsum,
    img_pmax,
    img_best_blk,
    img_best_shift,
    img_noise,
    img_offset,
):  # pragma: no cover - numba
    # c, gamma: [nb, W*W]; d[b, s] = blk_const[b] - blk_scale[b] * c[b, s]
    n_img = img_ptr.shape[0] - 1
    ww = c.shape[1]
    for i in prange(n_img):
        b0 = img_ptr[i]
        b1 = img_ptr[i + 1]
        if b1 == b0:
            img_logsum[i] = -np.inf
            img_pmax[i] = 0.0
            img_best_blk[i] = -1
            img_best_shift[i] = -1
            img_noise[i] = 0.0
            img_offset[i] = 0.0
            continue
        # pass 1: largest log-weight per block and per image (log-sum-exp shift, §1.6.1)
        big = -np.inf
        best_b = b0
        best_s = 0
        for b in range(b0, b1):
            lp = blk_logprior[b]
            k0 = blk_const[b]
            k1 = blk_scale[b]
            m = -np.inf
            am = 0
            for s in range(ww):
                v = lp + log_offset_prior[s] - (k0 - k1 * c[b, s]) * inv_sigma2
                if v > m:
                    m = v
                    am = s
            blk_logmax[b] = m
            blk_argmax[b] = am
            if m > big:
                big = m
                best_b = b
                best_s = am
        # pass 2: weights relative to the maximum; skip rule §1.6.2 (global-maximum variant)
        total = 0.0
        noise = 0.0
        off = 0.0
        for b in range(b0, b1):
            if blk_logmax[b] - big <= log_skip:
                blk_wsum[b] = 0.0
                blk_count[b] = 0
                for s in range(ww):
                    gamma[b, s] = 0.0
                continue
            lp = blk_logprior[b]
            k0 = blk_const[b]
            k1 = blk_scale[b]
            acc = 0.0
            cnt = 0
            for s in range(ww):
                dv = k0 - k1 * c[b, s]
                w = math.exp(lp + log_offset_prior[s] - dv * inv_sigma2 - big)
                if w < entry_cutoff:
                    w = 0.0
                else:
                    cnt += 1
                    acc += w
                    noise += w * 2.0 * dv
                    off += w * shift_r2[s]
                gamma[b, s] = w
            blk_wsum[b] = acc
            blk_count[b] = cnt
            total += acc
        # pass 3: normalise (posteriors gamma_h = w_h / W) and the expectations of §1.6.3
        inv_total = 1.0 / total
        for b in range(b0, b1):
            if blk_count[b] == 0:
                continue
            for s in range(ww):
                gamma[b, s] *= inv_total
            blk_wsum[b] *= inv_total
        img_logsum[i] = big + math.log(total)
        img_pmax[i] = inv_total
        img_best_blk[i] = best_b
        img_best_shift[i] = best_s
        img_noise[i] = noise * inv_total
        img_offset[i] = off * inv_total


def ml2d_block_weights(
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
) -> dict:
    """Posteriors of every translation of every block, log-sum-exp per image (spec §1.6).

    ``c``: ``[nb, W, W]`` correlations; ``d_h = blk_const[b] - blk_scale[b] * c`` (the
    squared-distance halves of §1.6/§1.13, formed on the fly); ``blk_logprior``: ``[nb]``
    ``log(alpha_k * mirror prior)``; ``log_offset_prior``, ``shift_r2``: ``[W, W]``
    ``log P(s)`` and ``|s|^2`` (px^2); ``sigma2``: ``sigma^2`` (squared intensity units).

    ``log w_h = blk_logprior + log P(s) - d_h / sigma^2``. Per image, with ``M = max_h log w_h``:
    blocks whose largest ``w_h / e^M`` is ``<= block_skip`` are dropped entirely (§1.6.2,
    deterministic global-maximum variant), single translations with ``w_h / e^M < entry_cutoff``
    are set to 0; ``gamma_h = w_h / W`` over the rest. Returns a dict of:

    * ``gamma`` float64 ``[nb, W, W]``; per block ``wsum`` (sum of gamma), ``logmax``/``argmax``
      (largest log-weight and its flat window index, computed also for skipped blocks; used by
      fast mode §1.12), ``count`` (non-zero translations; 0 = skipped);
    * per image ``logsum = log sum_h pi_h e^{-d_h/sigma^2}`` (``LL_i`` without the
      ``D log(sqrt(2 pi) sigma)`` term, §1.9), ``pmax``, ``best_block``, ``best_shift``,
      ``noise = sum gamma 2 d`` and ``offset = sum gamma |s|^2``.
    """
    nb = c.shape[0]
    n_img = img_ptr.shape[0] - 1
    ww = c.shape[1] * c.shape[2]
    gamma = np.empty((nb, c.shape[1], c.shape[2]), dtype=np.float64)
    res = {
        "gamma": gamma,
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
    _block_weights(
        np.ascontiguousarray(c).reshape(nb, ww),
        np.ascontiguousarray(blk_const, np.float64),
        np.ascontiguousarray(blk_scale, np.float64),
        gamma.reshape(nb, ww),
        np.ascontiguousarray(img_ptr, np.int64),
        np.ascontiguousarray(blk_logprior, np.float64),
        np.ascontiguousarray(log_offset_prior, np.float64).reshape(ww),
        np.ascontiguousarray(shift_r2, np.float64).reshape(ww),
        1.0 / float(sigma2),
        math.log(block_skip) if block_skip > 0 else -np.inf,
        float(entry_cutoff),
        res["wsum"],
        res["logmax"],
        res["argmax"],
        res["count"],
        res["logsum"],
        res["pmax"],
        res["best_block"],
        res["best_shift"],
        res["noise"],
        res["offset"],
    )
    return res


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
                    sx = c - half_width
                    for r in range(size):
                        rr = (r + sy) % size
                        for col in range(size):
                            out[r, col] += g * y[rr, (col + sx) % size]


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
    order = np.argsort(blk_key, kind="stable")
    keys_sorted = blk_key[order]
    starts = np.flatnonzero(np.r_[True, keys_sorted[1:] != keys_sorted[:-1]])
    key_ptr = np.r_[starts, len(order)].astype(np.int64)
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


def ml2d_embed_windows(gamma: np.ndarray, n: int, dtype=np.float64) -> np.ndarray:
    """Place each ``W x W`` weight window in an ``N x N`` zero array at indices ``s mod N``."""
    w = (gamma.shape[1] - 1) // 2
    idx = np.arange(-w, w + 1) % n
    out = np.zeros((gamma.shape[0], n, n), dtype=dtype)
    out[:, idx[:, None], idx[None, :]] = gamma
    return out


@njit(parallel=True, cache=True)
def _accumulate_spectra(
    acc, ghat, xhat, key_ptr, order, blk_key, blk_x, blk_scale
):  # pragma: no cover - numba
    n_keys = key_ptr.shape[0] - 1
    ny = xhat.shape[1]
    nx = xhat.shape[2]
    for t in prange(n_keys):
        p0 = key_ptr[t]
        p1 = key_ptr[t + 1]
        if p1 == p0:
            continue
        out = acc[blk_key[order[p0]]]
        for p in range(p0, p1):
            b = order[p]
            xa = xhat[blk_x[b]]
            ga = ghat[b]
            sc = blk_scale[b]
            for r in range(ny):
                for c in range(nx):
                    out[r, c] += sc * (ga[r, c].conjugate() * xa[r, c])


def ml2d_accumulate_spectra(
    acc: np.ndarray,
    ghat: np.ndarray,
    xhat: np.ndarray,
    blk_key: np.ndarray,
    blk_x: np.ndarray,
    blk_scale: np.ndarray,
) -> None:
    """``acc[key] += scale * conj(ghat[b]) * xhat[blk_x[b]]`` per block (spec §1.7), in place.

    ``ghat``: spectra of the embedded weight maps; the inverse FFT of the sum is
    ``S(p) = sum_s gamma(s) Y(p + s)``. ``acc``: complex128 ``[n_keys, N, N//2+1]``.
    """
    if blk_key.shape[0] == 0:
        return
    blk_key = np.ascontiguousarray(blk_key, np.int64)
    order = np.argsort(blk_key, kind="stable")
    keys_sorted = blk_key[order]
    starts = np.flatnonzero(np.r_[True, keys_sorted[1:] != keys_sorted[:-1]])
    key_ptr = np.r_[starts, len(order)].astype(np.int64)
    _accumulate_spectra(
        acc,
        np.ascontiguousarray(ghat),
        np.ascontiguousarray(xhat),
        key_ptr,
        order,
        blk_key,
        np.ascontiguousarray(blk_x, np.int64),
        np.ascontiguousarray(blk_scale, np.float64),
    )
