"""Image-to-gallery alignment: in-plane rotation + shift, ``cc`` and IMED (spec §3.6).

For every image ``I`` and gallery direction ``d`` we look for the in-plane angle ``psi`` and the
origin ``o`` (RELION sign, pixels) such that the image is the projection at
``(rot_d, tilt_d, psi)`` moved by ``-o``; ``cc`` is the (band-limited) Pearson correlation at the
optimum and IMED the image Euclidean distance of §3.6.2.

Everything is computed in Fourier space on polar rings ``r = 1 .. R`` (cycles per box, ``R =
floor(0.25 N)``: the gallery is low-passed at 0.25 digital, §3.5, so nothing above it enters the
correlation) and ``n_phi`` angles. The image rings are exact DFT values at the ring points (one
matrix product), the gallery rings come straight from the 3D transform (no real-space
gallery). A rotation is a cyclic shift along the ring, a shift is a phase factor.

Search (batched, no Python loop over image x direction pairs):

1. *Global centre per image* (shift-invariant start): the rotational correlation of the power
   spectra ``|I^|^2`` and ``|P^_d|^2`` (blind to shifts; 180-degree ambiguity) ranks the
   directions; for each image the ``top_k`` best (d, psi) and (d, psi + 180) are projected on the
   Cartesian grid and an FFT cross-correlation over the whole box (or ``|o| <= max_shift``)
   gives a shift; the best one is the image's centre ``o_i``.
2. *All pairs* (``rounds`` times): for a 3 x 3 grid of shifts ``o_i + h (a, b)`` (``h = 1`` px)
   the Fourier coefficients along the ring angle of all image x shift x direction
   correlations come from one batched complex matrix product per image block (kernel
   ``batched_matmul``, the gallery operand uploaded once per call); the maximum over
   a coarse ``psi`` grid (5.6 degrees, central shift) is refined by Newton steps on the exact
   trigonometric polynomial, re-refined at the best of the 9 shifts when that is not the
   centre, and the shift comes from a quadratic fit over the 3 x 3 grid (kernel
   ``refine_rotational_peaks``). Then
   ``o_i`` moves to the shift of the image's best direction and images whose centre moved by
   more than 0.5 px are searched again.

Differences from Xmipp's ``alignImages`` (documented choice): the shift of a pair is searched
within about 1.5 px of the image's centre instead of over the whole box for every direction, so a
wrong direction cannot borrow a far-away shift; ``cc`` is the Pearson correlation over the band
``0 < |k| <= 0.25`` (the same band the gallery has), with the image's energy in that band;
IMED is evaluated in Fourier space over the whole periodic box (``sum_k G^(k) |P^ - A^|^2`` with
``G^`` the transform of the unit Gaussian, whose out-of-band part is the image's own and does not
depend on the direction), instead of over the inscribed circle less 3 px.

With ``max_shift > 0`` a pair whose shift exceeds it in x or y gets ``cc / 3`` and ``3 imed`` and
is flagged not eligible (§3.6.1).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import scipy.fft

from cryosnake.kernels import cpu
from cryosnake.volume3d.projector import VolumeFT, fft_workers, project, project_polar

__all__ = [
    "PolarGrid",
    "make_polar_grid",
    "images_polar",
    "AlignmentResult",
    "align_to_gallery",
]

GALLERY_LOWPASS = 0.25


@dataclass
class PolarGrid:
    """Polar sampling of image transforms: rings ``radii`` (cycles per box) x ``n_phi`` angles."""

    n: int
    radii: np.ndarray  # (R,)
    n_phi: int

    @property
    def ring_weights(self) -> np.ndarray:
        """Quadrature weights ``2 pi r / n_phi`` (the ring sums approximate Cartesian sums)."""
        return 2.0 * np.pi * self.radii / self.n_phi

    @property
    def gauss(self) -> np.ndarray:
        """Transform of the unit Gaussian of IMED, ``exp(-2 pi^2 r^2 / N^2)``, per ring."""
        return np.exp(-2.0 * np.pi ** 2 * (self.radii / self.n) ** 2)

    @property
    def coords(self) -> np.ndarray:
        """``(R * n_phi, 2)`` ``(kx, ky)`` of the ring points (ring-major)."""
        phi = 2.0 * np.pi * np.arange(self.n_phi) / self.n_phi
        return np.stack([(self.radii[:, None] * np.cos(phi)).ravel(),
                         (self.radii[:, None] * np.sin(phi)).ravel()], axis=1)


def make_polar_grid(n: int, lowpass: float = GALLERY_LOWPASS, n_phi: int | None = None
                    ) -> PolarGrid:
    """Rings ``1 .. floor(lowpass * n)``; ``n_phi`` = the power of two >= ``2 pi R`` (min 16)."""
    R = max(2, int(np.floor(lowpass * n)))
    if n_phi is None:
        n_phi = max(16, int(2 ** np.ceil(np.log2(2.0 * np.pi * R))))
    return PolarGrid(n=n, radii=np.arange(1, R + 1, dtype=np.float64), n_phi=int(n_phi))


def images_polar(images, grid: PolarGrid, block: int = 32, backend=cpu) -> np.ndarray:
    """Exact DFT of ``images`` (``[n, N, N]``, centre ``N // 2``) at the ring points.

    ``I^(k) = sum_{y, x} I[y, x] exp(-2 pi i (kx (x - c) + ky (y - c)) / N)``; returns
    ``(n, R, n_phi)`` complex64. Separable: a matrix product over x (``block`` images per
    ``batched_matmul`` of the backend), then a sum over y.
    """
    images = np.asarray(images, dtype=np.float32)
    n_img, n, _ = images.shape
    c = n // 2
    k = grid.coords
    pos = np.arange(n) - c
    ex = np.exp(-2j * np.pi * np.outer(pos, k[:, 0]) / n).astype(np.complex64)  # (x, p)
    ey = np.exp(-2j * np.pi * np.outer(pos, k[:, 1]) / n).astype(np.complex64)  # (y, p)
    out = np.empty((n_img, len(k)), dtype=np.complex64)
    ex = backend.device_operand(ex)  # reused by every block
    for s in range(0, n_img, block):
        blk = images[s:s + block].astype(np.complex64)
        rows = backend.batched_matmul(blk, ex)  # (b, y, p)
        out[s:s + block] = np.einsum("byp,yp->bp", rows, ey)
    return out.reshape(n_img, len(grid.radii), grid.n_phi)


def _flush(x: np.ndarray, rel: float = 1e-12) -> np.ndarray:
    """Zero components below ``rel * max`` in place (denormals make BLAS 10-50x slower)."""
    v = x.view(x.real.dtype) if np.iscomplexobj(x) else x
    a = np.abs(v)
    v[a < rel * (a.max() if a.size else 0.0)] = 0
    return x


def _shift_phase(grid: PolarGrid, ox, oy) -> np.ndarray:
    """``exp(-2 pi i (kx ox + ky oy) / N)`` on the rings for origins ``(ox, oy)`` (broadcast)."""
    k = grid.coords
    ox = np.asarray(ox, dtype=np.float64)[..., None]
    oy = np.asarray(oy, dtype=np.float64)[..., None]
    ph = np.exp(-2j * np.pi * (k[:, 0] * ox + k[:, 1] * oy) / grid.n).astype(np.complex64)
    return ph.reshape(ph.shape[:-1] + (len(grid.radii), grid.n_phi))


@dataclass
class AlignmentResult:
    """Per image x direction alignment (arrays ``(n_img, n_dir)``)."""

    cc: np.ndarray
    psi: np.ndarray  # degrees, [0, 360)
    shift_x: np.ndarray  # origin x, pixels (RELION sign)
    shift_y: np.ndarray
    imed: np.ndarray | None
    eligible: np.ndarray  # bool: shift within max_shift


def _global_centres(images, img_ps, gal_ps, vft: VolumeFT, rot, tilt, grid: PolarGrid,
                    max_shift: float, top_k: int, backend) -> np.ndarray:
    """Stage 1: per-image origin from power-spectrum rotation + FFT translation search."""
    n_img, n = images.shape[0], grid.n
    w = grid.ring_weights[:, None]
    M = grid.n_phi // 4  # power spectra have period pi: even m only
    # m = 0 (the radial profile, the same for every direction) is left out
    Fi = scipy.fft.fft(img_ps.astype(np.complex64), axis=-1)[..., 1:M + 1] * w
    Fg = scipy.fft.fft(gal_ps.astype(np.complex64), axis=-1)[..., 1:M + 1]
    A = _flush(np.ascontiguousarray(Fi.transpose(2, 0, 1)).astype(np.complex64))  # (M, n_img, R)
    B = _flush(np.ascontiguousarray(np.conj(Fg).transpose(2, 1, 0)))  # (M, R, n_dir)
    C = backend.batched_matmul(A, B)  # (M, n_img, n_dir)
    X = np.zeros((M + 1,) + C.shape[1:], dtype=np.complex64)
    X[1:] = np.conj(C)
    n_c = 4 * M
    coarse = scipy.fft.irfft(X, n=n_c, axis=0, workers=fft_workers())
    best = coarse.max(axis=0)
    arg = coarse.argmax(axis=0)
    e_i = np.sqrt(np.sum(w * np.abs(Fi / w) ** 2, axis=(1, 2)) + 1e-30)
    e_g = np.sqrt(np.sum(w * np.abs(Fg) ** 2, axis=(1, 2)) + 1e-30)
    score = best / (e_i[:, None] * e_g[None, :])
    k = min(top_k, score.shape[1])
    top = np.argsort(-score, axis=1)[:, :k]  # (n_img, k)
    psi = np.rad2deg(2.0 * np.pi * np.take_along_axis(arg, top, axis=1) / n_c)
    img_idx = np.repeat(np.arange(n_img), 2 * k)
    dirs = np.repeat(top, 2, axis=1).ravel()
    psis = np.stack([psi, psi + 180.0], axis=2).ravel()
    refs = project(vft, rot[dirs], tilt[dirs], psis, lowpass=GALLERY_LOWPASS, backend=backend)
    workers = fft_workers()
    Fr = scipy.fft.rfft2(np.fft.ifftshift(refs, axes=(1, 2)), workers=workers)
    Fimg = scipy.fft.rfft2(np.fft.ifftshift(images, axes=(1, 2)), workers=workers)
    xc = scipy.fft.irfft2(np.conj(Fr) * Fimg[img_idx], s=(n, n), workers=workers)
    xc /= np.sqrt(np.sum(refs.astype(np.float64) ** 2, axis=(1, 2)) + 1e-30)[:, None, None]
    # xc[s] peaks at s = -o (wrapped)
    s = np.fft.fftfreq(n, 1.0 / n)
    lim = n // 2 - 1 if max_shift is None or max_shift < 0 else min(max_shift, n // 2 - 1)
    allowed = (np.abs(s)[:, None] <= lim) & (np.abs(s)[None, :] <= lim)
    xc_m = np.where(allowed[None], xc, -np.inf).reshape(len(xc), -1)
    flat = xc_m.argmax(axis=1)
    peak = xc_m[np.arange(len(xc)), flat].reshape(n_img, 2 * k)
    iy, ix = np.unravel_index(flat, (n, n))
    oy = -_parabolic(xc, iy, ix, axis=0)
    ox = -_parabolic(xc, iy, ix, axis=1)
    pick = peak.argmax(axis=1)
    sel = np.arange(n_img) * 2 * k + pick
    centre = np.stack([ox[sel], oy[sel]], axis=1)
    if max_shift is not None and max_shift >= 0:
        centre = np.clip(centre, -max_shift, max_shift)
    return centre


def _parabolic(xc, iy, ix, axis: int) -> np.ndarray:
    """Sub-pixel peak position (wrapped to [-n/2, n/2)) along one axis of cyclic maps."""
    n = xc.shape[1]
    j = np.arange(len(xc))
    if axis == 0:
        vm, v0, vp = xc[j, (iy - 1) % n, ix], xc[j, iy, ix], xc[j, (iy + 1) % n, ix]
        base = iy
    else:
        vm, v0, vp = xc[j, iy, (ix - 1) % n], xc[j, iy, ix], xc[j, iy, (ix + 1) % n]
        base = ix
    den = vm - 2.0 * v0 + vp
    frac = np.where(den < 0, 0.5 * (vm - vp) / np.where(den < 0, den, -1.0), 0.0)
    pos = base + np.clip(frac, -0.5, 0.5)
    return (pos + n / 2) % n - n / 2


def align_to_gallery(images, vft: VolumeFT, rot, tilt, grid: PolarGrid | None = None,
                     max_shift: float = -1.0, imed: bool = True, top_k: int = 4,
                     rounds: int = 2, shift_step: float = 1.0, block: int | None = None,
                     backend=cpu) -> AlignmentResult:
    """Align every image to every gallery direction ``(rot, tilt, psi = 0)`` of ``vft``.

    ``images``: ``[n_img, N, N]``; ``vft``: the prepared volume
    (:func:`cryosnake.volume3d.projector.prepare_volume`); ``rot, tilt``: gallery
    directions (degrees). ``max_shift`` in pixels (-1 = free). ``block`` images are searched
    together (default: as many as fit in about 256 MB of correlation coefficients). Returns an
    :class:`AlignmentResult`.
    """
    limiter = getattr(backend, "blas_single_thread", None)
    with limiter() if limiter is not None else contextlib.nullcontext():
        return _align(images, vft, rot, tilt, grid, max_shift, imed, top_k, rounds, shift_step,
                      block, backend)


def _align(images, vft, rot, tilt, grid, max_shift, imed, top_k, rounds, shift_step, block,
           backend) -> AlignmentResult:
    images = np.asarray(images, dtype=np.float32)
    n_img, n, _ = images.shape
    if vft.n != n:
        raise ValueError(f"volume box {vft.n} does not match image box {n}")
    rot = np.asarray(rot, dtype=np.float64)
    tilt = np.asarray(tilt, dtype=np.float64)
    n_dir = len(rot)
    grid = grid or make_polar_grid(n)
    w = grid.ring_weights
    gauss = grid.gauss
    Ipol = images_polar(images, grid, backend=backend)  # (n_img, R, n_phi)
    Gpol = project_polar(vft, rot, tilt, grid.radii, grid.n_phi, backend=backend)
    # energies over the band (rotation and shift invariant)
    e_img = np.einsum("r,irl->i", w, np.abs(Ipol) ** 2)
    e_gal = np.einsum("r,drl->d", w, np.abs(Gpol) ** 2)
    # stage 1: a centre per image
    centre = _global_centres(images, np.abs(Ipol) ** 2, np.abs(Gpol) ** 2, vft, rot, tilt,
                             grid, max_shift, top_k, backend)
    # stage 2 operands: gallery ring FFTs, weighted and conjugated, (n_m, R, n_dir)
    n_m = grid.n_phi // 2 + 1
    FG = scipy.fft.fft(Gpol, axis=-1)[..., :n_m]
    w32 = w.astype(np.float32)[None, :, None]
    Bc = _flush(np.ascontiguousarray(np.conj(FG * w32).transpose(2, 1, 0)))
    Bd = (_flush(np.ascontiguousarray(np.conj(FG * (w32 * gauss.astype(np.float32)[None, :, None]))
                                      .transpose(2, 1, 0))) if imed else None)
    # handles reused by every block (on the device with the cuda backend)
    Bc = backend.device_operand(Bc)
    Bd = backend.device_operand(Bd) if imed else None
    side = 3
    offs = (np.stack(np.meshgrid(np.arange(side) - 1, np.arange(side) - 1, indexing="ij"),
                     axis=-1).reshape(-1, 2)[:, ::-1] * shift_step)  # t = ty*3 + tx -> (ox, oy)
    if block is None:
        per_image = (2 if imed else 1) * n_m * side * side * n_dir * 8
        block = int(max(1, min(32, 256e6 // per_image)))
    n_c = 64 if grid.n_phi >= 64 else grid.n_phi
    m_c = n_c // 2
    psi = np.zeros((n_img, n_dir))
    sx = np.zeros((n_img, n_dir))
    sy = np.zeros((n_img, n_dir))
    cval = np.zeros((n_img, n_dir))
    dval = np.zeros((n_img, n_dir))
    todo = np.arange(n_img)
    workers = fft_workers()
    empty = np.zeros((0, 1, 1), dtype=np.complex64)
    for rnd in range(max(1, rounds)):
        for s in range(0, len(todo), block):
            idx = todo[s:s + block]
            o = centre[idx][:, None, :] + offs[None]  # (b, 9, 2)
            J = Ipol[idx][:, None] * _shift_phase(grid, o[..., 0], o[..., 1])
            FJ = scipy.fft.fft(J, axis=-1, workers=workers)[..., :n_m]
            FJ = FJ.reshape(len(idx) * side * side, len(grid.radii), n_m)
            A = _flush(np.ascontiguousarray(FJ.transpose(2, 0, 1)))  # (n_m, rows, R)
            A = backend.device_operand(A)  # one upload for C and D
            C = backend.batched_matmul(A, Bc)  # (n_m, rows, n_dir)
            D = backend.batched_matmul(A, Bd) if imed else empty
            X = np.conj(C[:m_c + 1, side * side // 2::side * side])  # central shift only
            coarse = scipy.fft.irfft(X, n=n_c, axis=0, workers=workers)
            p, dx, dy, cv, dv = backend.refine_rotational_peaks(C, D, coarse, side, grid.n_phi, 3)
            psi[idx] = p
            sx[idx] = centre[idx, 0:1] + dx * shift_step
            sy[idx] = centre[idx, 1:2] + dy * shift_step
            cval[idx] = cv
            dval[idx] = dv
        if rnd == rounds - 1:
            break
        cc_now = cval / np.sqrt(e_img[:, None] * e_gal[None, :] + 1e-30)
        b = cc_now.argmax(axis=1)
        new = np.stack([sx[np.arange(n_img), b], sy[np.arange(n_img), b]], axis=1)
        if max_shift is not None and max_shift >= 0:
            new = np.clip(new, -max_shift, max_shift)
        moved = np.hypot(*(new - centre).T) > 0.5 * shift_step
        centre = np.where(moved[:, None], new, centre)
        todo = np.nonzero(moved)[0]
        if len(todo) == 0:
            break
    cc = cval / np.sqrt(e_img[:, None] * e_gal[None, :] + 1e-30)
    imed_val = None
    if imed:
        eg_img = np.einsum("r,irl->i", w * gauss, np.abs(Ipol) ** 2)
        eg_gal = np.einsum("r,drl->d", w * gauss, np.abs(Gpol) ** 2)
        # outside the rings: the image's own energy (the gallery is zero there) and DC
        F = np.fft.fft2(images.astype(np.float64))
        k = np.fft.fftfreq(n, 1.0 / n)
        kr = np.hypot(k[:, None], k[None, :])
        g_cart = np.exp(-2.0 * np.pi ** 2 * (kr / n) ** 2)
        oob = np.sum(np.where(kr > grid.radii[-1] + 0.5, g_cart, 0.0) * np.abs(F) ** 2,
                     axis=(1, 2))
        dc = (vft.total - F[:, 0, 0].real) ** 2
        imed2 = (dc[:, None] + eg_gal[None, :] + eg_img[:, None] - 2.0 * dval
                 + oob[:, None]) / (n * n)
        imed_val = np.sqrt(np.clip(imed2, 0.0, None))
    eligible = np.ones((n_img, n_dir), dtype=bool)
    if max_shift is not None and max_shift > 0:
        eligible = (np.abs(sx) <= max_shift) & (np.abs(sy) <= max_shift)
        cc = np.where(eligible, cc, cc / 3.0)
        if imed_val is not None:
            imed_val = np.where(eligible, imed_val, 3.0 * imed_val)
    return AlignmentResult(cc=cc, psi=np.rad2deg(psi) % 360.0, shift_x=sx, shift_y=sy,
                           imed=imed_val, eligible=eligible)
