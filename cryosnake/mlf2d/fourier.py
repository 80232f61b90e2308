"""Fourier-space bookkeeping of MLF2D (spec ``algorithms.md`` §0.4, §2.4, §2.7, trap 1).

Conventions (numpy's, used everywhere in MLF2D, trap 7): ``X^(k) = rfft2(X)`` with the
forward transform un-normalised, frequencies in FFT-index units ``k = (kx, ky)``, ``kx`` along
columns (x), ``ky`` along rows (y), both wrapped to ``[-N/2, N/2)``.

* **Shell** of a frequency: ``l(k) = round(|k|)``. Only shells ``0 .. N//2 - 1`` are used:
  points with ``round(|k|) >= N//2`` (the Nyquist row/column and the corners) are left out of
  everything, so every reference is band-limited to a disc inside Nyquist (a departure from
  Xmipp, which clamps the corners into the last shell; it keeps every used coefficient
  complex with an exact Hermitian partner).
* **Independent points**: each complex coefficient once (trap 1): ``kx > 0``, or ``kx = 0`` and
  ``ky >= 0``. The DC term is the only real one among them.
* A :class:`PointSet` orders the independent points for one iteration: first the likelihood
  set **P** (``l_low < l <= l_prob``), then **Q** (``l <= l_low``, i.e. the DC term, then
  ``l_prob < l <= l_ext``), both by shell (spec §2.4). Points beyond ``l_ext`` are not
  touched at all: that is where MLF2D saves its time. The E-step uses ``l_prob = l_ext =
  l_high``, the shell of ``high_res_limit`` (:mod:`.wiener` says why).

Flips (spec §1.3, §2.7): ``(G_f X)(r) = X(F_f (r - c) + c)`` about ``c = N // 2`` has

    FT(G_f X)(k) = X^(F_f k) exp(2 pi i (F_f k - k).c / N)

and centring the particle first (``Sh_{-t}``, physical offset ``t``) multiplies by
``exp(2 pi i (F_f k).t / N)``. A CTF applied in the raw frame becomes ``CTF(F_f k)`` in the
flipped frame (``G_f (h * Y) = (h o F_f) * G_f Y``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cryosnake.classify2d.hypotheses import FLIP_MATRICES


def n_shells(n: int) -> int:
    """Number of shells used for an ``N x N`` image: ``N // 2`` (``l = 0 .. N//2 - 1``)."""
    return n // 2


def independent_points(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kx, ky)`` of the independent half-plane points with ``round(|k|) <= N//2 - 1``,
    sorted by shell, then ``ky``, then ``kx``."""
    r = np.arange(-(n // 2), n - n // 2)
    ky, kx = np.meshgrid(r, r, indexing="ij")
    kx, ky = kx.ravel(), ky.ravel()
    shell = np.rint(np.hypot(kx, ky)).astype(np.int64)
    keep = ((kx > 0) | ((kx == 0) & (ky >= 0))) & (shell <= n_shells(n) - 1)
    kx, ky, shell = kx[keep], ky[keep], shell[keep]
    order = np.lexsort((kx, ky, shell))
    return kx[order], ky[order]


def shell_of(kx, ky) -> np.ndarray:
    """``round(|k|)`` of integer frequencies."""
    return np.rint(np.hypot(kx, ky)).astype(np.int64)


def shell_onehot(shell: np.ndarray, n_shells: int) -> np.ndarray:
    """``[Np, n_shells]`` float: 1 where point ``p`` lies in shell ``l`` (``values @ onehot``
    sums over shells)."""
    out = np.zeros((len(shell), n_shells))
    keep = shell < n_shells
    out[np.flatnonzero(keep), shell[keep]] = 1.0
    return out


def shell_counts(n: int) -> np.ndarray:
    """Number of independent points per shell, ``[N//2]``."""
    kx, ky = independent_points(n)
    return np.bincount(shell_of(kx, ky), minlength=n_shells(n))


def shell_frequency(n: int, sampling: float) -> np.ndarray:
    """Spatial frequency of each shell in 1/Å: ``l / (N Ts)``."""
    return np.arange(n_shells(n)) / (n * sampling)


def shell_of_resolution(resolution_A: float, n: int, sampling: float) -> int:
    """Shell of a resolution in Å: ``round(N Ts / res)`` clamped to ``N//2 - 1``; ``0`` Å (no
    limit) gives ``N//2 - 1`` (spec §2.4, ``l_high``; not truncated to integers, trap 4)."""
    top = n_shells(n) - 1
    if resolution_A <= 0:
        return top
    return int(min(top, round(n * sampling / resolution_A)))


def gather_points(spectra: np.ndarray, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    """Values of ``rfft2`` spectra ``[..., N, N//2+1]`` at independent points ``[..., Np]``."""
    n = spectra.shape[-2]
    return spectra[..., np.mod(ky, n), kx]


def scatter_points(values: np.ndarray, kx: np.ndarray, ky: np.ndarray, n: int) -> np.ndarray:
    """``rfft2``-layout spectra ``[..., N, N//2+1]`` holding ``values`` ``[..., Np]`` at the
    independent points (zero elsewhere), with the Hermitian partners of the ``kx = 0`` column
    filled in, so that ``irfft2`` gives the real image with exactly these coefficients."""
    out = np.zeros((*values.shape[:-1], n, n // 2 + 1), dtype=np.result_type(values, 1j))
    out[..., np.mod(ky, n), kx] = values
    col0 = (kx == 0) & (ky > 0)
    out[..., np.mod(-ky[col0], n), 0] = np.conj(values[..., col0])
    return out


@dataclass(frozen=True)
class PointSet:
    """The Fourier points of one iteration (spec §2.4): ``P`` (likelihood) then ``Q``.

    * ``n``: box; ``shell_prob``, ``shell_ext``: ``l_prob``, ``l_ext`` (``l_low = 0``).
    * ``kx``, ``ky``, ``shell``: ``[Np]`` integer frequencies and shells, P first.
    * ``n_prob``: number of P points.
    * ``shell_onehot``: ``[Np, L_ext]`` float, point -> shell (``L_ext = l_ext + 1``).
    """

    n: int
    shell_prob: int
    shell_ext: int
    kx: np.ndarray
    ky: np.ndarray
    shell: np.ndarray
    n_prob: int
    shell_onehot: np.ndarray

    @property
    def n_points(self) -> int:
        return int(self.kx.size)

    @property
    def n_shells_ext(self) -> int:
        return self.shell_ext + 1

    @classmethod
    def build(cls, n: int, shell_prob: int, shell_ext: int) -> PointSet:
        kx, ky = independent_points(n)
        shell = shell_of(kx, ky)
        p = (shell >= 1) & (shell <= shell_prob)  # l_low = 0: DC out of the likelihood
        q = (shell == 0) | ((shell > shell_prob) & (shell <= shell_ext))
        order = np.r_[np.flatnonzero(p), np.flatnonzero(q)]
        kx, ky, shell = kx[order], ky[order], shell[order]
        return cls(n, int(shell_prob), int(shell_ext), kx, ky, shell, int(p.sum()),
                   shell_onehot(shell, shell_ext + 1))

    def flip_tables(self, n_flips: int) -> dict:
        """Per flip ``f`` and point ``p`` (spec §2.7): where ``X^(F_f k)`` is stored
        (``src`` index into this set, ``conj`` if it is the partner ``-F_f k``), the centring
        phase ``exp(2 pi i (F_f k - k).c / N)`` and ``F_f k`` (``fx``, ``fy``)."""
        n = self.n
        lookup = np.full((n, n), -1, dtype=np.int64)
        lookup[np.mod(self.ky, n), np.mod(self.kx, n)] = np.arange(self.n_points)
        mats = FLIP_MATRICES[:n_flips]
        fx = mats[:, 0, 0, None] * self.kx + mats[:, 0, 1, None] * self.ky
        fy = mats[:, 1, 0, None] * self.kx + mats[:, 1, 1, None] * self.ky
        direct = lookup[np.mod(fy, n), np.mod(fx, n)]
        partner = lookup[np.mod(-fy, n), np.mod(-fx, n)]
        conj = direct < 0
        src = np.where(conj, partner, direct)
        if (src < 0).any():  # cannot happen: shells are invariant under the flips
            raise AssertionError("point set is not closed under the flips")
        c = n // 2
        phase0 = np.exp(2j * np.pi * ((fx - self.kx) * c + (fy - self.ky) * c) / n)
        return {"src": src, "conj": conj, "phase0": phase0, "fx": fx, "fy": fy}


def translation_table(n: int) -> np.ndarray:
    """``exp(2 pi i m / N)`` for ``m = 0 .. N-1`` (phase of an integer shift)."""
    return np.exp(2j * np.pi * np.arange(n) / n)


def wrap_offset(u, n: int) -> np.ndarray:
    """Integer offsets wrapped to ``[-N/2, N/2)`` (translations are cyclic)."""
    return np.mod(np.asarray(u) + n // 2, n) - n // 2


def search_disc(search_shift: float) -> np.ndarray:
    """Integer offsets ``v`` with ``|v|^2 <= search_shift^2`` (29 for 3 px), ``[V, 2]`` as
    ``(vx, vy)``, ``(0, 0)`` first (spec §2.7)."""
    r = int(math.floor(search_shift + 1e-9))
    g = np.arange(-r, r + 1)
    vy, vx = np.meshgrid(g, g, indexing="ij")
    v = np.stack([vx.ravel(), vy.ravel()], axis=1)
    v = v[(v**2).sum(axis=1) <= search_shift**2 + 1e-9]
    order = np.lexsort((v[:, 0], v[:, 1], (v**2).sum(axis=1)))
    return v[order].astype(np.int64)
