"""CPU kernels: gallery alignment for Reconstruct Significant (spec ``algorithms.md`` §3.6).

The rotational correlation of an image ``J`` (already shifted) with a gallery slice ``P`` sampled
on the same polar rings is a trigonometric polynomial of the in-plane angle ``psi``:

    c(psi) = sum_m a_m Re(C_m exp(-i m psi)),   C_m = sum_r w_r conj(FP_{r,m}) FJ_{r,m},

(``FP``, ``FJ``: FFTs along the ring angle; ``a_0 = 1``, ``a_m = 2`` for ``0 < m < M``, ``a_M = 1``
when ``M = n_phi / 2``). The coefficients of all image x shift x gallery pairs come from one
batched matrix product (done by the caller); the kernels here refine the peaks per pair:
Newton steps on the polynomial from a coarse grid maximum, then a quadratic fit over a 3 x 3
grid of candidate shifts.

Layouts: ``C``/``D``: ``(n_m, n_img * n_shift, n_dir)`` complex64 with the shift index
``t = ty * side + tx`` (``side = 3``) fastest within an image; ``coarse``: ``(n_c, n_img,
n_dir)`` float32 samples of ``c`` at ``psi_j = 2 pi j / n_c`` for the central shift.
"""

from __future__ import annotations

import contextlib
import ctypes
import math

import numpy as np
from numba import njit, prange

__all__ = [
    "refine_rotational_peaks",
    "blas_single_thread",
]

_OPENBLAS_NAMES = (
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
)


def _openblas_handles():
    """(get, set) function pairs of every OpenBLAS loaded in this process (Linux)."""
    handles = []
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({ln.split()[-1] for ln in fh if "openblas" in ln.lower()
                            and ln.split()[-1].startswith("/")})
    except OSError:
        return handles
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get, set_ in _OPENBLAS_NAMES:
            if hasattr(lib, get) and hasattr(lib, set_):
                handles.append((getattr(lib, get), getattr(lib, set_)))
                break
    return handles


@contextlib.contextmanager
def blas_single_thread():
    """Run the block with one BLAS thread.

    The gallery products are many small complex GEMMs interleaved with numba parallel kernels and
    threaded FFTs; OpenBLAS's own spinning threads then fight numba's for the cores (measured 6x
    slower on 2 cores). Uses ``threadpoolctl`` when installed, else OpenBLAS's C API via ctypes;
    a no-op when neither is found.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        return
    handles = _openblas_handles()
    old = [get() for get, _ in handles]
    for _, set_ in handles:
        set_(1)
    try:
        yield
    finally:
        for (_, set_), n in zip(handles, old, strict=True):
            set_(max(1, int(n)))


@njit(cache=True, parallel=True)
def refine_rotational_peaks(C, D, coarse, side, n_phi, newton_steps):
    """Per image x direction: best ``psi`` (radians) and sub-grid shift offset, with values.

    ``coarse`` ``(n_c, n_img, n_dir)``: ``c`` on a coarse ``psi`` grid for the central shift
    of the grid. The maximum is refined by ``newton_steps`` Newton steps on the exact
    polynomial at the central shift, all shifts are evaluated there, and when another shift is
    better the Newton steps are repeated at that shift before a final evaluation.

    Returns ``(psi, dx, dy, cval, dval)``, each ``(n_img, n_dir)`` float64: ``dx, dy`` are the
    shift-grid offsets (grid units, in [-1.5, 1.5], the grid centre is 0); ``cval`` the
    interpolated maximum of ``c`` (times ``1 / n_phi``: the plain sum over ring samples);
    ``dval`` the same quadratic interpolation of the polynomial of ``D`` (pass an array with
    ``n_m = 0`` to skip it).
    """
    n_m = C.shape[0]
    n_dir = C.shape[2]
    n_shift = side * side
    n_img = C.shape[1] // n_shift
    n_c = coarse.shape[0]
    use_d = D.shape[0] > 0
    half = n_phi // 2
    step_c = 2.0 * math.pi / n_c
    centre = n_shift // 2
    psi_out = np.zeros((n_img, n_dir))
    dx_out = np.zeros((n_img, n_dir))
    dy_out = np.zeros((n_img, n_dir))
    c_out = np.zeros((n_img, n_dir))
    d_out = np.zeros((n_img, n_dir))
    am = np.empty(n_m)
    for m in range(n_m):
        am[m] = 1.0 if (m == 0 or m == half) else 2.0
    for i in prange(n_img):
        base = i * n_shift
        best = np.full(n_dir, -np.inf)
        psi = np.zeros(n_dir)
        for j in range(n_c):
            for d in range(n_dir):
                v = coarse[j, i, d]
                if v > best[d]:
                    best[d] = v
                    psi[d] = j * step_c
        tsel = np.full(n_dir, centre, dtype=np.int64)
        _newton(C, base, tsel, psi, am, newton_steps, step_c)
        vals = np.zeros((n_shift, n_dir))
        dvals = np.zeros((n_shift, n_dir))
        _evaluate(C, D, base, psi, am, vals, dvals, False)
        moved = False
        for d in range(n_dir):
            tb = 0
            for t in range(1, n_shift):
                if vals[t, d] > vals[tb, d]:
                    tb = t
            if tb != centre:
                moved = True
            tsel[d] = tb
        if moved:
            _newton(C, base, tsel, psi, am, max(1, newton_steps - 1), step_c)
        _evaluate(C, D, base, psi, am, vals, dvals, use_d)
        for d in range(n_dir):
            x, y, v, dv = _quadratic_peak(vals[:, d], dvals[:, d], side)
            psi_out[i, d] = psi[d] % (2.0 * math.pi)
            dx_out[i, d] = x
            dy_out[i, d] = y
            c_out[i, d] = v / n_phi
            d_out[i, d] = dv / n_phi
    return psi_out, dx_out, dy_out, c_out, d_out


@njit(inline="always", cache=True)
def _newton(C, base, tsel, psi, am, steps, step_c):
    """Newton steps on ``c(psi)`` per direction (row ``base + tsel[d]``), bounded steps."""
    n_m = C.shape[0]
    n_dir = C.shape[2]
    zr = np.empty(n_dir)
    zi = np.empty(n_dir)
    ur = np.empty(n_dir)
    ui = np.empty(n_dir)
    g1 = np.empty(n_dir)
    g2 = np.empty(n_dir)
    for _ in range(steps):
        for d in range(n_dir):
            zr[d] = 1.0
            zi[d] = 0.0
            ur[d] = math.cos(psi[d])
            ui[d] = -math.sin(psi[d])
            g1[d] = 0.0
            g2[d] = 0.0
        for m in range(n_m):
            a1 = am[m] * m
            a2 = a1 * m
            for d in range(n_dir):
                cm = C[m, base + tsel[d], d]
                vr = cm.real * zr[d] - cm.imag * zi[d]
                vi = cm.real * zi[d] + cm.imag * zr[d]
                g1[d] += a1 * vi
                g2[d] -= a2 * vr
                nr = zr[d] * ur[d] - zi[d] * ui[d]
                zi[d] = zr[d] * ui[d] + zi[d] * ur[d]
                zr[d] = nr
        for d in range(n_dir):
            if g2[d] < 0.0:
                delta = -g1[d] / g2[d]
            else:
                delta = 0.25 * step_c if g1[d] > 0 else -0.25 * step_c
            if delta > 0.5 * step_c:
                delta = 0.5 * step_c
            elif delta < -0.5 * step_c:
                delta = -0.5 * step_c
            psi[d] += delta


@njit(inline="always", cache=True)
def _evaluate(C, D, base, psi, am, vals, dvals, use_d):
    """``vals[t, d] = c_t(psi_d)`` for every shift ``t`` (and ``D``'s when ``use_d``)."""
    n_m = C.shape[0]
    n_dir = C.shape[2]
    n_shift = vals.shape[0]
    vals[:] = 0.0
    dvals[:] = 0.0
    zr = np.ones(n_dir)
    zi = np.zeros(n_dir)
    ur = np.empty(n_dir)
    ui = np.empty(n_dir)
    for d in range(n_dir):
        ur[d] = math.cos(psi[d])
        ui[d] = -math.sin(psi[d])
    for m in range(n_m):
        a = am[m]
        for t in range(n_shift):
            row = base + t
            for d in range(n_dir):
                cm = C[m, row, d]
                vals[t, d] += a * (cm.real * zr[d] - cm.imag * zi[d])
            if use_d:
                for d in range(n_dir):
                    dm = D[m, row, d]
                    dvals[t, d] += a * (dm.real * zr[d] - dm.imag * zi[d])
        for d in range(n_dir):
            nr = zr[d] * ur[d] - zi[d] * ui[d]
            zi[d] = zr[d] * ui[d] + zi[d] * ur[d]
            zr[d] = nr


@njit(inline="always", cache=True)
def _quadratic_coefs(s0, sx, sy, sxy, sxx, syy):  # pragma: no cover - numba
    """``(a, b, c, d, e, f)`` of ``a + b x + c y + d x^2 + e x y + f y^2``, the least-squares
    fit on the 3 x 3 grid (positions -1, 0, 1) from the moments ``sum v``, ``sum x v``,
    ``sum y v``, ``sum x y v``, ``sum x^2 v``, ``sum y^2 v`` (closed form)."""
    b = sx / 6.0
    c = sy / 6.0
    e = sxy / 4.0
    d = sxx / 2.0 - s0 / 3.0
    f = syy / 2.0 - s0 / 3.0
    a = (5.0 * s0 - 3.0 * sxx - 3.0 * syy) / 9.0
    return a, b, c, d, e, f


@njit(inline="always", cache=True)
def _quadratic_at(coefs, x, y):  # pragma: no cover - numba
    """The quadratic of :func:`_quadratic_coefs` ``coefs`` at ``(x, y)``."""
    a, b, c, d, e, f = coefs
    return a + b * x + c * y + d * x * x + e * x * y + f * y * y


@njit(inline="always", cache=True)
def _quadratic_peak(v, dv, side):
    """Least-squares quadratic on a 3 x 3 grid (positions -1, 0, 1): peak and values there.

    Falls back to the best grid point when the fit has no maximum; the peak is clamped to
    [-1.5, 1.5]. For ``side != 3`` the best grid point is returned.
    """
    n = side * side
    tb = 0
    for t in range(1, n):
        if v[t] > v[tb]:
            tb = t
    half = side // 2
    bx = float(tb % side - half)
    by = float(tb // side - half)
    if side != 3:
        return bx, by, v[tb], dv[tb]
    s0 = 0.0
    sx = 0.0
    sy = 0.0
    sxy = 0.0
    sxx = 0.0
    syy = 0.0
    t0 = 0.0
    tx_ = 0.0
    ty_ = 0.0
    txy = 0.0
    txx = 0.0
    tyy = 0.0
    for t in range(9):
        x = float(t % 3 - 1)
        y = float(t // 3 - 1)
        s0 += v[t]
        sx += x * v[t]
        sy += y * v[t]
        sxy += x * y * v[t]
        sxx += x * x * v[t]
        syy += y * y * v[t]
        t0 += dv[t]
        tx_ += x * dv[t]
        ty_ += y * dv[t]
        txy += x * y * dv[t]
        txx += x * x * dv[t]
        tyy += y * y * dv[t]
    # one pass for both fits (the values and their derivatives)
    coefs = _quadratic_coefs(s0, sx, sy, sxy, sxx, syy)
    _, b, c, d, e, f = coefs
    det = 4.0 * d * f - e * e
    if d < 0.0 and det > 0.0:
        x = (-2.0 * f * b + e * c) / det
        y = (-2.0 * d * c + e * b) / det
        if abs(x) > 1.5 or abs(y) > 1.5:
            x = min(1.5, max(-1.5, x))
            y = min(1.5, max(-1.5, y))
    else:
        x = bx
        y = by
    val = _quadratic_at(coefs, x, y)
    if val < v[tb]:
        x = bx
        y = by
        val = v[tb]
        dval = dv[tb]
    else:
        dval = _quadratic_at(_quadratic_coefs(t0, tx_, ty_, txy, txx, tyy), x, y)
    return x, y, val, dval
