"""The kernel interface, written down once: every function a backend module exports.

``kernels.cpu`` and ``kernels.cuda`` both provide every member of :class:`KernelBackend`
with the same parameter names and defaults (``tests/test_cuda_significant.py`` checks it), so
an algorithm takes ``backend`` (one of the two modules, chosen by the job layer with
:func:`cryosnake.kernels.get_backend`) and calls ``backend.<kernel>(...)``. Arguments and
results are host (numpy) arrays unless a line says otherwise; the CPU function's docstring
gives the full contract (conventions, spec sections).

Conventions: images are ``[n, N, N]`` (``[y, x]``) with the centre at ``N // 2``; spectra are
``rfft2`` half planes ``[..., N, N//2 + 1]``; shifts are ``(x, y)`` in pixels; angles in
degrees unless a line says radians; volumes are ``[z, y, x]``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class BlockPosteriors:
    """Result of :meth:`KernelBackend.ml2d_block_posteriors` (spec §1.6) for ``nb`` blocks of
    ``W x W`` shifts of ``n_img`` images; indices into a window are flat (``a * W + b``)."""

    kept: np.ndarray  #: int64 ``[n_kept]``: the blocks that survive the skip rule, ascending
    gamma: np.ndarray  #: float64 ``[n_kept, W, W]``: their posteriors (the others are all 0)
    wsum: np.ndarray  #: float64 ``[nb]``: sum of each block's posteriors
    logmax: np.ndarray  #: float64 ``[nb]``: largest log-weight of each block (skipped too)
    argmax: np.ndarray  #: int64 ``[nb]``: its window index
    count: np.ndarray  #: int64 ``[nb]``: non-zero posteriors (0: skipped)
    logsum: np.ndarray  #: float64 ``[n_img]``: ``log sum_h w_h`` (``LL_i`` less its constant)
    pmax: np.ndarray  #: float64 ``[n_img]``: largest posterior
    best_block: np.ndarray  #: int64 ``[n_img]``: block of the largest posterior (-1: none)
    best_shift: np.ndarray  #: int64 ``[n_img]``: its window index (-1: none)
    noise: np.ndarray  #: float64 ``[n_img]``: ``sum gamma 2 d`` (squared intensity units)
    offset: np.ndarray  #: float64 ``[n_img]``: ``sum gamma |s|^2`` (px^2)


@dataclass
class TriplePosteriors:
    """Result of :meth:`KernelBackend.mlf2d_weights` (spec §2.8) for ``nt`` triples (image,
    class, flip; image-major) of ``V`` translations x ``n_psi`` angles, of ``n_img`` images; a
    block is ``(t, j)``, one triple at one angle."""

    gamma: np.ndarray  #: ``[nt, V, n_psi]`` (``gamma_dtype``): posteriors (0 in dropped blocks)
    wsum: np.ndarray  #: float64 ``[nt, n_psi]``: sum of each block's posteriors
    logmax: np.ndarray  #: float64 ``[nt, n_psi]``: largest log-weight (-inf: masked out)
    argmax: np.ndarray  #: int64 ``[nt, n_psi]``: its translation index
    logsum: np.ndarray  #: float64 ``[n_img]``: ``log sum_h w_h`` (-inf: no hypothesis)
    pmax: np.ndarray  #: float64 ``[n_img]``: largest posterior
    best_t: np.ndarray  #: int64 ``[n_img]``: triple of the largest posterior (-1: none)
    best_v: np.ndarray  #: int64 ``[n_img]``: its translation index (-1: none)
    best_j: np.ndarray  #: int64 ``[n_img]``: its angle index (-1: none)


class KernelBackend(Protocol):
    """A kernel backend module (``cryosnake.kernels.cpu`` or ``cryosnake.kernels.cuda``)."""

    # --- 2D images (``image``) ----------------------------------------------------------------

    def fft_workers(self, workers: int | None = None) -> int:
        """Threads for host FFTs (host only; the same function in both backends)."""

    def parallel_batches(self, fn: Callable[[int, int], None], n_items: int,
                         workers: int | None = None, min_items: int = 64) -> None:
        """Call ``fn(start, stop)`` on contiguous parts of ``range(n_items)`` in threads."""

    def rfft2(self, images: np.ndarray, workers: int | None = None) -> np.ndarray:
        """Forward FFT ``[..., N, N] -> [..., N, N//2 + 1]`` (complex64 for float32 input)."""

    def irfft2(self, spectra: np.ndarray, n: int, workers: int | None = None) -> np.ndarray:
        """Inverse of :meth:`rfft2` for ``N = n`` (normalised by ``1 / N^2``)."""

    def bspline3_coefficients(self, images: np.ndarray,
                              workers: int | None = None) -> np.ndarray:
        """Periodic cubic B-spline coefficients of ``[..., N, N]`` images, float64."""

    def rotate_images(self, images: np.ndarray, angles_deg, order: int = 3,
                      workers: int | None = None) -> np.ndarray:
        """``Rot_phi`` (spec §0.2) of ``[n, N, N]`` images by ``angles_deg`` (scalar or ``[n]``,
        degrees), cubic B-spline (``order=3``) or bilinear (``1``); float64 ``[n, N, N]``."""

    def permute_images(self, images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        """Pixel permutations ``out[i, f](r) = images[i](M_f r)`` by integer ``[F, 2, 2]``
        matrices; ``[n, F, N, N]`` in the dtype of ``images``."""

    def permute_spectra(self, spectra: np.ndarray, matrices: np.ndarray, n: int) -> np.ndarray:
        """:meth:`rfft2` of :meth:`permute_images` from ``spectra`` ``[m, N, N//2 + 1]``;
        ``[m, F, N, N//2 + 1]`` in the dtype of ``spectra``."""

    def roll_images(self, images: np.ndarray, index: np.ndarray,
                    shifts_xy: np.ndarray) -> np.ndarray:
        """Integer cyclic shifts ``out[t] = Sh_v[images[index[t]]]``, ``v = shifts_xy[t]`` px;
        ``[len(index), N, N]`` in the dtype of ``images``."""

    def shift_images(self, images: np.ndarray, shifts_xy,
                     workers: int | None = None) -> np.ndarray:
        """Sub-pixel ``Sh_v`` by a Fourier phase ramp; ``shifts_xy`` ``[n, 2]`` px; float64."""

    def radius_grid(self, n: int) -> np.ndarray:
        """Distance of each pixel from ``N // 2``: float64 ``[N, N]``, pixels (host only)."""

    def circular_mask(self, n: int, radius: float | None = None,
                      inside: bool = True) -> np.ndarray:
        """Boolean ``[N, N]`` disc of ``radius`` px (default ``N / 2``) about ``N // 2``, or its
        outside (host only)."""

    def radial_average(self, images: np.ndarray) -> np.ndarray:
        """Mean over integer shells ``round(r)``: ``[..., N, N] -> [..., R]``."""

    # --- ML2D E-step (``ml2d``) ---------------------------------------------------------------

    def ml2d_window_phase(self, n: int, half_width: int) -> np.ndarray:
        """Phase ``[N, N//2 + 1]`` complex that moves the shift window to the corner (host)."""

    def ml2d_image_operands(self, images: np.ndarray) -> np.ndarray:
        """Transposed real/imaginary spectra ``[m, 2, N, N//2 + 1]`` of images ``[m, N, N]``."""

    def ml2d_permuted_operands(self, spectra: np.ndarray, matrices: np.ndarray,
                               n: int) -> np.ndarray:
        """:meth:`ml2d_image_operands` of the ``F`` flipped images, ``[m * F, 2, N, N//2 + 1]``,
        from ``spectra`` ``[m, N, N//2 + 1]``."""

    def ml2d_reference_operands(self, references: np.ndarray, half_width: int) -> np.ndarray:
        """Reference operands ``[m, 2, N, N//2 + 1]`` (conjugate, window phase, ``1 / N^2``)."""

    def ml2d_block_correlations(self, image_ops: np.ndarray, reference_ops: np.ndarray,
                                blk_x: np.ndarray, blk_b: np.ndarray, half_width: int,
                                out: np.ndarray | None = None) -> np.ndarray:
        """Correlation windows ``[nb, W, W]`` (``W = 2 half_width + 1``, shifts in px) of every
        block ``(image blk_x, reference blk_b)`` (spec §1.6, §1.7)."""

    def ml2d_projection_operands(self, references: np.ndarray,
                                 dtype=np.float32) -> np.ndarray:
        """References ``[n_ref, N, N]`` as ``[N*N, n_ref]`` (``dtype``) for the projections."""

    def ml2d_shifted_projections(self, images: np.ndarray, index: np.ndarray,
                                 shifts_xy: np.ndarray, reference_ops: np.ndarray) -> np.ndarray:
        """Dot products ``[len(index), n_ref]`` of integer-shifted images with every reference
        (fast-mode pre-selection, spec §1.12)."""

    def ml2d_block_posteriors(self, c: np.ndarray, blk_const: np.ndarray,
                              blk_scale: np.ndarray, img_ptr: np.ndarray,
                              blk_logprior: np.ndarray, log_offset_prior: np.ndarray,
                              shift_r2: np.ndarray, sigma2: float, block_skip: float = 1e-8,
                              entry_cutoff: float = 0.0,
                              gamma_buffer: np.ndarray | None = None) -> BlockPosteriors:
        """Posteriors of every shift of every block ``c`` ``[nb, W, W]`` (spec §1.6); ``sigma2``
        in squared intensity units, ``shift_r2`` px^2."""

    def ml2d_accumulate_direct(self, acc: np.ndarray, images: np.ndarray, gamma: np.ndarray,
                               blk_key: np.ndarray, blk_img: np.ndarray, blk_scale: np.ndarray,
                               half_width: int) -> None:
        """In place: ``acc[key] += scale * sum_s gamma(s) Y(. + s)`` in real space, ``acc``
        float64 ``[n_keys, N, N]`` (spec §1.6.3)."""

    def ml2d_window_accumulator(self, n_keys: int, n: int) -> np.ndarray:
        """Zeroed accumulator float64 ``[n_keys, 2, N, N//2 + 1]`` (host only)."""

    def ml2d_accumulate_windows(self, acc: np.ndarray, gamma: np.ndarray,
                                image_ops: np.ndarray, blk_key: np.ndarray, blk_x: np.ndarray,
                                blk_scale: np.ndarray, half_width: int,
                                gamma_rows: np.ndarray | None = None) -> None:
        """In place: the same sums as :meth:`ml2d_accumulate_direct` in Fourier space, into a
        :meth:`ml2d_window_accumulator`."""

    def ml2d_window_sums(self, acc: np.ndarray, half_width: int) -> np.ndarray:
        """Real-space sums ``[n_keys, N, N]`` of a window accumulator."""

    # --- MLF2D E-step (``mlf2d``) -------------------------------------------------------------

    def mlf2d_centred(self, xp, cw, trip_img, trip_flip, trip_u, tables, tw, n_points=None,
                      dtype=np.complex64) -> np.ndarray:
        """CTF-weighted, flipped, re-centred spectra ``[nt, n_points]`` (``dtype``) of each
        triple (image, flip, offset ``trip_u`` px) at the points of a ``PointSet``."""

    def mlf2d_weights(self, D, mask, trip_logprior, entry_logprior, img_ptr, block_skip=1e-8,
                      entry_cutoff=0.0, gamma_dtype=np.float64) -> TriplePosteriors:
        """Posteriors from ``D`` ``[nt, V, n_psi]`` (dimensionless, ``|X - cA|^2 / sigma^2``;
        spec §2.8) of the blocks ``mask`` ``[nt, n_psi]``; log-priors per triple ``[nt]``
        and per translation ``[nt, V]``; ``img_ptr`` ``[n_img + 1]``: each image's triples;
        ``gamma_dtype``: the dtype of the returned ``gamma`` (float32 for single-precision
        products of it; sums and maxima are float64 either way)."""

    # --- 3D volumes (``volume``) --------------------------------------------------------------

    def fourier_slice_sample(self, vol_ft, rotations, coords) -> np.ndarray:
        """Central slices of a padded transform at ``coords`` ``(m, 2)`` (padded units) for
        ``rotations`` ``(n, 3, 3)``: ``(n, m)`` complex64 (trilinear)."""

    def fourier_insert(self, values, coords, image_index, rotations, shifts, weights, sym_ops,
                       pad_size, sample_weights=None) -> tuple[np.ndarray, np.ndarray]:
        """Weighted trilinear insertion (spec §3.8.1-3); ``shifts`` ``(n_rows, 2)`` px. Returns
        ``(num, den)``, ``(P, P, P//2 + 1)`` complex128 and float64."""

    def rotate_volume(self, vol, matrix, shift) -> np.ndarray:
        """Trilinear ``out(x) = vol(M (x - c - shift) + c)``, ``shift`` ``(3,)`` voxels; float32
        ``[z, y, x]``."""

    def rotate_volume_batch(self, vol, matrices, shifts) -> np.ndarray:
        """:meth:`rotate_volume` for ``n`` pairs: float32 ``(n, Z, Y, X)``."""

    # --- Reconstruct Significant alignment (``align``) ----------------------------------------

    def refine_rotational_peaks(self, C, D, coarse, side, n_phi, newton_steps
                                ) -> tuple[np.ndarray, ...]:
        """Best ``psi`` (radians) and sub-grid shift per image x direction: ``(psi, dx, dy,
        cval, dval)``, each float64 ``(n_img, n_dir)``; ``dx, dy`` in shift-grid units."""

    def blas_single_thread(self) -> AbstractContextManager:
        """Context manager: one BLAS thread inside (host only; the same in both backends)."""

    # --- matrix products (``linalg``) ---------------------------------------------------------

    def device_operand(self, b):
        """A handle on ``b`` for repeated :meth:`batched_matmul` calls (a device copy on cuda)."""

    def batched_matmul(self, a, b) -> np.ndarray:
        """``a @ b`` with numpy's broadcasting and dtype rules; a host array."""


def kernel_names() -> list[str]:
    """The names of every kernel of :class:`KernelBackend`, in the order above."""
    return [name for name in KernelBackend.__dict__
            if not name.startswith("_") and callable(KernelBackend.__dict__[name])]
