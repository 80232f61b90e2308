"""Iteration-0 volume (spec ``algorithms.md`` §3.4).

* Random start (no reference): every image gets a random orientation, uniform on the sphere
  (``rot ~ U[0, 360)``, ``cos(tilt) ~ U[-1, 1]``, ``psi ~ U[0, 360)``; Xmipp draws the tilt
  uniformly in angle, which over-weights the poles), zero shifts, unit weights; the direct
  Fourier reconstruction is symmetrised with the icosahedral group i1 by inserting every image
  once per group element (equivalent to averaging the reconstruction over i1, which is what
  Xmipp intends). The result is a nearly spherical blob with the images' radial profile.
* Reference: a volume at any box and pixel size is Fourier-resampled to the working pixel size,
  then padded or cropped (centred) to the working box, and low-passed to the target resolution
  when that option is on.
"""

from __future__ import annotations

import numpy as np

from cryosnake.kernels import cpu
from cryosnake.volume3d.reconstruct import reconstruct
from cryosnake.volume3d.volume_ops import fourier_resize, raised_cosine_lowpass, spherical_mask

__all__ = [
    "random_orientations",
    "random_initial_volume",
    "reference_initial_volume",
]


def random_orientations(n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rot, tilt, psi)`` in degrees, directions uniform on the sphere."""
    rng = np.random.default_rng(rng)
    rot = rng.uniform(0.0, 360.0, n)
    tilt = np.rad2deg(np.arccos(rng.uniform(-1.0, 1.0, n)))
    psi = rng.uniform(0.0, 360.0, n)
    return rot, tilt, psi


def random_initial_volume(images, rng=None, symmetry_average: str = "i1",
                          backend=cpu) -> np.ndarray:
    """Reconstruction from random orientations, averaged over ``symmetry_average``, masked."""
    images = np.asarray(images, dtype=np.float32)
    rot, tilt, psi = random_orientations(len(images), rng)
    vol = reconstruct(images, rot, tilt, psi, symmetry=symmetry_average, backend=backend)
    return spherical_mask(vol)


def reference_initial_volume(reference, reference_sampling_A: float, n: int, sampling_A: float,
                             target_resolution_A: float = 0.0) -> np.ndarray:
    """Bring a reference volume to the working box ``n`` and pixel size ``sampling_A``.

    Raises ``ValueError`` with the reason when it cannot be done (not a cube, unknown pixel
    size, or a reference so small that it would be less than 4 voxels at the working size).
    """
    ref = np.asarray(reference, dtype=np.float32)
    if ref.ndim != 3 or len(set(ref.shape)) != 1:
        raise ValueError(f"the reference volume must be a cube [z, y, x], got shape {ref.shape}")
    if not (reference_sampling_A and reference_sampling_A > 0):
        raise ValueError("the reference volume has no pixel size (0 in its header); set it "
                         "(e.g. with relion_image_handler --angpix or in the config)")
    if not (sampling_A and sampling_A > 0):
        raise ValueError("the pixel size of the images is needed to use a reference volume")
    n_ref = ref.shape[0]
    n_res = int(round(n_ref * reference_sampling_A / sampling_A))
    if n_res < 4:
        raise ValueError(f"the reference ({n_ref} voxels at {reference_sampling_A} A) is "
                         f"only {n_res} voxels at the working pixel size {sampling_A:.3f} A")
    vol = fourier_resize(ref, n_res) if n_res != n_ref else ref
    out = np.zeros((n, n, n), dtype=np.float32)
    m = min(n, n_res)
    so = n_res // 2 - m // 2
    do = n // 2 - m // 2
    out[do:do + m, do:do + m, do:do + m] = vol[so:so + m, so:so + m, so:so + m]
    if target_resolution_A and target_resolution_A > 0:
        out = raised_cosine_lowpass(out, min(0.5, sampling_A / target_resolution_A))
    return out
