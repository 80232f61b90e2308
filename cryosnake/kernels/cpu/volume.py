"""CPU kernels: 3D Fourier slices, weighted Fourier insertion, volume rotation.

Conventions (spec ``algorithms.md`` §0.1, §0.5, §3.8):

* volumes are ``[z, y, x]``; vectors ``(x, y, z)``; the centre is ``N // 2``;
* a volume transform ``vol_ft`` is the ``rfftn`` of the zero-padded (side ``P``) volume after
  ``ifftshift`` (centre at index 0): shape ``(P, P, P // 2 + 1)`` indexed ``[kz, ky, kx]`` with
  ``kx >= 0``; negative ``kx`` are read through Hermitian symmetry ``V(-k) = conj V(k)``;
* frequencies are in padded-grid units (``P`` cycles per box), so an image frequency ``k`` of an
  ``N`` box is ``k * P / N``;
* ``rotations`` are Euler matrices ``E`` (rows ``E[0]``, ``E[1]`` span the slice): the 2D frequency
  ``(kx, ky)`` sits at ``kx E[0] + ky E[1] = E^T (kx, ky, 0)`` (central-slice theorem, §0.5).

All kernels are array-in/array-out (the CUDA backend keeps the signatures) and parallel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = [
    "fourier_slice_sample",
    "fourier_insert",
    "rotate_volume",
    "rotate_volume_batch",
]


@njit(inline="always", cache=True)
def _cell(px, py, pz):  # pragma: no cover - numba
    """``(x0, y0, z0, fx, fy, fz)``: the lower grid corner of the cell holding ``p`` and the
    fractions inside it (trilinear weights ``f`` and ``1 - f``)."""
    x0 = int(math.floor(px))
    y0 = int(math.floor(py))
    z0 = int(math.floor(pz))
    return x0, y0, z0, px - x0, py - y0, pz - z0


@njit(inline="always", cache=True)
def _wrap(i, n):  # pragma: no cover - numba
    """``i mod n`` for ``-n <= i < 2 n``: one add, no integer division."""
    if i < 0:
        return i + n
    if i >= n:
        return i - n
    return i


@njit(cache=True, parallel=True)
def fourier_slice_sample(vol_ft, rotations, coords):
    """Sample ``vol_ft`` on the central slices of ``rotations`` (trilinear interpolation).

    ``coords``: ``(m, 2)`` float64 2D frequencies ``(kx, ky)`` in padded units; ``rotations``:
    ``(n, 3, 3)``. Returns ``(n, m)`` complex64. Points with ``|k| >= P/2 - 1`` are 0.
    """
    n = rotations.shape[0]
    m = coords.shape[0]
    P = vol_ft.shape[0]
    H = vol_ft.shape[2]
    rmax2 = (P / 2.0 - 1.0) ** 2
    out = np.zeros((n, m), dtype=np.complex64)
    for a in prange(n):
        e00, e01, e02 = rotations[a, 0, 0], rotations[a, 0, 1], rotations[a, 0, 2]
        e10, e11, e12 = rotations[a, 1, 0], rotations[a, 1, 1], rotations[a, 1, 2]
        for j in range(m):
            kx = coords[j, 0]
            ky = coords[j, 1]
            if kx * kx + ky * ky >= rmax2:
                continue
            px = kx * e00 + ky * e10
            py = kx * e01 + ky * e11
            pz = kx * e02 + ky * e12
            conj = px < 0.0
            if conj:
                px, py, pz = -px, -py, -pz
            x0, y0, z0, fx, fy, fz = _cell(px, py, pz)
            acc = 0j
            for dz in range(2):
                wz = fz if dz == 1 else 1.0 - fz
                iz = (z0 + dz) % P
                for dy in range(2):
                    wy = fy if dy == 1 else 1.0 - fy
                    iy = (y0 + dy) % P
                    for dx in range(2):
                        ix = x0 + dx
                        if ix >= H:
                            continue
                        wx = fx if dx == 1 else 1.0 - fx
                        acc += wz * wy * wx * vol_ft[iz, iy, ix]
            out[a, j] = acc.conjugate() if conj else acc
    return out


_INSERT_MAX_GRIDS = 8  # partial grids of fourier_insert (its parallelism)
_INSERT_GRID_BYTES = 1 << 30  # and at most this much memory for them


def fourier_insert(values, coords, image_index, rotations, shifts, weights, sym_ops, pad_size,
                   sample_weights=None):
    """Weighted trilinear insertion of 2D Fourier samples into a half 3D grid (§3.8.1-3).

    ``values``: ``(n_img, m)`` complex samples of each image's padded transform at ``coords``
    (``(m, 2)`` integer padded-grid frequencies ``(kx, ky)``, ``|k| < P / 2``), which must hold
    one of each ``(k, -k)`` pair (a half plane); ``image_index``, ``rotations``
    ``(n_rows, 3, 3)``, ``shifts`` ``(n_rows, 2)`` (origin ``(ox, oy)`` in pixels: the sample is
    multiplied by ``exp(-2 pi i (kx ox + ky oy) / P)`` to re-centre the particle) and
    ``weights`` ``(n_rows,)`` describe the rows; every row is inserted once per ``sym_ops``
    element ``L`` on the plane ``L E^T (kx, ky, 0)``. ``sample_weights`` ``(m,)`` (default 1)
    multiply both num and den per 2D sample (density compensation).

    Returns ``(num, den)``: ``(P, P, P // 2 + 1)`` complex128 and float64, accumulated
    ``num += w t X``, ``den += w t`` with trilinear coefficients ``t`` (up to 8 partial sums by
    rows in single precision, interleaved per voxel, added in a fixed order in double: the same
    result for any number of threads); points with negative ``kx``
    are folded to ``-k`` (conjugated). The ``kx = 0`` plane is not yet Hermitian-completed
    (the caller adds its mirror).
    """
    # partial grids by rows (row r -> grid r mod n_chunks), added in order: their number
    # depends on the grid size only, so the sums (and the volume) are the same bits whatever
    # the number of threads; bounded by _INSERT_GRID_BYTES of float32 grids
    grid_bytes = 16 * int(pad_size) ** 2 * (int(pad_size) // 2 + 1)
    n_chunks = int(max(1, min(_INSERT_MAX_GRIDS, len(image_index),
                              _INSERT_GRID_BYTES // grid_bytes)))
    if sample_weights is None:
        sample_weights = np.ones(coords.shape[0])
    kint = np.rint(np.asarray(coords)).astype(np.int64)
    return _fourier_insert(values, kint, image_index, rotations, shifts, weights, sym_ops,
                           int(pad_size), n_chunks, np.asarray(sample_weights, np.float32))


@njit(cache=True, parallel=True)
def _fourier_insert(values, kint, image_index, rotations, shifts, weights, sym_ops, pad_size,
                    n_chunks, sample_weights):
    P = pad_size
    H = P // 2 + 1
    n_rows = image_index.shape[0]
    m = kint.shape[0]
    n_sym = sym_ops.shape[0]
    # interleaved (re, im, den, pad) per voxel: one cache line serves num and den
    acc_t = np.zeros((n_chunks, P, P, H, 4), dtype=np.float32)
    half = P // 2
    for c in prange(n_chunks):
        grid = acc_t[c]
        A = np.empty((n_sym, 2, 3), dtype=np.float32)
        ex = np.empty(P + 1, dtype=np.complex64)
        ey = np.empty(P + 1, dtype=np.complex64)
        for r in range(c, n_rows, n_chunks):
            w = weights[r]
            if w <= 0.0:
                continue
            img = image_index[r]
            for j in range(P + 1):
                a = -2.0 * math.pi * (j - half) / P
                ex[j] = complex(math.cos(a * shifts[r, 0]), math.sin(a * shifts[r, 0])) * w
                ey[j] = complex(math.cos(a * shifts[r, 1]), math.sin(a * shifts[r, 1]))
            for s in range(n_sym):
                # rows of E L^T: the slice plane of symmetry copy s
                for u in range(2):
                    for v in range(3):
                        acc = 0.0
                        for q in range(3):
                            acc += rotations[r, u, q] * sym_ops[s, v, q]
                        A[s, u, v] = acc
            wf = np.float32(w)
            for j in range(m):
                kx = kint[j, 0]
                ky = kint[j, 1]
                ws = wf * sample_weights[j]
                val = values[img, j] * ex[kx + half] * ey[ky + half] * sample_weights[j]
                fkx = np.float32(kx)
                fky = np.float32(ky)
                for s in range(n_sym):
                    px = fkx * A[s, 0, 0] + fky * A[s, 1, 0]
                    py = fkx * A[s, 0, 1] + fky * A[s, 1, 1]
                    pz = fkx * A[s, 0, 2] + fky * A[s, 1, 2]
                    vr = val.real
                    vi = val.imag
                    if px < 0.0:
                        px, py, pz = -px, -py, -pz
                        vi = -vi
                    x0, y0, z0, fx, fy, fz = _cell(px, py, pz)
                    # |p| < P/2: indices wrap with one add
                    for dz in range(2):
                        wz = fz if dz == 1 else 1.0 - fz
                        iz = _wrap(z0 + dz, P)
                        for dy in range(2):
                            wzy = wz * (fy if dy == 1 else 1.0 - fy)
                            iy = _wrap(y0 + dy, P)
                            for dx in range(2):
                                ix = x0 + dx
                                if ix >= H:
                                    continue
                                t = wzy * (fx if dx == 1 else 1.0 - fx)
                                grid[iz, iy, ix, 0] += t * vr
                                grid[iz, iy, ix, 1] += t * vi
                                grid[iz, iy, ix, 2] += t * ws
    num_out = np.zeros((P, P, H), dtype=np.complex128)
    den_out = np.zeros((P, P, H), dtype=np.float64)
    for c in range(n_chunks):
        for iz in range(P):
            for iy in range(P):
                for ix in range(H):
                    num_out[iz, iy, ix] += complex(acc_t[c, iz, iy, ix, 0],
                                                   acc_t[c, iz, iy, ix, 1])
                    den_out[iz, iy, ix] += acc_t[c, iz, iy, ix, 2]
    return num_out, den_out


def rotate_volume(vol, matrix, shift):
    """Trilinear resampling ``out(x) = vol(M (x - c - shift) + c)`` (zero outside).

    ``x`` are voxel positions ``(x, y, z)``, ``c = N // 2``; ``matrix`` ``(3, 3)``, ``shift``
    ``(3,)`` as ``(sx, sy, sz)`` voxels (the content moves by ``+shift`` after the rotation).
    ``vol`` is ``[z, y, x]``; returns float32 of the same shape.
    """
    out = rotate_volume_batch(np.asarray(vol, dtype=np.float32),
                              np.ascontiguousarray(np.asarray(matrix, np.float64)[None]),
                              np.ascontiguousarray(np.asarray(shift, np.float64)[None]))
    return out[0]


@njit(cache=True, parallel=True)
def rotate_volume_batch(vol, matrices, shifts):
    """:func:`rotate_volume` for many ``(matrix, shift)`` pairs: ``(n, Z, Y, X)`` float32.

    Parallel over the pairs (one volume per thread), serial inside.
    """
    nz, ny, nx = vol.shape
    cz, cy, cx = nz // 2, ny // 2, nx // 2
    n = matrices.shape[0]
    out = np.zeros((n, nz, ny, nx), dtype=np.float32)
    for b in prange(n):
        M = matrices[b]
        for k in range(nz):
            z = k - cz - shifts[b, 2]
            for i in range(ny):
                y = i - cy - shifts[b, 1]
                for j in range(nx):
                    x = j - cx - shifts[b, 0]
                    sx = M[0, 0] * x + M[0, 1] * y + M[0, 2] * z + cx
                    sy = M[1, 0] * x + M[1, 1] * y + M[1, 2] * z + cy
                    sz = M[2, 0] * x + M[2, 1] * y + M[2, 2] * z + cz
                    x0 = int(math.floor(sx))
                    y0 = int(math.floor(sy))
                    z0 = int(math.floor(sz))
                    if x0 < -1 or y0 < -1 or z0 < -1 or x0 >= nx or y0 >= ny or z0 >= nz:
                        continue
                    fx = sx - x0
                    fy = sy - y0
                    fz = sz - z0
                    acc = 0.0
                    for dz in range(2):
                        zz = z0 + dz
                        if zz < 0 or zz >= nz:
                            continue
                        wz = fz if dz == 1 else 1.0 - fz
                        for dy in range(2):
                            yy = y0 + dy
                            if yy < 0 or yy >= ny:
                                continue
                            wy = fy if dy == 1 else 1.0 - fy
                            for dx in range(2):
                                xx = x0 + dx
                                if xx < 0 or xx >= nx:
                                    continue
                                wx = fx if dx == 1 else 1.0 - fx
                                acc += wz * wy * wx * vol[zz, yy, xx]
                    out[b, k, i, j] = acc
    return out
