"""A small 2D simulator for the ML2D tests (independent of the kernels under test).

Particles follow the generative model of spec §1.2, ``X = Sh_t[Mir^mu[Rot_{-theta}[A_k]]] + n``,
built with ``scipy.ndimage.map_coordinates`` (cubic spline, wrap) and a Fourier shift, about
the centre pixel ``N // 2``. The true pose in the output convention (``cryosnake.classify2d.poses``)
is ``psi = -theta``, ``origin = -t``, ``mirror = mu``.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi


def rotate_ref(img: np.ndarray, phi_deg: float, order: int = 3) -> np.ndarray:
    """``Rot_phi[I](r) = I(R(-phi) r)`` about ``N // 2`` with periodic boundary."""
    n = img.shape[-1]
    c = n // 2
    y, x = np.mgrid[0:n, 0:n] - c
    a = np.deg2rad(phi_deg)
    xs = np.cos(a) * x - np.sin(a) * y + c
    ys = np.sin(a) * x + np.cos(a) * y + c
    return ndi.map_coordinates(img, [ys, xs], order=order, mode="grid-wrap")


def mirror_ref(img: np.ndarray) -> np.ndarray:
    """``Mir[I](x, y) = I(-x, y)`` about ``N // 2`` (wrap)."""
    n = img.shape[-1]
    idx = (2 * (n // 2) - np.arange(n)) % n
    return img[:, idx]


def shift_ref(img: np.ndarray, tx: float, ty: float) -> np.ndarray:
    """``Sh_t[I](r) = I(r - t)`` by a Fourier phase ramp."""
    n = img.shape[-1]
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.fftfreq(n)[None, :]
    return np.real(np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (kx * tx + ky * ty))))


def _random_view(n, rng):
    c = n // 2
    y, x = np.mgrid[0:n, 0:n] - c
    view = np.zeros((n, n))
    for _ in range(4):
        r = rng.uniform(0.05, 0.28) * n
        a = rng.uniform(0, 2 * np.pi)
        cx, cy = r * np.cos(a), r * np.sin(a)
        sx, sy = rng.uniform(0.04, 0.11, size=2) * n
        rot = rng.uniform(0, np.pi)
        xr = np.cos(rot) * (x - cx) + np.sin(rot) * (y - cy)
        yr = -np.sin(rot) * (x - cx) + np.cos(rot) * (y - cy)
        view += rng.uniform(0.5, 1.5) * np.exp(-0.5 * ((xr / sx) ** 2 + (yr / sy) ** 2))
    # centre of mass on the centre pixel, as picked particles are
    com_x = (view * x).sum() / view.sum()
    com_y = (view * y).sum() / view.sum()
    view = shift_ref(view, -com_x, -com_y)
    return view / view.std()


def _similar(a, b, limit, skip_identity=False):
    """Whether ``a`` correlates with ``b`` at ``>= limit`` for some rotation (15 deg) or mirror.

    ``skip_identity``: leave out the un-mirrored rotations within 30 deg of 0 (self-similarity).
    """
    for mir, m in enumerate((a, mirror_ref(a))):
        for phi in range(0, 360, 15):
            if skip_identity and not mir and (phi <= 30 or phi >= 330):
                continue
            if np.corrcoef(rotate_ref(m, phi, order=1).ravel(), b.ravel())[0, 1] >= limit:
                return True
    return False


def make_views(n_views: int, n: int, rng, max_similarity: float = 0.7) -> np.ndarray:
    """Distinct asymmetric shapes ``[K, n, n]`` (unit std): a few Gaussian blobs each.

    A candidate is kept only if its correlation with every kept view, over in-plane rotations
    and mirror, stays below ``max_similarity`` (so the classes are separable), and so does its
    correlation with its own mirror image and rotations beyond 30 deg (so angle and mirror are
    identifiable).
    """
    views = []
    for _ in range(3000):
        v = _random_view(n, rng)
        if _similar(v, v, max_similarity, skip_identity=True):
            continue
        if not any(_similar(v, u, max_similarity) for u in views):
            views.append(v)
        if len(views) == n_views:
            return np.array(views)
    raise RuntimeError(f"found only {len(views)} distinct views; raise max_similarity")


def simulate(
    views,
    n_images,
    rng,
    snr=0.1,
    offset_std=2.0,
    mirror_fraction=0.5,
    scale_range=None,
    background_std=0.0,
    integer_shifts=True,
):
    """Noisy particles and their truth.

    ``snr`` = variance of the clean particles / noise variance (over the square). With
    ``scale_range=(lo, hi)`` each particle is multiplied by ``s ~ U(lo, hi)`` and gets a
    background ``b ~ N(0, background_std)`` (norm model, spec V-ML7). Shifts are rounded to
    integers unless ``integer_shifts=False``.
    """
    k_true = rng.integers(0, len(views), n_images)
    theta = rng.uniform(0, 360, n_images)
    mirror = (rng.uniform(size=n_images) < mirror_fraction).astype(int)
    t = rng.normal(0, offset_std, size=(n_images, 2))
    if integer_shifts:  # ML2D searches integer translations (spec §1.3)
        t = np.rint(t)
    clean = np.empty((n_images, *views.shape[1:]))
    for i in range(n_images):
        img = rotate_ref(views[k_true[i]], -theta[i])
        if mirror[i]:
            img = mirror_ref(img)
        clean[i] = shift_ref(img, t[i, 0], t[i, 1])
    sigma = np.sqrt(clean.var() / snr)
    scale = np.ones(n_images)
    bg = np.zeros(n_images)
    if scale_range is not None:
        scale = rng.uniform(*scale_range, n_images)
        bg = rng.normal(0, background_std, n_images)
    images = scale[:, None, None] * clean + bg[:, None, None]
    images = images + rng.normal(0, sigma, images.shape)
    truth = {
        "class": k_true,
        "theta": theta,
        "mirror": mirror,
        "tx": t[:, 0],
        "ty": t[:, 1],
        "psi_deg": -theta,
        "sigma": sigma,
        "scale": scale,
        "background": bg,
    }
    return images.astype(np.float32), truth
