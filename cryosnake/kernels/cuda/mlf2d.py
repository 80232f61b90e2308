"""CUDA twins of ``kernels.cpu.mlf2d``: the MLF2D E-step inner loops (spec §2.7, §2.8).

Vocabulary of the CPU module: a **triple** ``t`` is one ``(image, class, flip)`` with ``V``
translations x ``n_psi`` reference angles; triples are stored image-major (``img_ptr``).

Launch geometry and chunking:

* :func:`mlf2d_centred`: one thread per (triple, Fourier point), points fastest; the image
  spectra, CTF weights and flip tables are uploaded once per call; triples are chunked so that a
  chunk's rows (``n_points`` complex values each) fit the device budget.
* :func:`mlf2d_weights`: per chunk of whole images (a log-sum-exp never spans two chunks; the
  chunk holds as many images as their triples' ``D``, ``gamma`` and per-block arrays fit the
  budget, at least one), five launches with no host round trip in between, all one thread per
  item: block maxima ``(t, j)`` (loop over ``V``; the image maximum by ``atomic.max``), the
  first block reaching it (``atomic.min`` of ``t n_psi + j``: the CPU's tie rule), weights and
  block sums (the image total by ``atomic.add``), per-image results, normalisation per
  hypothesis ``(t, v, j)``. Everything is float64, as on the CPU; only the order of the
  per-image sum differs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cryosnake.kernels.interface import TriplePosteriors

from . import runtime as rt

__all__ = ["mlf2d_centred", "mlf2d_weights"]


@cuda.jit
def _centred(xp, cw, trip_img, trip_flip, trip_ux, trip_uy, src, conj, phase0, fx, fy, tw,
             out):  # pragma: no cover - device code
    """Point ``q = t n_cols + p`` of the centred row of triple ``t``."""
    n_cols = out.shape[1]
    for q in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        t = q // n_cols
        p = q - t * n_cols
        out[t, p] = _centred_value(xp, cw, trip_img[t], trip_flip[t], trip_ux[t], trip_uy[t],
                                   p, src, conj, phase0, fx, fy, tw)


@cuda.jit(device=True)
def _centred_value(xp, cw, i, f, ux, uy, p, src, conj, phase0, fx, fy,
                   tw):  # pragma: no cover - device code
    n = tw.shape[0]
    x = xp[i, src[f, p]]
    if conj[f, p]:
        x = complex(x.real, -x.imag)
    m = (fx[f, p] * ux + fy[f, p] * uy) % n
    if m < 0:
        m += n
    return x * phase0[f, p] * tw[m] * cw[i, f, p]


def mlf2d_centred(xp, cw, trip_img, trip_flip, trip_u, tables, tw, n_points=None,
                  dtype=np.complex64) -> np.ndarray:
    """``Z[t] = cw[i, f] * FT(G_f Sh_{-u} X_i)`` on the first ``n_points`` points.

    Arguments as :func:`cryosnake.kernels.cpu.mlf2d_centred`: ``xp`` ``[m, Np]`` image
    spectra at the point set, ``cw`` ``[m, F, Np]`` CTF / sigma^2 weights in the flipped frame,
    per triple the image, flip and physical offset ``trip_u`` ``[nt, 2]`` (px), the point
    set's flip ``tables`` and the translation table ``tw``. Output ``[nt, n_points]`` ``dtype``.
    """
    n_cols = xp.shape[1] if n_points is None else int(n_points)
    trip_u = np.asarray(trip_u, dtype=np.int64).reshape(-1, 2)
    nt = len(trip_img)
    out = np.empty((nt, n_cols), dtype=dtype)
    if nt == 0 or n_cols == 0:
        return out
    shared = [rt.to_device(a) for a in (xp, cw)]
    tabs = [rt.to_device(tables[k]) for k in ("src", "conj", "phase0", "fx", "fy")]
    d_tw = rt.to_device(tw)
    per_triple = n_cols * out.itemsize + 32
    trip = [np.asarray(trip_img, np.int64), np.asarray(trip_flip, np.int64), trip_u[:, 0],
            trip_u[:, 1]]
    for s, e in rt.chunk_ranges(nt, per_triple, n_cols):
        d_out = rt.device_empty((e - s, n_cols), out.dtype)
        rt.launch_items(_centred, (e - s) * n_cols, *shared,
                        *(rt.to_device(a[s:e]) for a in trip), *tabs, d_tw, d_out)
        out[s:e] = rt.to_host(d_out)
    return out


# -- posteriors ---------------------------------------------------------------------------------

_NO_BLOCK = np.iinfo(np.int64).max  # ``first`` of an image without any block yet


@cuda.jit
def _block_max(D, mask, trip_logprior, entry_logprior, trip_img, logmax, argmax,
               big):  # pragma: no cover - device code
    """Per block ``(t, j)``: largest log-weight over the translations, its index, and the
    running image maximum ``big`` (atomic)."""
    nt, nv, npsi = D.shape
    for q in range(cuda.grid(1), nt * npsi, cuda.gridsize(1)):
        t = q // npsi
        j = q - t * npsi
        best = -math.inf
        arg = 0
        if mask[t, j]:
            lp = trip_logprior[t]
            for v in range(nv):
                x = lp + entry_logprior[t, v] - D[t, v, j]
                if x > best:
                    best = x
                    arg = v
        logmax[t, j] = best
        argmax[t, j] = arg
        if best > -math.inf:
            cuda.atomic.max(big, trip_img[t], best)


@cuda.jit
def _first_best(logmax, trip_img, big, first):  # pragma: no cover - device code
    """Per block: the first block ``q = t n_psi + j`` reaching its image maximum (atomic min),
    the CPU's tie rule."""
    npsi = logmax.shape[1]
    for q in range(cuda.grid(1), logmax.size, cuda.gridsize(1)):
        t = q // npsi
        i = trip_img[t]
        x = logmax[t, q - t * npsi]
        if x > -math.inf and x == big[i]:
            cuda.atomic.min(first, i, q)


@cuda.jit
def _block_weights(D, mask, trip_logprior, entry_logprior, trip_img, logmax, big, log_skip,
                   log_cutoff, gamma, wsum, total):  # pragma: no cover - device code
    """Per block ``(t, j)``: unnormalised weights ``exp(log w - M_i)``, their sum, and the
    image total (atomic)."""
    nt, nv, npsi = D.shape
    for q in range(cuda.grid(1), nt * npsi, cuda.gridsize(1)):
        t = q // npsi
        j = q - t * npsi
        i = trip_img[t]
        b = big[i]
        live = mask[t, j] and logmax[t, j] - b > log_skip
        lp = trip_logprior[t]
        acc = 0.0
        for v in range(nv):
            w = 0.0
            if live:
                x = lp + entry_logprior[t, v] - D[t, v, j] - b
                if x >= log_cutoff:
                    w = math.exp(x)
            gamma[t, v, j] = w
            acc += w
        wsum[t, j] = acc
        if acc > 0.0:
            cuda.atomic.add(total, i, acc)


@cuda.jit
def _image_stats(first, argmax, big, total, best_t, best_v, best_j, logsum, pmax,
                 inv):  # pragma: no cover - device code
    """Per image: best hypothesis, ``log sum w``, ``pmax`` and the normalisation."""
    for i in range(cuda.grid(1), first.shape[0], cuda.gridsize(1)):
        _image_stats_at(i, first, argmax, big, total, best_t, best_v, best_j, logsum, pmax,
                        inv)


@cuda.jit(device=True)
def _image_stats_at(i, first, argmax, big, total, best_t, best_v, best_j, logsum, pmax,
                    inv):  # pragma: no cover - device code
    npsi = argmax.shape[1]
    q = first[i]
    if q == _NO_BLOCK:
        best_t[i] = -1
        best_v[i] = -1
        best_j[i] = -1
        logsum[i] = -math.inf
        pmax[i] = 0.0
        inv[i] = 1.0
        return
    t = q // npsi
    best_t[i] = t
    best_j[i] = q - t * npsi
    best_v[i] = argmax[t, q - t * npsi]
    r = 1.0 / total[i]
    logsum[i] = big[i] + math.log(total[i])
    pmax[i] = r
    inv[i] = r


@cuda.jit
def _normalise(trip_img, inv, gamma, wsum):  # pragma: no cover - device code
    """Per hypothesis ``(t, v, j)``: ``gamma *= 1 / sum w`` (and ``wsum`` once per block)."""
    _nt, nv, npsi = gamma.shape
    for q in range(cuda.grid(1), gamma.size, cuda.gridsize(1)):
        t = q // (nv * npsi)
        r = q - t * nv * npsi
        v = r // npsi
        j = r - v * npsi
        s = inv[trip_img[t]]
        gamma[t, v, j] *= s
        if v == 0:
            wsum[t, j] *= s


# results of :func:`mlf2d_weights`: name, kind (per hypothesis, block ``(t, j)`` or image), dtype
_RESULTS = (
    ("gamma", "hypothesis", np.float64), ("wsum", "block", np.float64),
    ("logmax", "block", np.float64), ("argmax", "block", np.int64),
    ("logsum", "image", np.float64), ("pmax", "image", np.float64),
    ("best_t", "image", np.int64), ("best_v", "image", np.int64), ("best_j", "image", np.int64),
)


def _result_shape(kind: str, nt: int, nv: int, npsi: int, n_img: int) -> tuple:
    return {"hypothesis": (nt, nv, npsi), "block": (nt, npsi), "image": (n_img,)}[kind]


def _image_chunks(img_ptr: np.ndarray, bytes_per_triple: int, threads_per_triple: int
                  ) -> list[tuple[int, int]]:
    """Image ranges ``[a, b)`` whose triples fit :func:`runtime.batch_size` and
    :data:`runtime.MAX_LAUNCH_THREADS` (at least one image per range)."""
    n_img = len(img_ptr) - 1
    budget = rt.batch_size(bytes_per_triple, max(1, int(img_ptr[-1] - img_ptr[0])))
    budget = min(budget, rt.MAX_LAUNCH_THREADS // max(1, threads_per_triple))
    out, a = [], 0
    while a < n_img:
        b = int(np.searchsorted(img_ptr, img_ptr[a] + budget, side="right")) - 1
        b = min(n_img, max(a + 1, b))
        out.append((a, b))
        a = b
    return out


def mlf2d_weights(D, mask, trip_logprior, entry_logprior, img_ptr, block_skip=1e-8,
                  entry_cutoff=0.0, gamma_dtype=np.float64) -> TriplePosteriors:
    """Posteriors of every hypothesis of every triple, log-sum-exp per image (spec §2.8).

    Arguments and results as :func:`cryosnake.kernels.cpu.mlf2d_weights`: ``D`` ``[nt, V,
    n_psi]``, ``mask`` ``[nt, n_psi]``, ``trip_logprior`` ``[nt]``, ``entry_logprior`` ``[nt,
    V]``, ``gamma_dtype``; returns a :class:`~cryosnake.kernels.interface.TriplePosteriors`.
    """
    D = np.ascontiguousarray(D, np.float64)
    nt, nv, npsi = D.shape
    img_ptr = np.ascontiguousarray(img_ptr, np.int64)
    n_img = len(img_ptr) - 1
    dtypes = {k: (np.dtype(gamma_dtype) if k == "gamma" else dt) for k, _kind, dt in _RESULTS}
    res = {k: np.empty(_result_shape(kind, nt, nv, npsi, n_img), dtypes[k])
           for k, kind, _dt in _RESULTS}
    inputs = (D, np.ascontiguousarray(mask, np.bool_),
              np.ascontiguousarray(trip_logprior, np.float64),
              np.ascontiguousarray(entry_logprior, np.float64).reshape(nt, nv))
    log_skip = math.log(block_skip) if block_skip > 0 else -math.inf
    log_cutoff = math.log(entry_cutoff) if entry_cutoff > 0 else -math.inf
    per_triple = nv * npsi * 16 + npsi * 25 + nv * 8 + 16
    for a, b in _image_chunks(img_ptr, per_triple, nv * npsi):
        t0, t1 = int(img_ptr[a]), int(img_ptr[b])
        ptr = img_ptr[a:b + 1] - t0
        n, m = t1 - t0, b - a
        d_in = [rt.to_device(x[t0:t1]) for x in inputs]
        d_img = rt.to_device(np.repeat(np.arange(m), np.diff(ptr)))
        dev = {k: rt.device_empty(_result_shape(kind, n, nv, npsi, m), dtypes[k])
               for k, kind, _dt in _RESULTS}
        big = rt.to_device(np.full(m, -np.inf))
        first = rt.to_device(np.full(m, _NO_BLOCK, np.int64))
        total = rt.device_zeros(m, np.float64)
        inv = rt.device_empty(m, np.float64)
        # the atomics kernels run on one simulated thread (the simulator's atomics convoy)
        rt.launch_items(_block_max, n * npsi, *d_in, d_img, dev["logmax"], dev["argmax"], big,
                        simulated_threads=1)
        rt.launch_items(_first_best, n * npsi, dev["logmax"], d_img, big, first,
                        simulated_threads=1)
        rt.launch_items(_block_weights, n * npsi, *d_in, d_img, dev["logmax"], big, log_skip,
                        log_cutoff, dev["gamma"], dev["wsum"], total, simulated_threads=1)
        rt.launch_items(_image_stats, m, first, dev["argmax"], big, total, dev["best_t"],
                        dev["best_v"], dev["best_j"], dev["logsum"], dev["pmax"], inv)
        rt.launch_items(_normalise, n * nv * npsi, d_img, inv, dev["gamma"], dev["wsum"])
        for k, kind, _dt in _RESULTS:
            res[k][slice(a, b) if kind == "image" else slice(t0, t1)] = rt.to_host(dev[k])
        bt = res["best_t"][a:b]
        bt[bt >= 0] += t0  # chunk-relative triple indices
    return TriplePosteriors(**res)
