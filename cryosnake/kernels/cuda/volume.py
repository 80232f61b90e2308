"""CUDA twins of ``kernels.cpu.volume``: central slices, weighted Fourier insertion, rotation.

Conventions are the CPU module's (spec ``algorithms.md`` §0.5, §3.8): volumes ``[z, y, x]``,
vectors ``(x, y, z)``, centre ``N // 2``; a volume transform is the half grid ``(P, P, P // 2 +
1)`` ``[kz, ky, kx]`` of the padded volume, negative ``kx`` read through ``V(-k) = conj V(k)``;
frequencies in padded-grid units; the 2D frequency ``(kx, ky)`` of rotation ``E`` sits at
``E^T (kx, ky, 0)``.

Launch geometry and chunking (one grid-stride launch per chunk, :func:`runtime.launch_items`;
chunks from :func:`runtime.chunk_ranges`, i.e. :func:`runtime.batch_size` of the free device
memory and at most :data:`runtime.MAX_LAUNCH_THREADS` threads):

* :func:`fourier_slice_sample`: one thread per (rotation, sample), samples fastest (coalesced
  output); the transform is uploaded once per call; rotations are chunked so that a chunk's
  output (``m`` complex64 per rotation) fits the device budget.
* :func:`fourier_insert`: one thread per (row, symmetry operator, sample), samples fastest; the
  accumulators ``num`` (2 x float64) and ``den`` (float64) cover the whole half grid on the
  device for the call and are summed with float64 ``cuda.atomic.add`` (the CPU's per-thread
  float32 partials are added in float64: the GPU sum is at least as precise, in another
  order); rows with ``w <= 0`` are dropped on the host; rows are chunked by their own bytes
  and by :data:`runtime.MAX_LAUNCH_THREADS` (``n_sym * m`` threads per row).
* :func:`rotate_volume_batch`: one thread per (pair, output voxel); pairs are chunked so that a
  chunk's output volumes fit the device budget.

Arithmetic is float64 as on the CPU (positions, trilinear weights, phases); the kernels are
bound by gathers and atomics, not by the H100's half-rate FP64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from . import runtime as rt

__all__ = [
    "fourier_slice_sample",
    "fourier_insert",
    "rotate_volume",
    "rotate_volume_batch",
]


@cuda.jit(device=True)
def _wrap(i, size):
    """Index ``i`` in ``[-size, 2 size)`` wrapped to ``[0, size)`` with one add."""
    if i < 0:
        return i + size
    if i >= size:
        return i - size
    return i


@cuda.jit(device=True)
def _cell(px, py, pz):
    """Trilinear cell of a point: lower corner ``(x0, y0, z0)`` and fractions ``(fx, fy, fz)``."""
    x0 = int(math.floor(px))
    y0 = int(math.floor(py))
    z0 = int(math.floor(pz))
    return x0, y0, z0, px - x0, py - y0, pz - z0


@cuda.jit(device=True)
def _half_cell(px, py, pz):
    """:func:`_cell` of the point folded into the half grid (``px >= 0``, ``-p`` when
    ``px < 0``), and whether it was folded (the value is then conjugated)."""
    folded = px < 0.0
    if folded:
        px = -px
        py = -py
        pz = -pz
    x0, y0, z0, fx, fy, fz = _cell(px, py, pz)
    return x0, y0, z0, fx, fy, fz, folded


@cuda.jit(device=True)
def _corner(c, x0, y0, z0, fx, fy, fz):
    """Corner ``c = 4 dz + 2 dy + dx`` (0..7) of a cell: ``(ix, iy, iz, trilinear weight)``."""
    dz = c >> 2
    dy = (c >> 1) & 1
    dx = c & 1
    w = (fz if dz else 1.0 - fz) * (fy if dy else 1.0 - fy) * (fx if dx else 1.0 - fx)
    return x0 + dx, y0 + dy, z0 + dz, w


@cuda.jit
def _slice_sample(vol_ft, rotations, coords, rmax2, out):  # pragma: no cover - device code
    for q in range(cuda.grid(1), out.shape[0] * out.shape[1], cuda.gridsize(1)):
        _slice_sample_at(q, vol_ft, rotations, coords, rmax2, out)


@cuda.jit(device=True)
def _slice_sample_at(q, vol_ft, rotations, coords, rmax2, out):  # pragma: no cover
    """Sample ``q = a m + j``: rotation ``a``, 2D frequency ``j``."""
    m = out.shape[1]
    a = q // m
    j = q - a * m
    P = vol_ft.shape[0]
    H = vol_ft.shape[2]
    kx = coords[j, 0]
    ky = coords[j, 1]
    if kx * kx + ky * ky >= rmax2:
        out[a, j] = 0j
        return
    px = kx * rotations[a, 0, 0] + ky * rotations[a, 1, 0]
    py = kx * rotations[a, 0, 1] + ky * rotations[a, 1, 1]
    pz = kx * rotations[a, 0, 2] + ky * rotations[a, 1, 2]
    x0, y0, z0, fx, fy, fz, conj = _half_cell(px, py, pz)
    re = 0.0
    im = 0.0
    for c in range(8):
        ix, iy, iz, t = _corner(c, x0, y0, z0, fx, fy, fz)
        if ix < H:
            v = vol_ft[_wrap(iz, P), _wrap(iy, P), ix]
            re += t * float(v.real)
            im += t * float(v.imag)
    out[a, j] = complex(re, -im if conj else im)


def fourier_slice_sample(vol_ft, rotations, coords):
    """Sample ``vol_ft`` on the central slices of ``rotations`` (trilinear interpolation).

    ``coords``: ``(m, 2)`` float64 2D frequencies ``(kx, ky)`` in padded units; ``rotations``:
    ``(n, 3, 3)``. Returns ``(n, m)`` complex64. Points with ``|k| >= P/2 - 1`` are 0.
    """
    rotations = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    n, m = rotations.shape[0], coords.shape[0]
    out = np.zeros((n, m), dtype=np.complex64)
    if n == 0 or m == 0:
        return out
    P = vol_ft.shape[0]
    d_vol = rt.to_device(vol_ft)
    d_coords = rt.to_device(coords)
    for s, e in rt.chunk_ranges(n, m * 8 + 72, m):
        d_out = rt.device_empty((e - s, m), np.complex64)
        rt.launch_items(_slice_sample, (e - s) * m, d_vol, rt.to_device(rotations[s:e]),
                        d_coords, (P / 2.0 - 1.0) ** 2, d_out)
        out[s:e] = rt.to_host(d_out)
    return out


@cuda.jit(device=True)
def _plane_point(rot, r, sym_ops, s, v, kx, ky):
    """Component ``v`` of ``L_s E_r^T (kx, ky, 0)``: ``sum_u k_u (E_r L_s^T)[u, v]``."""
    a0 = 0.0
    a1 = 0.0
    for q in range(3):
        a0 += rot[r, 0, q] * sym_ops[s, v, q]
        a1 += rot[r, 1, q] * sym_ops[s, v, q]
    return kx * a0 + ky * a1


@cuda.jit
def _insert(values, kint, rows_img, rows_rot, rows_shift, rows_w, sym_ops, sample_w, num,
            den):  # pragma: no cover - device code
    n = rows_img.shape[0] * sym_ops.shape[0] * kint.shape[0]
    for q in range(cuda.grid(1), n, cuda.gridsize(1)):
        _insert_at(q, values, kint, rows_img, rows_rot, rows_shift, rows_w, sym_ops, sample_w,
                   num, den)


@cuda.jit(device=True)
def _insert_at(q, values, kint, rows_img, rows_rot, rows_shift, rows_w, sym_ops, sample_w, num,
               den):  # pragma: no cover - device code
    """Sample ``q = (r n_sym + s) m + j``: row ``r``, symmetry operator ``s``, sample ``j``."""
    m = kint.shape[0]
    n_sym = sym_ops.shape[0]
    j = q % m
    rs = q // m
    s = rs % n_sym
    r = rs // n_sym
    P = den.shape[0]
    H = den.shape[2]
    kx = kint[j, 0]
    ky = kint[j, 1]
    # the sample re-centred (origin phase), weighted by the row and the density compensation
    sw = float(sample_w[j])
    ang = -2.0 * math.pi * (kx * rows_shift[r, 0] + ky * rows_shift[r, 1]) / P
    c = math.cos(ang)
    sn = math.sin(ang)
    x = values[rows_img[r], j]
    scale = rows_w[r] * sw
    xr = float(x.real)  # float64 arithmetic (the simulator would keep float32)
    xi = float(x.imag)
    vr = (xr * c - xi * sn) * scale
    vi = (xr * sn + xi * c) * scale
    ws = rows_w[r] * sw
    px = _plane_point(rows_rot, r, sym_ops, s, 0, kx, ky)
    py = _plane_point(rows_rot, r, sym_ops, s, 1, kx, ky)
    pz = _plane_point(rows_rot, r, sym_ops, s, 2, kx, ky)
    x0, y0, z0, fx, fy, fz, folded = _half_cell(px, py, pz)
    if folded:
        vi = -vi
    for c in range(8):
        ix, iy, iz, t = _corner(c, x0, y0, z0, fx, fy, fz)
        if ix < H:
            jz = _wrap(iz, P)
            jy = _wrap(iy, P)
            cuda.atomic.add(num, (jz, jy, ix, 0), t * vr)
            cuda.atomic.add(num, (jz, jy, ix, 1), t * vi)
            cuda.atomic.add(den, (jz, jy, ix), t * ws)


def fourier_insert(values, coords, image_index, rotations, shifts, weights, sym_ops, pad_size,
                   sample_weights=None):
    """Weighted trilinear insertion of 2D Fourier samples into a half 3D grid (§3.8.1-3).

    Arguments and results as :func:`cryosnake.kernels.cpu.fourier_insert`: ``values`` ``(n_img,
    m)`` complex at integer padded ``coords`` ``(m, 2)`` (a half plane); per row
    ``image_index``, ``rotations`` ``(n_rows, 3, 3)``, ``shifts`` ``(n_rows, 2)`` (origin, px;
    phase ``exp(-2 pi i k.o / P)``), ``weights`` (rows with ``w <= 0`` skipped); each row is
    inserted once per ``sym_ops`` element; ``sample_weights`` ``(m,)`` multiply num and den.

    Returns ``(num, den)``: ``(P, P, P // 2 + 1)`` complex128 and float64 (``num += w t X``,
    ``den += w t``, negative ``kx`` folded to ``-k``; the ``kx = 0`` plane is not yet
    Hermitian-completed).
    """
    P = int(pad_size)
    H = P // 2 + 1
    coords = np.asarray(coords)
    m = coords.shape[0]
    if sample_weights is None:
        sample_weights = np.ones(m)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    live = np.flatnonzero(weights > 0.0)
    sym_ops = np.asarray(sym_ops, dtype=np.float64).reshape(-1, 3, 3)
    n_sym = sym_ops.shape[0]
    d_num = rt.device_zeros((P, P, H, 2), np.float64)
    d_den = rt.device_zeros((P, P, H), np.float64)
    if len(live) and m and n_sym:
        rows_img = np.asarray(image_index, dtype=np.int64)[live]
        rows_rot = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)[live]
        rows_shift = np.asarray(shifts, dtype=np.float64).reshape(-1, 2)[live]
        rows_w = weights[live]
        d_values = rt.to_device(np.asarray(values))
        d_kint = rt.to_device(np.rint(coords).astype(np.int64))
        d_sym = rt.to_device(sym_ops)
        # float32 density compensation, as the CPU kernel
        d_sw = rt.to_device(np.asarray(sample_weights, dtype=np.float32))
        for s, e in rt.chunk_ranges(len(live), 120, n_sym * m):
            rows = [rt.to_device(a[s:e]) for a in (rows_img, rows_rot, rows_shift, rows_w)]
            # one simulated thread: the simulator's atomics share a lock and convoy
            rt.launch_items(_insert, (e - s) * n_sym * m, d_values, d_kint, *rows, d_sym, d_sw,
                            d_num, d_den, simulated_threads=1)
    num = rt.to_host(d_num).view(np.complex128).reshape(P, P, H)
    return num, rt.to_host(d_den)


@cuda.jit
def _rotate(vol, matrices, shifts, out):  # pragma: no cover - device code
    for q in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        _rotate_at(q, vol, matrices, shifts, out)


@cuda.jit(device=True)
def _rotate_at(q, vol, matrices, shifts, out):  # pragma: no cover - device code
    """Output voxel ``q`` (flat index into ``out[b, k, i, j]``)."""
    _n, nz, ny, nx = out.shape
    per = nz * ny * nx
    b = q // per
    rem = q - b * per
    k = rem // (ny * nx)
    rem -= k * ny * nx
    i = rem // nx
    j = rem - i * nx
    cz = nz // 2
    cy = ny // 2
    cx = nx // 2
    z = k - cz - shifts[b, 2]
    y = i - cy - shifts[b, 1]
    x = j - cx - shifts[b, 0]
    sx = matrices[b, 0, 0] * x + matrices[b, 0, 1] * y + matrices[b, 0, 2] * z + cx
    sy = matrices[b, 1, 0] * x + matrices[b, 1, 1] * y + matrices[b, 1, 2] * z + cy
    sz = matrices[b, 2, 0] * x + matrices[b, 2, 1] * y + matrices[b, 2, 2] * z + cz
    x0, y0, z0, fx, fy, fz = _cell(sx, sy, sz)
    acc = 0.0
    for c in range(8):
        xx, yy, zz, t = _corner(c, x0, y0, z0, fx, fy, fz)
        if 0 <= xx < nx and 0 <= yy < ny and 0 <= zz < nz:
            acc += t * float(vol[zz, yy, xx])
    out[b, k, i, j] = acc


def rotate_volume_batch(vol, matrices, shifts):
    """:func:`rotate_volume` for many ``(matrix, shift)`` pairs: ``(n, Z, Y, X)`` float32."""
    vol = np.asarray(vol)
    matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
    shifts = np.asarray(shifts, dtype=np.float64).reshape(-1, 3)
    n = matrices.shape[0]
    out = np.zeros((n,) + vol.shape, dtype=np.float32)
    per = int(vol.size)
    if n == 0 or per == 0:
        return out
    d_vol = rt.to_device(vol)
    for s, e in rt.chunk_ranges(n, per * 4 + 96, per):
        d_out = rt.device_empty((e - s,) + vol.shape, np.float32)
        rt.launch_items(_rotate, (e - s) * per, d_vol, rt.to_device(matrices[s:e]),
                        rt.to_device(shifts[s:e]), d_out)
        out[s:e] = rt.to_host(d_out)
    return out


def rotate_volume(vol, matrix, shift):
    """Trilinear resampling ``out(x) = vol(M (x - c - shift) + c)`` (zero outside).

    ``x`` are voxel positions ``(x, y, z)``, ``c = N // 2``; ``matrix`` ``(3, 3)``, ``shift``
    ``(3,)`` as ``(sx, sy, sz)`` voxels. ``vol`` is ``[z, y, x]``; returns float32.
    """
    return rotate_volume_batch(np.asarray(vol, dtype=np.float32),
                               np.asarray(matrix, np.float64)[None],
                               np.asarray(shift, np.float64)[None])[0]
