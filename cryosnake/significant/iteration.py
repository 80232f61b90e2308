"""One iteration of Reconstruct Significant (spec ``algorithms.md`` §3.1, §3A).

The workflow calls :func:`run_iteration` once per iteration ``it = 1 .. n``:

1. significance level ``alpha_it`` (linear schedule, scaled by the group, §3.3);
2. gallery directions of one asymmetric unit (``sampling``) and the Fourier transform of the
   current volume (``projector``), low-passed at 0.25 digital;
3. alignment of every image to every direction (``align``): ``cc``, ``psi``, origin, IMED;
4. per-image and per-direction CDFs, Fisher, neighbourhood, strict rule, weights (``weights``);
5. weighted direct Fourier reconstruction of the significant rows with symmetry expansion
   (``reconstruct``) — intermediate iterations only up to the gallery band (0.25 digital plus
   a margin of 1.5 Fourier pixels; the next gallery never sees more), the last one (or every
   one with ``keep_intermediate``) up to Nyquist;
6. centring against the mirrored volume, spherical mask, optional low-pass (``volume_ops``).

Helpers for the edges of the run: :func:`prepare_images` (the §3.10 resampling to the working
grid), :func:`initial_volume`, :func:`finalize_volume`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cryosnake.kernels import cpu
from cryosnake.volume3d.projector import prepare_volume
from cryosnake.volume3d.reconstruct import reconstruct
from cryosnake.volume3d.symmetry import parse_symmetry
from cryosnake.volume3d.volume_ops import (
    centre_volume,
    fourier_resize,
    raised_cosine_lowpass,
    spherical_mask,
    working_grid,
)

from .align import align_to_gallery
from .initial import random_initial_volume, reference_initial_volume
from .sampling import angular_neighbours, gallery_directions
from .weights import check_alpha_symmetry, significance_level, significant_weights

__all__ = [
    "SignificantSettings",
    "ANGLE_COLUMNS",
    "run_iteration",
    "postprocess_volume",
    "prepare_images",
    "initial_volume",
    "finalize_volume",
]

ANGLE_COLUMNS = ["image", "direction", "rot", "tilt", "psi", "origin_x_px", "origin_y_px",
                 "origin_x_A", "origin_y_A", "weight", "cc", "imed"]


@dataclass
class SignificantSettings:
    """Parameters of Reconstruct Significant, named like the config keys (Scipion defaults).

    ``alpha0``/``alphaF`` are percentages (significance ``1 - a/100``); ``max_shift`` is in
    pixels of the input images (-1 = free); ``target_resolution`` in Angstrom (0 = off);
    angles in degrees.
    """

    symmetry: str = "c1"
    angular_sampling: float = 5.0
    tilt_min: float = 0.0
    tilt_max: float = 180.0
    max_shift: float = -1.0
    alpha0: float = 80.0
    alphaF: float = 99.5
    iterations: int = 50
    imed: bool = True
    strict_direction: bool = False
    angular_neighborhood: float = 10.0
    fisher: bool = True
    target_resolution: float = 0.0
    keep_intermediate: bool = False
    seed: int = 1

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` for an inconsistent setting (checked at construction)."""
        parse_symmetry(self.symmetry)
        if not self.angular_sampling > 0:
            raise ValueError(f"angular_sampling must be > 0, got {self.angular_sampling}")
        if not (0 <= self.tilt_min <= self.tilt_max <= 180):
            raise ValueError(f"need 0 <= tilt_min <= tilt_max <= 180, got {self.tilt_min}, "
                             f"{self.tilt_max}")
        if int(self.iterations) < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        for name in ("alpha0", "alphaF"):
            v = getattr(self, name)
            if not (0 <= v <= 100):
                raise ValueError(f"{name} is a percentage in [0, 100], got {v}")
        if self.angular_neighborhood < 0:
            raise ValueError("angular_neighborhood must be >= 0 degrees")
        if self.target_resolution < 0:
            raise ValueError("target_resolution must be >= 0 (0 = off)")
        check_alpha_symmetry(self.alpha0, self.symmetry)

    @classmethod
    def from_config(cls, config: dict, strict: bool = False) -> SignificantSettings:
        """Build from a config mapping; unknown keys are ignored unless ``strict``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(config) - names
        if strict and unknown:
            raise ValueError(f"unknown reconstruct_significant settings: {sorted(unknown)}")
        return cls(**{k: v for k, v in config.items() if k in names})


def run_iteration(images, volume, settings: SignificantSettings, iteration: int,
                  n_iterations: int | None = None, *, sampling_A: float | None = None,
                  input_sampling_A: float | None = None, full_resolution: bool | None = None,
                  backend=cpu) -> tuple[np.ndarray, pd.DataFrame]:
    """Run iteration ``iteration`` (1-based) of ``n_iterations`` (default
    ``settings.iterations``).

    Parameters
    ----------
    images : ``[n, N, N]`` float32 averages at the working grid (see :func:`prepare_images`).
    volume : ``[N, N, N]`` current volume (iteration 0: :func:`initial_volume`).
    sampling_A : pixel size of ``images`` (needed for ``target_resolution`` and the Angstrom
        origins; the origin columns in Angstrom are NaN without it).
    input_sampling_A : pixel size of the original images, when ``images`` were resampled;
        ``max_shift`` (pixels of the original images) is converted to the working grid.
    full_resolution : reconstruct up to Nyquist (default: on the last iteration or with
        ``keep_intermediate``); otherwise up to the gallery band.

    Returns ``(new_volume, angles)``: the volume (float32) and one row per significant
    (image, direction): ``image`` (index), ``direction`` (gallery index), ``rot``, ``tilt``,
    ``psi`` (degrees, RELION ZYZ), ``origin_x_px``, ``origin_y_px`` (RELION sign: the
    particle centre is at box centre - origin, pixels of ``images``), ``origin_x_A``,
    ``origin_y_A``, ``weight``, ``cc``, ``imed`` (NaN without IMED). ``angles.attrs`` holds
    ``alpha`` (the significance level used), ``n_directions`` and ``iteration``.
    """
    images = np.asarray(images, dtype=np.float32)
    n_img, n, _ = images.shape
    n_iterations = int(settings.iterations if n_iterations is None else n_iterations)
    alpha = significance_level(settings.alpha0, settings.alphaF, iteration, n_iterations,
                               settings.symmetry)
    if full_resolution is None:
        full_resolution = iteration == n_iterations or bool(settings.keep_intermediate)
    max_shift = float(settings.max_shift)
    if max_shift > 0 and input_sampling_A and sampling_A:
        max_shift *= float(input_sampling_A) / float(sampling_A)

    rot_d, tilt_d = gallery_directions(settings.symmetry, settings.angular_sampling,
                                       settings.tilt_min, settings.tilt_max)
    vft = prepare_volume(np.asarray(volume, dtype=np.float32))
    res = align_to_gallery(images, vft, rot_d, tilt_d, max_shift=max_shift,
                           imed=settings.imed, backend=backend)
    neighbours = angular_neighbours(rot_d, tilt_d, settings.symmetry,
                                    settings.angular_neighborhood)
    w = significant_weights(res.cc, res.imed, alpha, fisher=settings.fisher,
                            strict=settings.strict_direction, neighbours=neighbours,
                            eligible=res.eligible, n_pix=n * n)
    ii, dd = np.nonzero(w > 0)
    if len(ii) == 0:
        raise RuntimeError(
            f"iteration {iteration}: no (image, direction) pair is significant (all "
            "correlations <= 0 or outside max_shift); check the averages (contrast: particles "
            "must be white on a dark background) and max_shift")
    s_a = float(sampling_A) if sampling_A else np.nan
    angles = pd.DataFrame({
        "image": ii.astype(np.int64),
        "direction": dd.astype(np.int64),
        "rot": rot_d[dd],
        "tilt": tilt_d[dd],
        "psi": res.psi[ii, dd],
        "origin_x_px": res.shift_x[ii, dd],
        "origin_y_px": res.shift_y[ii, dd],
        "origin_x_A": res.shift_x[ii, dd] * s_a,
        "origin_y_A": res.shift_y[ii, dd] * s_a,
        "weight": w[ii, dd],
        "cc": res.cc[ii, dd],
        "imed": res.imed[ii, dd] if res.imed is not None else np.full(len(ii), np.nan),
    }, columns=ANGLE_COLUMNS)
    angles.attrs.update(alpha=alpha, n_directions=len(rot_d), iteration=int(iteration))

    max_res = 0.5 if full_resolution else min(0.5, 0.25 + 1.5 / n)
    vol = reconstruct(images, angles["rot"].to_numpy(), angles["tilt"].to_numpy(),
                      angles["psi"].to_numpy(), angles["origin_x_px"].to_numpy(),
                      angles["origin_y_px"].to_numpy(), angles["weight"].to_numpy(),
                      image_index=ii, symmetry=settings.symmetry, max_resolution=max_res,
                      backend=backend)
    vol = postprocess_volume(vol, settings, sampling_A)
    return vol, angles


def postprocess_volume(vol, settings: SignificantSettings, sampling_A: float | None):
    """Centring, spherical mask of radius N/2, optional low-pass to the target (§3.9)."""
    vol, _ = centre_volume(vol)
    vol = spherical_mask(vol)
    if settings.target_resolution and settings.target_resolution > 0:
        if not sampling_A:
            raise ValueError("target_resolution needs sampling_A (pixel size of the images)")
        vol = raised_cosine_lowpass(vol, min(0.5, float(sampling_A) / settings.target_resolution))
    return vol.astype(np.float32)


def prepare_images(images, sampling_A: float, settings: SignificantSettings):
    """Resample the averages to the working grid (§3.10). Returns ``(images, sampling_A)``.

    Without ``target_resolution`` the images are returned unchanged (as float32).
    """
    images = np.asarray(images, dtype=np.float32)
    n = images.shape[-1]
    n_work, s_work = working_grid(n, sampling_A, settings.target_resolution)
    if n_work == n:
        return images, float(sampling_A)
    return fourier_resize(images, n_work, stack=True), s_work


def initial_volume(images, settings: SignificantSettings, sampling_A: float | None = None,
                   reference=None, reference_sampling_A: float | None = None,
                   backend=cpu) -> np.ndarray:
    """Iteration-0 volume at the working grid: from ``reference`` or a random start (seeded)."""
    images = np.asarray(images, dtype=np.float32)
    n = images.shape[-1]
    if reference is not None:
        return reference_initial_volume(reference, reference_sampling_A, n, sampling_A,
                                        settings.target_resolution)
    return random_initial_volume(images, np.random.default_rng(settings.seed), backend=backend)


def finalize_volume(volume, n_out: int) -> np.ndarray:
    """Fourier-resize the working volume back to the input box ``n_out`` (§3.10)."""
    volume = np.asarray(volume, dtype=np.float32)
    return volume if volume.shape[0] == n_out else fourier_resize(volume, n_out)
