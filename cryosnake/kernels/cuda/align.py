"""CUDA twins of ``kernels.cpu.align``: peak refinement of the gallery alignment (spec §3.6).

Layouts and the polynomial ``c(psi) = sum_m a_m Re(C_m exp(-i m psi))`` are the CPU module's:
``C``/``D`` ``(n_m, n_img * side^2, n_dir)`` complex64 (shift index ``t = ty * side + tx``
fastest within an image), ``coarse`` ``(n_c, n_img, n_dir)`` float32.

Launch geometry and chunking: every (image, direction) pair is one thread, directions fastest
(the loads of ``C[m, row, :]`` are coalesced), in two launches per chunk of images: (1) coarse
maximum, Newton steps at the central shift, best of the ``side^2`` shifts; (2) when any
direction of the image moved off the centre (a per-image flag, written by the first launch:
the CPU's rule), Newton steps again at the chosen shift, then the final evaluation and the
quadratic fit. Each thread evaluates the polynomial shift by shift in the CPU's order
(``m`` ascending, the same ``exp(-i m psi)`` recurrence, float64), so sums agree to rounding.
Images are chunked so that a chunk's ``C`` (and ``D``) rows, ``coarse`` samples and outputs
fit the device budget.

``blas_single_thread`` is the CPU helper (host-only, no numerical work), re-exported.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cryosnake.kernels.cpu.align import blas_single_thread

from . import runtime as rt

__all__ = [
    "refine_rotational_peaks",
    "blas_single_thread",
]


@cuda.jit(device=True)
def _weight(m, half):
    """``a_m``: 1 for ``m = 0`` and ``m = n_phi / 2``, else 2."""
    return 1.0 if (m == 0 or m == half) else 2.0


@cuda.jit(device=True)
def _clamp(x, bound):
    """``x`` clamped to ``[-bound, bound]``."""
    if x > bound:
        return bound
    if x < -bound:
        return -bound
    return x


@cuda.jit(device=True)
def _poly(C, row, d, psi, half):  # pragma: no cover - device code
    """``sum_m a_m Re(C[m, row, d] exp(-i m psi))`` by the CPU's recurrence."""
    zr = 1.0
    zi = 0.0
    ur = math.cos(psi)
    ui = -math.sin(psi)
    acc = 0.0
    for m in range(C.shape[0]):
        cm = C[m, row, d]
        cr = float(cm.real)  # float64 arithmetic (the simulator would keep float32)
        ci = float(cm.imag)
        acc += _weight(m, half) * (cr * zr - ci * zi)
        nr = zr * ur - zi * ui
        zi = zr * ui + zi * ur
        zr = nr
    return acc


@cuda.jit(device=True)
def _newton(C, row, d, psi, half, steps, step_c):  # pragma: no cover - device code
    """``steps`` Newton steps on ``c(psi)`` of row ``row``, bounded by ``step_c / 2``."""
    for _ in range(steps):
        zr = 1.0
        zi = 0.0
        ur = math.cos(psi)
        ui = -math.sin(psi)
        g1 = 0.0
        g2 = 0.0
        for m in range(C.shape[0]):
            a1 = _weight(m, half) * m
            a2 = a1 * m
            cm = C[m, row, d]
            cr = float(cm.real)
            ci = float(cm.imag)
            vr = cr * zr - ci * zi
            vi = cr * zi + ci * zr
            g1 += a1 * vi
            g2 -= a2 * vr
            nr = zr * ur - zi * ui
            zi = zr * ui + zi * ur
            zr = nr
        if g2 < 0.0:
            delta = -g1 / g2
        else:
            delta = 0.25 * step_c if g1 > 0 else -0.25 * step_c
        if delta > 0.5 * step_c:
            delta = 0.5 * step_c
        elif delta < -0.5 * step_c:
            delta = -0.5 * step_c
        psi += delta
    return psi


@cuda.jit
def _coarse_newton(C, coarse, side, half, steps, step_c, psi_out, tsel,
                   moved):  # pragma: no cover - device code
    """Per (image, direction): coarse maximum, Newton at the centre, best shift."""
    n_img, n_dir = psi_out.shape
    n_shift = side * side
    centre = n_shift // 2
    for q in range(cuda.grid(1), n_img * n_dir, cuda.gridsize(1)):
        i = q // n_dir
        d = q - i * n_dir
        best = -math.inf
        psi = 0.0
        for j in range(coarse.shape[0]):
            v = coarse[j, i, d]
            if v > best:
                best = v
                psi = j * step_c
        base = i * n_shift
        psi = _newton(C, base + centre, d, psi, half, steps, step_c)
        tb = 0
        vb = _poly(C, base, d, psi, half)
        for t in range(1, n_shift):
            v = _poly(C, base + t, d, psi, half)
            if v > vb:
                vb = v
                tb = t
        psi_out[i, d] = psi
        tsel[i, d] = tb
        if tb != centre:
            moved[i] = 1


@cuda.jit
def _refine(C, D, use_d, side, half, steps, step_c, n_phi, moved, tsel, psi_io, dx_out,
            dy_out, c_out, d_out):  # pragma: no cover - device code
    """Per (image, direction): Newton again if the image moved, final values, 3 x 3 fit."""
    n_img, n_dir = psi_io.shape
    n_shift = side * side
    for q in range(cuda.grid(1), n_img * n_dir, cuda.gridsize(1)):
        i = q // n_dir
        d = q - i * n_dir
        base = i * n_shift
        psi = psi_io[i, d]
        if moved[i]:
            psi = _newton(C, base + tsel[i, d], d, psi, half, steps - 1 if steps > 1 else 1,
                          step_c)
        _final(C, D, use_d, side, half, base, i, d, psi, n_phi, psi_io, dx_out, dy_out, c_out,
               d_out)


@cuda.jit(device=True)
def _add_moments(mo, t, v):
    """``mo`` plus sample ``v`` at shift ``t`` of the 3 x 3 grid (``x, y`` in -1..1): the
    moments ``sum v (1, x, y, x y, x^2, y^2)``."""
    x = float(t % 3 - 1)
    y = float(t // 3 - 1)
    return (mo[0] + v, mo[1] + x * v, mo[2] + y * v, mo[3] + x * y * v, mo[4] + x * x * v,
            mo[5] + y * y * v)


@cuda.jit(device=True)
def _fit(mo):
    """Closed-form least-squares quadratic ``(a, b, c, d, e, f)`` of ``a + b x + c y + d x^2 +
    e x y + f y^2`` on the 3 x 3 grid, from :func:`_add_moments` moments."""
    s0, sx, sy, sxy, sxx, syy = mo
    return ((5.0 * s0 - 3.0 * sxx - 3.0 * syy) / 9.0, sx / 6.0, sy / 6.0,
            sxx / 2.0 - s0 / 3.0, sxy / 4.0, syy / 2.0 - s0 / 3.0)


@cuda.jit(device=True)
def _at(q, x, y):
    """The quadratic ``q`` of :func:`_fit` at ``(x, y)``."""
    return q[0] + q[1] * x + q[2] * y + q[3] * x * x + q[4] * x * y + q[5] * y * y


@cuda.jit(device=True)
def _final(C, D, use_d, side, half, base, i, d, psi, n_phi, psi_io, dx_out, dy_out, c_out,
           d_out):  # pragma: no cover - device code
    """Evaluate every shift at ``psi``; the least-squares quadratic of the 3 x 3 grid (moments
    summed in shift order, as the CPU) gives the peak; the best grid point when it has none."""
    tb = 0
    vb = -math.inf
    dvb = 0.0
    mc = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    md = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    for t in range(side * side):
        v = _poly(C, base + t, d, psi, half)
        dv = _poly(D, base + t, d, psi, half) if use_d else 0.0
        if t == 0 or v > vb:
            tb = t
            vb = v
            dvb = dv
        mc = _add_moments(mc, t, v)
        md = _add_moments(md, t, dv)
    px = float(tb % side - side // 2)
    py = float(tb // side - side // 2)
    val = vb
    dval = dvb
    if side == 3:
        q = _fit(mc)
        det = 4.0 * q[3] * q[5] - q[4] * q[4]
        if q[3] < 0.0 and det > 0.0:
            px = _clamp((-2.0 * q[5] * q[1] + q[4] * q[2]) / det, 1.5)
            py = _clamp((-2.0 * q[3] * q[2] + q[4] * q[1]) / det, 1.5)
        val = _at(q, px, py)
        if val < vb:
            px = float(tb % 3 - 1)
            py = float(tb // 3 - 1)
            val = vb
        else:
            dval = _at(_fit(md), px, py)
    two_pi = 2.0 * math.pi
    r = math.fmod(psi, two_pi)
    if r < 0.0:
        r += two_pi
    psi_io[i, d] = r
    dx_out[i, d] = px
    dy_out[i, d] = py
    c_out[i, d] = val / n_phi
    d_out[i, d] = dval / n_phi


def refine_rotational_peaks(C, D, coarse, side, n_phi, newton_steps):
    """Per image x direction: best ``psi`` (radians) and sub-grid shift offset, with values.

    As :func:`cryosnake.kernels.cpu.refine_rotational_peaks`: ``C``, ``D`` (``n_m = 0``: no
    ``D``) ``(n_m, n_img * side^2, n_dir)``, ``coarse`` ``(n_c, n_img, n_dir)``. Returns
    ``(psi, dx, dy, cval, dval)``, each ``(n_img, n_dir)`` float64 (``dx, dy`` in shift-grid
    units, ``cval``/``dval`` times ``1 / n_phi``).
    """
    side = int(side)
    n_shift = side * side
    n_m, rows, n_dir = C.shape
    n_img = rows // n_shift
    use_d = D.shape[0] > 0
    n_c = coarse.shape[0]
    outs = [np.zeros((n_img, n_dir)) for _ in range(5)]
    if n_img == 0 or n_dir == 0:
        return tuple(outs)
    half = int(n_phi) // 2
    step_c = 2.0 * math.pi / n_c
    per_image = n_shift * n_dir * n_m * 8 * (2 if use_d else 1) + n_c * n_dir * 4 + n_dir * 52
    for a, b in rt.chunk_ranges(n_img, per_image, n_dir):
        rows_ab = slice(a * n_shift, b * n_shift)
        d_c = rt.to_device(C[:, rows_ab])
        d_d = rt.to_device(D[:, rows_ab]) if use_d else d_c
        d_coarse = rt.to_device(coarse[:, a:b])
        m = b - a
        dev = [rt.device_empty((m, n_dir), np.float64) for _ in range(5)]
        tsel = rt.device_empty((m, n_dir), np.int64)
        moved = rt.device_zeros(m, np.int32)
        rt.launch_items(_coarse_newton, m * n_dir, d_c, d_coarse, side, half,
                        int(newton_steps), step_c, dev[0], tsel, moved)
        rt.launch_items(_refine, m * n_dir, d_c, d_d, use_d, side, half, int(newton_steps),
                        step_c, float(n_phi), moved, tsel, *dev)
        for out, d in zip(outs, dev, strict=True):
            out[a:b] = rt.to_host(d)
    return tuple(outs)
