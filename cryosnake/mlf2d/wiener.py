"""CTF-corrected SSNR and Wiener filters (spec ``algorithms.md`` §2.6; Decisions: "MLF2D Wiener
filters: built from the CTF-corrected SSNR").

What is implemented, for class ``k``, shell ``l`` and Fourier point ``p`` inside the
resolution limit:

* numerator ``F_k(p) = FT(M_k)(p)`` (CTF- and noise-weighted aligned images, :mod:`.sums`) and
  denominator ``Den_k(l) = sum gamma <CTF^2>_l / sigma^2(l)``; the CTF-corrected average
  ``Abar_k = F_k / Den_k`` has noise power ``1 / Den_k(l)`` per coefficient;
* signal power ``tau^2_k(l) = T <|A_k|^2>_l`` of the class's **previous** (CTF-corrected)
  reference, ``T = 2``;
* **CTF-corrected SSNR** ``SSNR_k(l) = tau^2_k(l) Den_k(l)`` and **Wiener filter**
  ``W_k = SSNR_k / (1 + SSNR_k)``: the new reference is
  ``A_k = W_k Abar_k = F_k / (Den_k + 1 / tau^2_k)`` -- CTF correction ``c / sum c^2`` where
  the SSNR is high, suppression where it is low (the MAP estimate of RELION, whose ``T = 2``
  for 2D keeps the shells with a true SSNR >= 1 from fading over the iterations).

Why the signal power of the previous reference, not a bias-corrected estimate from the current
average (``<|Abar|^2> Den - 1``, Xmipp's ``SNR - 1``): early on the noise spectra still hold
the signal the references do not model yet, so that estimate is 0 beyond the lowest shells, the
filter zeroes them, and the classes only differ in a blob -- on the demo data two of three
classes then merged (tested). With the previous reference's power the filter anneals: the
unfiltered averages of iteration 0 give every shell some power, shells without signal fade
geometrically, shells with signal grow. After "generate classes" the previous reference is the
global average, blurred by the random in-plane rotations of the particles: that first M-step
takes the power of the unfiltered class averages instead (``first``), or every class would be a
blob. Xmipp builds its weights from the SSNR of the CTF-affected averages (``~ c^3`` at low
SNR, spec §4 item 7), and uses no filter without CTF; here the same formula applies with
``c = 1``.
"""

from __future__ import annotations

import numpy as np

from .fourier import shell_onehot

REGULARISATION = 2.0
"""``T``: the signal power is ``T`` times the power of the previous reference."""


def shell_mean(values: np.ndarray, shell: np.ndarray, n_shells: int) -> np.ndarray:
    """Mean of ``values`` ``[..., Np]`` over the points of each shell: ``[..., n_shells]``
    (0 for shells without points)."""
    onehot = shell_onehot(shell, n_shells)
    return (values @ onehot) / np.maximum(onehot.sum(axis=0), 1)


def ctf_corrected_average(numerator: np.ndarray, denominator: np.ndarray, shell: np.ndarray,
                          point_denominator: np.ndarray | None = None) -> np.ndarray:
    """``Abar = F / Den(l(p))`` (0 where ``Den = 0``): numerators ``[K, Np]`` on points with
    shells ``shell``, denominators ``[K, L]``; or ``F / Den(p)`` with the per-point
    denominators ``point_denominator`` ``[K, Np]``."""
    den = denominator[:, shell] if point_denominator is None else point_denominator
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, numerator / np.where(den > 0, den, 1.0), 0.0)


def wiener_average(numerator: np.ndarray, denominator: np.ndarray, previous: np.ndarray,
                   weights: np.ndarray, shell: np.ndarray, per_class: bool = False,
                   new_shells: bool = False, first: bool = False,
                   point_denominator: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(A [K, Np], SSNR [K, L])``: the CTF-corrected, Wiener-filtered averages from the
    numerators ``F_k`` ``[K, Np]``, the denominators ``Den_k`` ``[K, L]``, the previous
    references ``previous`` ``[K or 1, Np]`` on the same points and the class weights
    ``[K]`` (module docstring). ``per_class``: each class with its own SSNR (the MAP average
    ``F_k / (Den_k + 1 / tau2_k)``), else all with the weighted mean SSNR. ``new_shells``:
    shells where the previous references have no power (a growing resolution limit) take
    the power of the unfiltered averages instead, as RELION starts from unfiltered
    references (shells without signal then fade over the next iterations). ``first``: the
    previous reference is the rotationally blurred global average of "generate classes", not
    a class: every shell takes the power of the unfiltered averages. ``point_denominator``
    ``[K, Np]``: the CTF correction divides each point by its own denominator (the filter
    stays per shell)."""
    L = denominator.shape[-1]
    average = ctf_corrected_average(numerator, denominator, shell, point_denominator)
    power = np.broadcast_to(shell_mean(np.abs(previous) ** 2, shell, L), denominator.shape)
    if first:
        power = shell_mean(np.abs(average) ** 2, shell, L)
    elif new_shells:
        power = np.where(power > 0, power, shell_mean(np.abs(average) ** 2, shell, L))
    ssnr = REGULARISATION * power * denominator
    if per_class:
        return average * (ssnr / (1.0 + ssnr))[:, shell], ssnr
    common = (weights @ ssnr) / weights.sum() if weights.sum() > 0 else np.zeros(L)
    return average * (common / (1.0 + common))[shell], ssnr
