"""Backend-neutral host helpers of the kernels: numpy only, shared by ``cpu`` and ``cuda``.

Constant tables and index bookkeeping that both backends compute the same way on the host (no
numerical work of a kernel): the periodic cubic B-spline filter, the gather tables of a
spectrum permutation (cached per size and matrix set), and the key sorting of the
accumulation kernels.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["add_rows", "bspline3_denominator", "key_runs", "sort_by_key",
           "spectrum_permutation_table"]


def add_rows(target: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``target[rows[t]] += values[t]`` for every ``t``, repeated rows summed (``np.add.at``
    on the first axis of a 2-D ``target`` ``[G, L]``; ``values`` ``[n, L]``), one
    ``np.bincount`` per column: several times faster than ``np.add.at`` for the few columns
    (resolution shells) and many rows (triples) of the E-steps' per-group sums."""
    rows = np.asarray(rows, np.int64)
    for col in range(target.shape[1]):
        target[:, col] += np.bincount(rows, values[:, col], minlength=target.shape[0])


def bspline3_denominator(n: int) -> np.ndarray:
    """DFT of the sampled cubic B-spline ``[1/6, 4/6, 1/6]`` (periodic), length ``n``."""
    k = np.arange(n)
    return (4.0 + 2.0 * np.cos(2.0 * np.pi * k / n)) / 6.0


def key_runs(keys_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(run_key, run_ptr)`` of the runs of equal keys in a sorted key list: run ``r`` is
    ``keys_sorted[run_ptr[r]:run_ptr[r + 1]]``, all equal to ``run_key[r]``."""
    starts = np.flatnonzero(np.r_[True, keys_sorted[1:] != keys_sorted[:-1]])
    return keys_sorted[starts], np.r_[starts, len(keys_sorted)].astype(np.int64)


def sort_by_key(blk_key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, keys_sorted, run_ptr)``: the stable key order of the blocks, their keys in
    that order (int64) and the bounds of its runs of equal keys (:func:`key_runs`)."""
    blk_key = np.asarray(blk_key, np.int64)
    order = np.argsort(blk_key, kind="stable")
    keys_sorted = blk_key[order]
    return order, keys_sorted, key_runs(keys_sorted)[1]


@functools.lru_cache(maxsize=32)
def spectrum_permutation_table(n: int, mats_key: bytes):
    """Gather tables of ``permute_spectra`` (both backends): flat source index, conjugation
    flag and phase ``[F, N*(N//2+1)]`` each, for the matrices ``[F, 2, 2]`` int64 as bytes."""
    mats = np.frombuffer(mats_key, dtype=np.int64).reshape(-1, 2, 2)
    h = n // 2 + 1
    c = n // 2
    ky, kx = np.mgrid[0:n, 0:h]
    src = np.empty((len(mats), n * h), np.int64)
    conj = np.empty((len(mats), n * h), np.bool_)
    phase = np.empty((len(mats), n * h), np.complex128)
    for f, m in enumerate(mats):
        # Z(i) = X(c + M (i - c))  =>  Z^(k) = e^{-2 pi i k.d / N} X^(M k), d = c - M^T c
        mx = (m[0, 0] * kx + m[0, 1] * ky) % n
        my = (m[1, 0] * kx + m[1, 1] * ky) % n
        flip = mx >= h  # outside the half plane: X^(m) = conj(X^(-m))
        sx = np.where(flip, (-mx) % n, mx)
        sy = np.where(flip, (-my) % n, my)
        dx = c - (m[0, 0] * c + m[1, 0] * c)
        dy = c - (m[0, 1] * c + m[1, 1] * c)
        src[f] = (sy * h + sx).ravel()
        conj[f] = flip.ravel()
        phase[f] = np.exp(-2j * np.pi * ((kx * dx + ky * dy) % n) / n).ravel()
    return src, conj, phase
