"""Built-in demo data: a procedural asymmetric phantom and particles simulated from it.

The phantom is a sum of anisotropic 3D Gaussians at seeded positions (no symmetry, handedness
well defined). Particles are projections along a handful of distinct directions ("views"),
each turned by a random in-plane angle, mirrored with probability ``mirror_fraction``, shifted
by a Gaussian offset, optionally multiplied by a CTF, plus white Gaussian noise at the given
SNR (variance of the clean particle images over the noise variance).

Ground truth, in cryosnake's output conventions (RELION): the clean particle is
``X = Sh_{−o}[Mir^μ[Rot_ψ[P_view]]]`` where ``o`` = (rlnOriginX, rlnOriginY) in px,
``ψ`` = the in-plane angle, ``μ`` the mirror flag; applying the pose (shift by +o, mirror,
rotate by −ψ) brings the particle back onto the view ``P_view``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from cryosnake import geometry
from cryosnake.ctf import PHASE_FLIP_COLUMN, CTFParams, apply_ctf
from cryosnake.io import mrc, star


@dataclass(frozen=True)
class DemoSettings:
    """The ``demo:`` config section."""

    n_particles: int = 1000
    box: int = 48
    sampling: float = 4.0
    views: int = 12
    snr: float = 0.1
    mirror_fraction: float = 0.5
    shift_std: float = 1.5
    ctf: bool = False
    defocus_min: float = 10000.0
    defocus_max: float = 30000.0
    voltage: float = 300.0
    spherical_aberration: float = 2.7
    amplitude_contrast: float = 0.1
    seed: int = 1

    @classmethod
    def from_config(cls, section: dict) -> DemoSettings:
        return cls(**{k: v for k, v in section.items() if k in cls.__dataclass_fields__})


def phantom_volume(box: int, seed: int = 1, n_blobs: int = 40) -> np.ndarray:
    """An asymmetric phantom ``[z, y, x]``: a faint elongated core plus ``n_blobs − 1`` small
    anisotropic Gaussian "domains" (σ 2–4.5 % of the box) spread through a ball of radius
    0.3·box. The fine, irregular detail gives every view a well-defined in-plane angle and
    shift, and makes views differ from each other and from their mirror images.
    """
    rng = np.random.default_rng(seed)
    c = box // 2
    z, y, x = np.mgrid[:box, :box, :box].astype(np.float64) - c
    coords = np.stack([x, y, z], -1)
    vol = np.zeros((box, box, box))
    r_max = 0.3 * box
    for b in range(n_blobs):
        if b == 0:
            centre = np.zeros(3)
            sigmas = np.array([0.12, 0.08, 0.06]) * box
            amp = 0.4
        else:
            u = rng.normal(size=3)
            centre = u / np.linalg.norm(u) * rng.uniform(0.2, 1.0) ** (1 / 3) * r_max
            sigmas = rng.uniform(0.02, 0.045, size=3) * box
            amp = rng.uniform(0.5, 1.0)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        d = (coords - centre) @ q
        vol += amp * np.exp(-0.5 * np.sum((d / sigmas) ** 2, -1))
    return vol / vol.max()


def project(volume: np.ndarray, rot: float, tilt: float, psi: float = 0.0) -> np.ndarray:
    """Real-space projection ``P(x, y) = ∫ V(Eᵀ (x, y, z)) dz`` (trilinear, centre N//2)."""
    n = volume.shape[0]
    c = n // 2
    e = geometry.euler_to_matrix(rot, tilt, psi)
    y, x, z = np.meshgrid(np.arange(n) - c, np.arange(n) - c, np.arange(n) - c, indexing="ij")
    xyz = np.stack([x, y, z], -1) @ e  # rows: (Eᵀ r)ᵀ = rᵀ E
    coords = np.stack([xyz[..., 2], xyz[..., 1], xyz[..., 0]]) + c  # [z, y, x] order
    samples = ndimage.map_coordinates(volume, coords.reshape(3, -1), order=1, mode="constant")
    return samples.reshape(n, n, n).sum(axis=-1)


def rotate_image(image: np.ndarray, psi_deg: float, order: int = 3) -> np.ndarray:
    """``Rot_ψ`` about the centre pixel N//2 (content moves by R(ψ)), zero outside."""
    n = image.shape[0]
    c = n // 2
    r = geometry.rotation2d(-psi_deg)  # pull-back: out(r) = in(R(−ψ) r)
    offset = np.array([c, c]) - r[::-1, ::-1] @ np.array([c, c])
    return ndimage.affine_transform(image, r[::-1, ::-1], offset=offset, order=order,
                                    mode="constant")


def mirror_image(image: np.ndarray) -> np.ndarray:
    """``Mir``: x → −x about the centre column N//2 (exact permutation, wrap for even N)."""
    n = image.shape[-1]
    cols = (2 * (n // 2) - np.arange(n)) % n
    return image[..., cols]


def shift_image(image: np.ndarray, shift_x: float, shift_y: float) -> np.ndarray:
    """``Sh_v``: content moves by ``(shift_x, shift_y)`` px (Fourier phase ramp, periodic)."""
    n = image.shape[-1]
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.rfftfreq(n)[None, :]
    ramp = np.exp(-2j * np.pi * (kx * shift_x + ky * shift_y))
    return np.fft.irfft2(np.fft.rfft2(image) * ramp, s=image.shape[-2:])


def view_directions(n_views: int, seed: int) -> np.ndarray:
    """``(rot, tilt)`` of ``n_views`` well-separated directions in the upper hemisphere
    (tilt ≤ 85°), so that no view is the mirror (opposite direction) of another: greedy
    farthest-point selection from a dense near-uniform grid, starting at a seeded point."""
    rng = np.random.default_rng(seed + 7919)
    n_grid = 4000
    golden = np.pi * (3.0 - np.sqrt(5.0))
    z = np.linspace(1.0, np.cos(np.deg2rad(85.0)), n_grid)
    phi = (np.arange(n_grid) * golden + rng.uniform(0, 2 * np.pi)) % (2 * np.pi)
    grid = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], -1)
    chosen = [int(rng.integers(n_grid))]
    dist = np.arccos(np.clip(grid @ grid[chosen[0]], -1, 1))
    for _ in range(n_views - 1):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.arccos(np.clip(grid @ grid[chosen[-1]], -1, 1)))
    d = grid[chosen]
    return np.stack([np.rad2deg(np.arctan2(d[:, 1], d[:, 0])) % 360,
                     np.rad2deg(np.arccos(d[:, 2]))], -1)


def simulate(settings: DemoSettings):
    """Simulate the demo dataset. Returns ``(images [n, N, N] float32, truth DataFrame,
    phantom [N, N, N], view projections [views, N, N])``."""
    s = settings
    rng = np.random.default_rng(s.seed)
    volume = phantom_volume(s.box, s.seed)
    angles = view_directions(s.views, s.seed)
    views = np.stack([project(volume, rot, tilt) for rot, tilt in angles])

    view = rng.integers(0, s.views, size=s.n_particles)
    psi = rng.uniform(-180.0, 180.0, size=s.n_particles)
    mirror = rng.random(s.n_particles) < s.mirror_fraction
    origin = rng.normal(0.0, s.shift_std, size=(s.n_particles, 2))
    clean = np.empty((s.n_particles, s.box, s.box))
    for i in range(s.n_particles):
        img = rotate_image(views[view[i]], psi[i])
        if mirror[i]:
            img = mirror_image(img)
        clean[i] = shift_image(img, -origin[i, 0], -origin[i, 1])

    truth = pd.DataFrame({"cryosnakeView": view + 1, "rlnAnglePsi": psi,
                          "rlnOriginXAngst": origin[:, 0] * s.sampling,
                          "rlnOriginYAngst": origin[:, 1] * s.sampling,
                          "cryosnakeMirror": mirror.astype(int)})
    # 3D pose of each particle: E = M · Rz(ψ) · E_view with M = Ry(180°) for mirrored ones.
    e_view = geometry.euler_to_matrix(angles[view, 0], angles[view, 1], 0.0)
    e = geometry.euler_to_matrix(0.0, 0.0, psi) @ e_view
    e = np.where(mirror[:, None, None], np.diag([-1.0, 1.0, -1.0]) @ e, e)
    truth["rlnAngleRot"], truth["rlnAngleTilt"], truth["rlnAnglePsi3D"] = (
        geometry.matrix_to_euler(e))

    if s.ctf:
        du = rng.uniform(s.defocus_min, s.defocus_max, s.n_particles)
        dv = du * rng.uniform(0.95, 1.0, s.n_particles)
        ctf = CTFParams(du, dv, rng.uniform(0, 180, s.n_particles), s.voltage,
                        s.spherical_aberration, s.amplitude_contrast)
        clean = apply_ctf(clean, ctf, s.sampling)
        truth["rlnDefocusU"], truth["rlnDefocusV"] = du, dv
        truth["rlnDefocusAngle"] = ctf.defocus_angle

    signal_var = clean.var(axis=(1, 2)).mean()
    noise_std = np.sqrt(signal_var / s.snr)
    images = clean + rng.normal(0.0, noise_std, size=clean.shape)
    truth["cryosnakeNoiseStd"] = noise_std
    return images.astype(np.float32), truth, volume, views


def write(settings: DemoSettings, folder) -> None:
    """Write ``particles.mrcs``, ``particles.star`` (RELION 3.1), ``ground_truth.star``,
    ``phantom.mrc`` and ``views.mrcs`` into ``folder``. ``rlnImageName`` points at the stack by
    a path relative to the current working directory (RELION's rule)."""
    folder = Path(folder)
    images, truth, volume, views = simulate(settings)
    stack = folder / "particles.mrcs"
    names = [f"{i + 1:06d}@{stack}" for i in range(len(images))]
    particles = pd.DataFrame({"rlnImageName": names, "rlnOpticsGroup": 1})
    ctf_cols = ["rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"]
    if settings.ctf:
        particles[ctf_cols] = truth[ctf_cols].to_numpy()
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnImagePixelSize": [settings.sampling],
                           "rlnImageSize": [settings.box], "rlnImageDimensionality": [2],
                           "rlnVoltage": [settings.voltage],
                           "rlnSphericalAberration": [settings.spherical_aberration],
                           "rlnAmplitudeContrast": [settings.amplitude_contrast]})
    if settings.ctf:  # the demo applies the CTF itself and does not flip, like RELION
        optics[PHASE_FLIP_COLUMN] = 0
    mrc.write_stack(stack, images, settings.sampling)
    mrc.write_stack(folder / "views.mrcs", views, settings.sampling)
    mrc.write_volume(folder / "phantom.mrc", volume, settings.sampling)
    star.write_table(folder / "ground_truth.star", truth.assign(rlnImageName=names), "truth")
    star.write_particles(folder / "particles.star", particles, optics)
