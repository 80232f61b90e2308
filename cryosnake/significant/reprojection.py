"""The reprojection check of a Reconstruct Significant volume: every 2D average beside the
volume's projection at the pose assigned to it, and how well the two agree.

Pose of an average (one per average, :func:`best_rows`): of the average's significant rows in
``angles.star``, the one with the highest correlation ``cryosnakeCC`` (ties: the highest
``cryosnakeWeight``). The correlation is the average's own best match in the last iteration;
the weight also carries the per-direction pool of every other average (spec §3.7), so the
heaviest row is not always the best view of this average.

Projection (:func:`reproject`): the same Fourier central-slice projector and Euler convention
as the alignment that assigned the angles (:mod:`.projector`, ZYZ as in RELION, centre
``N // 2``), over the full band, then moved by ``-origin`` (RELION sign: the particle sits at
box centre - origin), so that the result is directly comparable with the average.

Agreement (:func:`masked_ncc`): the Pearson correlation of the average and its projection over
the pixels within ``N / 2`` of the centre pixel (the circle inscribed in the box). It is blind
to scale and offset, so the density scale of the volume does not matter; 1 = identical up to
scale.

The volume of the last iteration was re-centred after its reconstruction (§3.9.1); the poses
were found before, against the previous volume. That shift is small once the run has settled
(it is undone every iteration) and is not compensated here.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from cryosnake.kernels import cpu
from cryosnake.volume3d.projector import fft_workers, prepare_volume, project

__all__ = [
    "best_rows",
    "shift_images",
    "reproject",
    "circular_mask",
    "masked_ncc",
]


def best_rows(image_index, cc, weight, n_images: int) -> np.ndarray:
    """For each image ``0 .. n_images - 1`` the row of its assigned pose, or -1 when it has none.

    ``image_index`` (0-based), ``cc`` and ``weight``: one value per significant row
    (``cryosnakeImageIndex - 1``, ``cryosnakeCC``, ``cryosnakeWeight``). The pose of an image is
    its row with the highest ``cc``; among equal ``cc`` the highest ``weight``, then the first.
    """
    image_index = np.asarray(image_index, dtype=np.int64)
    cc = np.asarray(cc, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    best = np.full(int(n_images), -1, dtype=np.int64)
    if len(cc) == 0:
        return best
    # lexsort: the last key is the primary one; the winner of each image is its last row
    order = np.lexsort((-np.arange(len(cc)), weight, cc, image_index))
    last = np.r_[image_index[order][1:] != image_index[order][:-1], True]
    winners = order[last]
    inside = (image_index[winners] >= 0) & (image_index[winners] < n_images)
    best[image_index[winners[inside]]] = winners[inside]
    return best


def shift_images(images, shift_x, shift_y) -> np.ndarray:
    """Move the content of ``images`` (``[n, y, x]``) by ``(shift_x, shift_y)`` pixels each
    (periodic Fourier phase shift; float32)."""
    images = np.asarray(images, dtype=np.float64)
    n_y, n_x = images.shape[-2:]
    sx = np.asarray(shift_x, dtype=np.float64).reshape(-1, 1, 1)
    sy = np.asarray(shift_y, dtype=np.float64).reshape(-1, 1, 1)
    ky = np.fft.fftfreq(n_y)[None, :, None]
    kx = np.fft.rfftfreq(n_x)[None, None, :]
    ramp = np.exp(-2j * np.pi * (kx * sx + ky * sy))
    ft = scipy.fft.rfft2(images, workers=fft_workers())
    return scipy.fft.irfft2(ft * ramp, s=(n_y, n_x), workers=fft_workers()).astype(np.float32)


def reproject(volume, rot, tilt, psi, origin_x_px, origin_y_px, backend=cpu) -> np.ndarray:
    """Projections ``[n, N, N]`` (float32) of ``volume`` (``[z, y, x]``, centre ``N // 2``) at
    the poses ``(rot, tilt, psi)`` (degrees, RELION ZYZ) with origins in pixels (RELION sign:
    the projection is moved by ``(-origin_x_px, -origin_y_px)``): what an average assigned to
    that pose should look like."""
    vft = prepare_volume(volume)
    proj = project(vft, rot, tilt, psi, backend=backend)
    return shift_images(proj, -np.asarray(origin_x_px), -np.asarray(origin_y_px))


def circular_mask(n: int) -> np.ndarray:
    """``[n, n]`` bool: the pixels within ``n / 2`` of the centre pixel ``n // 2``."""
    g = np.arange(n) - n // 2
    return g[:, None] ** 2 + g[None, :] ** 2 <= (n / 2.0) ** 2


def masked_ncc(a, b, mask=None) -> np.ndarray:
    """Pearson correlation of image pairs ``a[i]``, ``b[i]`` (``[n, N, N]``) over ``mask``
    (default :func:`circular_mask`): shape ``(n,)``; NaN where an image is constant there."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image stacks differ in shape: {a.shape} and {b.shape}")
    mask = circular_mask(a.shape[-1]) if mask is None else np.asarray(mask, dtype=bool)
    x = a[..., mask]
    y = b[..., mask]
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(axis=-1) / den, np.nan)
