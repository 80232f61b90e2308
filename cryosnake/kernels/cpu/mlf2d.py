"""CPU kernels: the MLF2D E-step inner loops (spec ``algorithms.md`` §2.7, §2.8).

Vocabulary shared with :mod:`cryosnake.mlf2d.estep`:

* a **triple** is one ``(image i, class k, flip f)``; it owns ``V`` translations (the search
  disc around the stored offset) and ``n_psi`` reference angles, so its hypotheses form a
  ``[V, n_psi]`` array; triples are stored image-major (``img_ptr``);
* the **centred row** of a triple is its image, centred on the stored offset, flipped and
  weighted by ``CTF / sigma^2``, on the Fourier points of the iteration.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..interface import TriplePosteriors

__all__ = ["mlf2d_centred", "mlf2d_weights"]


@njit(parallel=True, cache=True)
def _centred(xp, cw, trip_img, trip_flip, trip_ux, trip_uy, src, conj, phase0, fx, fy, tw,
             out):  # pragma: no cover - numba
    nt, n_cols = out.shape
    n = tw.shape[0]
    for t in prange(nt):
        i = trip_img[t]
        f = trip_flip[t]
        ux = trip_ux[t]
        uy = trip_uy[t]
        for p in range(n_cols):
            x = xp[i, src[f, p]]
            if conj[f, p]:
                x = x.conjugate()
            m = (fx[f, p] * ux + fy[f, p] * uy) % n
            out[t, p] = x * phase0[f, p] * tw[m] * cw[i, f, p]


def mlf2d_centred(xp, cw, trip_img, trip_flip, trip_u, tables, tw, n_points=None,
                  dtype=np.complex64) -> np.ndarray:
    """``Z[t] = cw[i, f] * FT(G_f Sh_{-u} X_i)`` on the first ``n_points`` points.

    ``xp``: ``[m, Np]`` complex spectra of the raw images at the points of a
    :class:`~cryosnake.mlf2d.fourier.PointSet`; ``cw``: ``[m, F, Np]`` real weights in the
    flipped frame (``CTF(F_f k) / sigma^2(l)``); per triple ``t``: image ``trip_img``, flip
    ``trip_flip`` and physical offset ``trip_u`` ``[nt, 2]`` (px); ``tables``: the flip tables
    of the point set (``src``, ``conj``, ``phase0``, ``fx``, ``fy``); ``tw``:
    :func:`~cryosnake.mlf2d.fourier.translation_table`. Output ``[nt, n_points]`` ``dtype``.
    """
    n_cols = xp.shape[1] if n_points is None else int(n_points)
    trip_u = np.asarray(trip_u, dtype=np.int64).reshape(-1, 2)
    out = np.empty((len(trip_img), n_cols), dtype=dtype)
    if len(trip_img):
        _centred(np.ascontiguousarray(xp), np.ascontiguousarray(cw),
                 np.ascontiguousarray(trip_img, np.int64),
                 np.ascontiguousarray(trip_flip, np.int64), np.ascontiguousarray(trip_u[:, 0]),
                 np.ascontiguousarray(trip_u[:, 1]), tables["src"], tables["conj"],
                 tables["phase0"], tables["fx"], tables["fy"], tw, out)
    return out


@njit(parallel=True, cache=True)
def _weights(D, mask, trip_logprior, entry_logprior, img_ptr, log_skip, log_cutoff, gamma,
             wsum, logmax, argmax, img_logsum, img_pmax, img_best_t, img_best_v,
             img_best_j):  # pragma: no cover - numba
    n_img = img_ptr.shape[0] - 1
    nv = D.shape[1]
    npsi = D.shape[2]
    for i in prange(n_img):
        t0 = img_ptr[i]
        t1 = img_ptr[i + 1]
        big = -np.inf
        bt = -1
        bv = -1
        bj = -1
        # pass 1: largest log-weight per block (t, j) and per image (log-sum-exp shift)
        for t in range(t0, t1):
            lp = trip_logprior[t]
            for j in range(npsi):
                logmax[t, j] = -np.inf
                argmax[t, j] = 0
            for v in range(nv):
                lv = lp + entry_logprior[t, v]
                for j in range(npsi):
                    if mask[t, j]:
                        x = lv - D[t, v, j]
                        if x > logmax[t, j]:
                            logmax[t, j] = x
                            argmax[t, j] = v
            for j in range(npsi):
                if logmax[t, j] > big:
                    big = logmax[t, j]
                    bt = t
                    bv = argmax[t, j]
                    bj = j
        # pass 2: weights relative to the maximum; skip rule (global-maximum variant, §1.6.2)
        total = 0.0
        for t in range(t0, t1):
            lp = trip_logprior[t]
            for j in range(npsi):
                wsum[t, j] = 0.0
            for v in range(nv):
                lv = lp + entry_logprior[t, v]
                for j in range(npsi):
                    w = 0.0
                    if mask[t, j] and logmax[t, j] - big > log_skip:
                        x = lv - D[t, v, j] - big
                        if x >= log_cutoff:
                            w = math.exp(x)
                    gamma[t, v, j] = w
                    wsum[t, j] += w
            for j in range(npsi):
                total += wsum[t, j]
        if bt < 0:
            img_logsum[i] = -np.inf
            img_pmax[i] = 0.0
            img_best_t[i] = -1
            img_best_v[i] = -1
            img_best_j[i] = -1
            continue
        # pass 3: posteriors
        inv = 1.0 / total
        for t in range(t0, t1):
            for v in range(nv):
                for j in range(npsi):
                    gamma[t, v, j] *= inv
            for j in range(npsi):
                wsum[t, j] *= inv
        img_logsum[i] = big + math.log(total)
        img_pmax[i] = inv
        img_best_t[i] = bt
        img_best_v[i] = bv
        img_best_j[i] = bj


def mlf2d_weights(D, mask, trip_logprior, entry_logprior, img_ptr, block_skip=1e-8,
                  entry_cutoff=0.0, gamma_dtype=np.float64) -> TriplePosteriors:
    """Posteriors of every hypothesis of every triple, log-sum-exp per image (spec §2.8).

    ``D``: ``[nt, V, n_psi]`` ``D_h = sum_P |X_trans - c A|^2 / sigma^2``; ``mask``: ``[nt,
    n_psi]`` the (significant) blocks evaluated; ``trip_logprior``: ``[nt]`` ``log(alpha_k *
    mirror prior)``; ``entry_logprior``: ``[nt, V]`` ``log P(u)`` of each translation.
    ``log w_h = trip_logprior + entry_logprior - D_h``; with ``M = max_h log w_h`` (the true
    minimum of ``D``, no zeroing of better translations, Decisions), blocks ``(t, j)`` whose
    largest ``w / e^M`` is ``<= block_skip`` are dropped, single hypotheses below
    ``entry_cutoff`` count as 0, ``gamma = w / sum w``.

    Returns a :class:`~cryosnake.kernels.interface.TriplePosteriors`: ``gamma`` ``[nt, V,
    n_psi]`` (``gamma_dtype``: float32 halves its memory and the copies of single-precision
    callers; weights and their sums are computed in float64), per block ``wsum``, ``logmax``,
    ``argmax`` (best translation index) ``[nt, n_psi]``, per image ``logsum`` (``log sum_h
    w_h``), ``pmax``, ``best_t``, ``best_v``, ``best_j``.
    """
    nt, nv, npsi = D.shape
    n_img = len(img_ptr) - 1
    res = {
        "gamma": np.empty((nt, nv, npsi), gamma_dtype),
        "wsum": np.empty((nt, npsi)),
        "logmax": np.empty((nt, npsi)),
        "argmax": np.empty((nt, npsi), np.int64),
        "logsum": np.empty(n_img),
        "pmax": np.empty(n_img),
        "best_t": np.empty(n_img, np.int64),
        "best_v": np.empty(n_img, np.int64),
        "best_j": np.empty(n_img, np.int64),
    }
    # float32 D (single precision) is read as it is: widened to float64 inside the kernel,
    # exactly as a converted copy would be, without the copy
    D = np.ascontiguousarray(D, D.dtype if D.dtype in (np.float32, np.float64) else np.float64)
    _weights(D, np.ascontiguousarray(mask, np.bool_),
             np.ascontiguousarray(trip_logprior, np.float64),
             np.ascontiguousarray(entry_logprior, np.float64),
             np.ascontiguousarray(img_ptr, np.int64),
             math.log(block_skip) if block_skip > 0 else -np.inf,
             math.log(entry_cutoff) if entry_cutoff > 0 else -np.inf,
             res["gamma"], res["wsum"], res["logmax"], res["argmax"], res["logsum"],
             res["pmax"], res["best_t"], res["best_v"], res["best_j"])
    return TriplePosteriors(**res)
