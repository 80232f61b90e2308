"""A mixed-radix, output-pruned inverse DFT for numba kernels, vectorised over many columns.

Used by the fused ML2D correlation and accumulation kernels (:mod:`.ml2d`, spec §1.7), where
a 2D transform is cut to the ``W x W`` translation window: only the rows that the window
needs are computed. :func:`inverse_dft_tables` (host, cached per length) gives the input
permutation, the passes and the twiddles of a decimation-in-time transform of any length
(radix 4, at most one 2, then odd primes); :func:`inverse_dft_passes` (numba, inlined into the
calling kernel) runs them in place along axis 0 over ``lanes`` columns at once, so that LLVM
vectorises the inner loops. A forward DFT is ``conj(IDFT(conj(x)))``. Unnormalised (no
``1/n``).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

__all__ = ["radices", "inverse_dft_tables", "inverse_dft_passes"]


def radices(n: int) -> list[int]:
    """Radices of the passes of a length-``n`` DFT: 4s, at most one 2, then odd primes."""
    out = []
    while n % 4 == 0:
        out.append(4)
        n //= 4
    if n % 2 == 0:
        out.append(2)
        n //= 2
    p = 3
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 2
    return out


@functools.lru_cache(maxsize=64)
def inverse_dft_tables(n: int):
    """Tables of an in-place decimation-in-time inverse DFT of length ``n`` (unnormalised).

    Returns ``(perm, stages, twiddles)``: input element ``k`` is stored in row ``perm[k]``;
    pass ``s`` (``stages[s] = (p, L, tw_off, root_off)``) combines ``p`` transforms of length
    ``L`` into one of length ``L p`` with the twiddles ``e^{+2 pi i j r / (L p)}`` at
    ``tw_off + j p + r`` (``j < L``, ``r < p``) and the roots ``e^{+2 pi i q r / p}`` at
    ``root_off + q p + r`` (used by radices other than 2 and 4).
    """
    facs = radices(n)
    perm = np.zeros(n, np.int64)
    for k in range(n):
        pos, rem, length = 0, k, n
        for p in reversed(facs):  # the last pass splits the input first
            length //= p
            pos += (rem % p) * length
            rem //= p
        perm[k] = pos
    stages, tw, off, length = [], [], 0, 1
    for p in facs:
        j = np.arange(length)[:, None]
        r = np.arange(p)[None, :]
        tw.append(np.exp(2j * np.pi * j * r / (length * p)).ravel())
        tw.append(np.exp(2j * np.pi * ((r.T * r) % p) / p).ravel())
        stages.append((p, length, off, off + length * p))
        off += length * p + p * p
        length *= p
    tw = np.concatenate(tw) if tw else np.zeros(0, complex)
    return perm, np.array(stages, np.int64).reshape(-1, 4), tw


@njit(inline="always", cache=True)
def inverse_dft_passes(ar, ai, n, lanes, stages, twr, twi, need_out, tr, ti):  # pragma: no cover
    """In-place inverse DFT along axis 0 of ``ar + i ai`` (``[n, >= lanes]``, input in the
    digit-reversed order of :func:`inverse_dft_tables`), vectorised over the ``lanes`` columns; only
    output rows ``< need_out`` are guaranteed (pruned). ``tr``/``ti``: ``[p, >= lanes]`` scratch."""
    for s in range(stages.shape[0]):
        p = stages[s, 0]
        L = stages[s, 1]
        to = stages[s, 2]
        ro = stages[s, 3]
        need = min(L * p, need_out)
        for start in range(0, n, L * p):
            for j in range(min(L, need)):
                t = to + j * p
                if p == 4:
                    i0 = start + j
                    i1 = i0 + L
                    i2 = i1 + L
                    i3 = i2 + L
                    w1r = twr[t + 1]
                    w1i = twi[t + 1]
                    w2r = twr[t + 2]
                    w2i = twi[t + 2]
                    w3r = twr[t + 3]
                    w3i = twi[t + 3]
                    if j + 2 * L < need:
                        for c in range(lanes):
                            y0r = ar[i0, c]
                            y0i = ai[i0, c]
                            y1r = w1r * ar[i1, c] - w1i * ai[i1, c]
                            y1i = w1r * ai[i1, c] + w1i * ar[i1, c]
                            y2r = w2r * ar[i2, c] - w2i * ai[i2, c]
                            y2i = w2r * ai[i2, c] + w2i * ar[i2, c]
                            y3r = w3r * ar[i3, c] - w3i * ai[i3, c]
                            y3i = w3r * ai[i3, c] + w3i * ar[i3, c]
                            s02r = y0r + y2r
                            s02i = y0i + y2i
                            d02r = y0r - y2r
                            d02i = y0i - y2i
                            s13r = y1r + y3r
                            s13i = y1i + y3i
                            d13r = y1r - y3r
                            d13i = y1i - y3i
                            ar[i0, c] = s02r + s13r
                            ai[i0, c] = s02i + s13i
                            ar[i1, c] = d02r - d13i
                            ai[i1, c] = d02i + d13r
                            ar[i2, c] = s02r - s13r
                            ai[i2, c] = s02i - s13i
                            ar[i3, c] = d02r + d13i
                            ai[i3, c] = d02i - d13r
                    else:  # outputs q = 0, 1 only
                        for c in range(lanes):
                            y0r = ar[i0, c]
                            y0i = ai[i0, c]
                            y1r = w1r * ar[i1, c] - w1i * ai[i1, c]
                            y1i = w1r * ai[i1, c] + w1i * ar[i1, c]
                            y2r = w2r * ar[i2, c] - w2i * ai[i2, c]
                            y2i = w2r * ai[i2, c] + w2i * ar[i2, c]
                            y3r = w3r * ar[i3, c] - w3i * ai[i3, c]
                            y3i = w3r * ai[i3, c] + w3i * ar[i3, c]
                            d02r = y0r - y2r
                            d02i = y0i - y2i
                            d13r = y1r - y3r
                            d13i = y1i - y3i
                            ar[i0, c] = y0r + y2r + y1r + y3r
                            ai[i0, c] = y0i + y2i + y1i + y3i
                            ar[i1, c] = d02r - d13i
                            ai[i1, c] = d02i + d13r
                elif p == 2:
                    a = start + j
                    b = a + L
                    wr = twr[t + 1]
                    wi = twi[t + 1]
                    if j + L < need:
                        for c in range(lanes):
                            ur = wr * ar[b, c] - wi * ai[b, c]
                            ui = wr * ai[b, c] + wi * ar[b, c]
                            ar[b, c] = ar[a, c] - ur
                            ai[b, c] = ai[a, c] - ui
                            ar[a, c] = ar[a, c] + ur
                            ai[a, c] = ai[a, c] + ui
                    else:
                        for c in range(lanes):
                            ar[a, c] = ar[a, c] + wr * ar[b, c] - wi * ai[b, c]
                            ai[a, c] = ai[a, c] + wr * ai[b, c] + wi * ar[b, c]
                else:  # generic radix: twiddled inputs, then a direct p-point DFT
                    for r in range(p):
                        idx = start + j + r * L
                        wr = twr[t + r]
                        wi = twi[t + r]
                        for c in range(lanes):
                            tr[r, c] = wr * ar[idx, c] - wi * ai[idx, c]
                            ti[r, c] = wr * ai[idx, c] + wi * ar[idx, c]
                    for q in range(p):
                        if j + q * L >= need:
                            break
                        idx = start + j + q * L
                        for c in range(lanes):
                            ar[idx, c] = tr[0, c]
                            ai[idx, c] = ti[0, c]
                        for r in range(1, p):
                            cr = twr[ro + q * p + r]
                            ci = twi[ro + q * p + r]
                            for c in range(lanes):
                                ar[idx, c] += cr * tr[r, c] - ci * ti[r, c]
                                ai[idx, c] += cr * ti[r, c] + ci * tr[r, c]
