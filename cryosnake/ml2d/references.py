"""Rotated, mask-filled, energy-equalised reference bank (spec ``algorithms.md`` §1.5) and the
inverse operation used by the M-step sums (§1.8, ``MaskFill(Rot_{+psi_j}[S_kj])``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryosnake.kernels import cpu


def outer_ring_mean(images: np.ndarray) -> np.ndarray:
    """Mean of each image over its pixels with ``r >= N/2`` (spec §1.5 step 1): ``[..., N, N]``."""
    n = images.shape[-1]
    outer = cpu.circular_mask(n, inside=False)
    return images[..., outer].mean(axis=-1)


def fill_outside(images: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Set the pixels with ``r > N/2`` of each image to ``values`` (broadcast over ``[...]``)."""
    n = images.shape[-1]
    outside = ~cpu.circular_mask(n, inside=True)
    out = np.array(images, dtype=np.float64, copy=True)
    out[..., outside] = np.asarray(values, dtype=np.float64)[..., None]
    return out


@dataclass
class ReferenceBank:
    """``B[k, j] = E_k * MaskFill(Rot_{-psi_j}[A_k])`` (spec §1.5).

    * ``B``: ``[K, n_psi, N, N]`` float64 (in-plane rotations by ``-psi_j``, cubic B-spline,
      wrap; pixels ``r > N/2`` set to the outer-ring mean ``a_k`` of ``A_k``; every copy scaled to
      the energy of ``B[k, 0]``).
    * ``A2``: ``[K]`` reference energies ``||B_k0||^2``.
    * ``Bsum``: ``[K, n_psi]`` pixel sums of ``B[k, j]`` (the DC term used by the norm model).
    * ``psi_deg``: ``[n_psi]`` the reference angles.
    """

    B: np.ndarray
    A2: np.ndarray
    Bsum: np.ndarray
    psi_deg: np.ndarray


def reference_bank(references: np.ndarray, psi_deg: np.ndarray, backend=cpu) -> ReferenceBank:
    """Build the reference bank of §1.5 for ``references`` ``[K, N, N]`` and angles ``psi_deg``."""
    refs = np.asarray(references, dtype=np.float64)
    k, n, _ = refs.shape
    n_psi = len(psi_deg)
    a = outer_ring_mean(refs)  # step 1
    stack = np.repeat(refs, n_psi, axis=0)
    angles = np.tile(-np.asarray(psi_deg, dtype=np.float64), k)
    rot = backend.rotate_images(stack, angles, order=3).reshape(k, n_psi, n, n)  # step 2
    rot = fill_outside(rot, np.repeat(a[:, None], n_psi, axis=1))
    energy = (rot**2).sum(axis=(-2, -1))  # step 3: energy equalisation
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(energy > 0, np.sqrt(energy[:, :1] / energy), 0.0)
    bank = rot * factor[:, :, None, None]
    return ReferenceBank(
        B=bank,
        A2=energy[:, 0].copy(),
        Bsum=bank.sum(axis=(-2, -1)),
        psi_deg=np.asarray(psi_deg, dtype=np.float64),
    )


def back_rotate_sums(S: np.ndarray, psi_deg: np.ndarray, backend=cpu) -> np.ndarray:
    """``M_k = sum_j MaskFill(Rot_{+psi_j}[S_kj])`` (spec §1.8): ``[K, n_psi, N, N] -> [K, N, N]``.

    ``MaskFill``: the mean of the un-rotated ``S_kj`` over ``r >= N/2`` replaces the rotated
    pixels with ``r > N/2``. Every step is linear, so sums over particle chunks add up exactly.
    """
    k, n_psi, n, _ = S.shape
    fill = outer_ring_mean(S)
    rot = backend.rotate_images(
        S.reshape(k * n_psi, n, n), np.tile(np.asarray(psi_deg, np.float64), k), order=3
    ).reshape(k, n_psi, n, n)
    return fill_outside(rot, fill).sum(axis=1)
