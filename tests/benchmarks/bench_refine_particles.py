"""What a soft maximum-likelihood 3D refinement against the particles makes of a start volume
(a script, not a test; issue 19: is the initial volume limited by its resolution or by its
shape?).

The refinement, in process, on a ``bench_quality2d`` case with CTF (its ``particles.mrcs``,
``truth.npz`` and the true map ``../volume.mrc``):

1. the references are projections of the current volume along the directions of a hemisphere
   (``--angular-sampling``; the E-step's mirrors cover the other half: the mirror image of the
   projection along ``d`` is the projection along ``-d``);
2. one MLF2D E-step per particle half (CTF, coloured noise per defocus group, psi, mirrors and
   shifts marginalised; likelihood to ``--limit`` Å, then to the half-set FSC-0.143
   resolution of the previous iteration); gold standard: each half of the particles has a
   volume of its own from the start on (low-passed to ``--start-lowpass``, by default
   ``--limit``), so the FSC between them
   is not inflated by a shared reference;
3. the E-step's class sums (``sum gamma CTF X / sigma^2`` back-rotated into the reference frame
   and ``sum gamma <CTF^2> / sigma^2`` per shell) are the central slices of the directions:
   :func:`cryosnake.volume3d.reconstruct.shell_sums` puts them in 3D, one volume per half;
4. each half's volume, FSC-weighted (``sqrt(2 FSC / (1 + FSC))``, 0 beyond FSC 0.143) and
   masked, is its next reference; the combined volume, weighted the same, is the result.

The start is an MRC volume (``--start results/significant/volume.mrc``; its scale is fitted to
the particles by weighted least squares on a first E-step of 500 particles) or
``--start truth:40``, the true map low-passed to 40 Å, or ``--start random:1``, the particles
reconstructed at random orientations (an ab-initio start). Prints per iteration the
log-likelihood per particle (comparable between starts at the same limit), the half-set
FSC-0.143 resolution and the FSC-0.5 against the true map after alignment (rotation, shift,
hand).

    python tests/benchmarks/bench_refine_particles.py \\
        --case bench_quality2d/n3000_random_snr0.05_ctf --start truth:40
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import resolution_A  # noqa: E402

from cryosnake.ctf import CTFParams  # noqa: E402
from cryosnake.io import mrc  # noqa: E402
from cryosnake.mlf2d import MLF2DSettings  # noqa: E402
from cryosnake.mlf2d.estep import estep  # noqa: E402
from cryosnake.mlf2d.groups import defocus_groups  # noqa: E402
from cryosnake.mlf2d.initial import start_model, start_statistics  # noqa: E402
from cryosnake.significant.initial import random_orientations  # noqa: E402
from cryosnake.significant.sampling import gallery_directions  # noqa: E402
from cryosnake.volume3d.fsc import fsc  # noqa: E402
from cryosnake.volume3d.projector import project  # noqa: E402
from cryosnake.volume3d.reconstruct import (  # noqa: E402
    reconstruct,
    shell_sums,
    volume_from_shell_sums,
)
from cryosnake.volume3d.volume_ops import raised_cosine_lowpass, spherical_mask  # noqa: E402


def _rfft_shell(n: int) -> np.ndarray:
    ky = np.fft.fftfreq(n, 1.0 / n)
    return np.rint(np.hypot(ky[:, None], np.arange(n // 2 + 1)[None])).astype(np.int64)


def fitted_scale(sums, references: np.ndarray) -> float:
    """Weighted least-squares scale of the references to the data of an E-step:
    ``sum Re(F_k conj P_k) / sum Den_k(l) |P_k|^2`` over classes and Fourier points."""
    n = references.shape[-1]
    shell = np.minimum(_rfft_shell(n), n // 2)
    den = np.concatenate([sums.ref_denominator, np.zeros((len(references), 1))], axis=1)
    F = np.fft.rfft2(sums.ref_sum)
    P = np.fft.rfft2(references)
    return float(np.sum(np.real(F * np.conj(P))) / np.sum(den[:, shell] * np.abs(P) ** 2))


def fsc_filter(volume, half1, half2, sampling: float, top: int) -> tuple[np.ndarray, float]:
    """``volume`` weighted by ``sqrt(2 FSC / (1 + FSC))`` of the two (unmasked) halves, 0 from
    the first shell below 0.143 and beyond shell ``top`` (the last the E-step sums hold);
    returns it and that resolution (Å)."""
    n = volume.shape[0]
    _, curve = fsc(half1, half2)
    below = np.flatnonzero(curve < 0.143)
    cut = min(int(below[0]) if len(below) else len(curve), top + 1)
    weight = np.zeros(n)
    weight[:cut] = np.sqrt(np.clip(2.0 * curve[:cut] / (1.0 + curve[:cut]), 0.0, 1.0))
    k = np.fft.fftfreq(n, 1.0 / n)
    r = np.rint(np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2
                        + np.arange(n // 2 + 1)[None, None] ** 2)).astype(np.int64)
    out = np.fft.irfftn(np.fft.rfftn(volume) * weight[np.minimum(r, n - 1)], s=volume.shape,
                        axes=(0, 1, 2))
    return out.astype(np.float32), (n * sampling / cut if cut else float("inf"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", type=Path, required=True, help="a bench_quality2d case with CTF")
    p.add_argument("--start", required=True,
                   help="MRC volume, truth:<lowpass Å>, or random:<seed> (the particles "
                        "reconstructed at random orientations)")
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--angular-sampling", type=float, default=15.0, help="degrees")
    p.add_argument("--limit", type=float, default=25.0, help="first likelihood limit (Å)")
    p.add_argument("--start-lowpass", type=float, default=0.0,
                   help="low-pass of the start (Å; default: --limit)")
    p.add_argument("--diameter", type=float, default=170.0, help="particle mask (Å)")
    p.add_argument("--psi-step", type=float, default=10.0)
    p.add_argument("--sampling", type=float, default=3.2, help="Å/px")
    p.add_argument("--cross-score", action="store_true",
                   help="also score each half's particles against the other half's new "
                        "volume (cross-validated log-likelihood per particle; one more E-step)")
    args = p.parse_args(argv)

    s = args.sampling
    images = mrc.read(args.case / "particles.mrcs").astype(np.float32)
    n_img, n = images.shape[0], images.shape[-1]
    t = np.load(args.case / "truth.npz")
    ctf = CTFParams(t["ctf_defocus_u"], t["ctf_defocus_v"], t["ctf_defocus_angle"],
                    np.full(n_img, 300.0), np.full(n_img, 2.7), np.full(n_img, 0.1))
    truth = mrc.read(args.case.parent / "volume.mrc").astype(np.float32)
    if args.start.startswith("truth:"):
        volume = raised_cosine_lowpass(truth, s / float(args.start.split(":")[1]))
    elif args.start.startswith("random:"):  # the particles at random orientations (c1)
        rot, tilt, psi = random_orientations(n_img, int(args.start.split(":")[1]))
        volume = spherical_mask(reconstruct(images, rot, tilt, psi))
    else:
        volume = mrc.read(args.start).astype(np.float32)
    rot, tilt = gallery_directions("c1", args.angular_sampling, 0.0, 90.0)
    zeros = np.zeros(len(rot))
    groups, group_defocus = defocus_groups(ctf, n_img, 1000.0, 20)
    halves = [np.flatnonzero(np.arange(n_img) % 2 == h) for h in (0, 1)]
    volume = raised_cosine_lowpass(volume, s / (args.start_lowpass or args.limit))
    limit = args.limit
    print(f"{n_img} particles, {len(rot)} directions x mirrors, start {args.start}: "
          f"FSC-0.5 vs truth {resolution_A(volume, truth, s):.1f} Å", flush=True)

    def settings_for(lim):
        return MLF2DSettings(n_classes=len(rot), psi_step=args.psi_step, mirror=True,
                             fast=False, high_res_limit=lim, particle_diameter=args.diameter,
                             ctf_correction=True, phase_flipped=False)

    # power spectra per defocus group: independent of the volume and of the limit
    stats = start_statistics(images, ctf, groups, len(group_defocus), s, settings_for(limit))

    def model_for(vol, lim):
        settings = settings_for(lim)
        refs = project(spherical_mask(vol), rot, tilt, 0.0).astype(np.float64)
        return settings, start_model(stats, settings, s, n, group_defocus, refs)

    if not args.start.startswith("truth:"):  # the start's scale, from 500 particles
        settings, model = model_for(volume, limit)
        rows = np.arange(min(500, n_img))
        sums, _, _ = estep(images[rows], model, settings, ctf.subset(rows), groups[rows])
        scale = fitted_scale(sums, model.references)
        volume = volume * scale
        print(f"start scaled by {scale:.4g} (weighted least squares, 500 particles)")
    volumes = [volume, volume]
    print("| iteration | limit (Å) | median Pmax | log-likelihood / particle | half-set FSC-0.143 "
          "(Å) | vs truth FSC-0.5 (Å) | s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for it in range(1, args.iterations + 1):
        t0 = time.perf_counter()
        parts, pmax, loglik = [], [], 0.0
        for rows, vol in zip(halves, volumes, strict=True):
            settings, model = model_for(vol, limit)
            sums, a, _ = estep(images[rows], model, settings, ctf.subset(rows), groups[rows])
            used = sums.class_weight > 0
            parts.append(shell_sums(sums.ref_sum[used], sums.ref_denominator[used], rot[used],
                                    tilt[used], zeros[used]))
            pmax.append(a["max_posterior"])
            loglik += sums.loglik_sum / n_img
            top = model.extension_shell
        half1, half2 = (volume_from_shell_sums(num, den, n) for num, den in parts)
        full = volume_from_shell_sums(parts[0][0] + parts[1][0], parts[0][1] + parts[1][1], n)
        filtered, res_half = fsc_filter(full, half1, half2, s, top)
        volume = spherical_mask(filtered)
        volumes = [spherical_mask(fsc_filter(h, half1, half2, s, top)[0])
                   for h in (half1, half2)]
        print(f"| {it} | {limit:.1f} | {np.median(np.concatenate(pmax)):.3f} | {loglik:.2f} | "
              f"{res_half:.1f} | "
              f"{resolution_A(volume, truth, s):.1f} | {time.perf_counter() - t0:.0f} |",
              flush=True)
        if args.cross_score:
            cross = 0.0
            for rows, vol in zip(halves, volumes[::-1], strict=True):
                settings, model = model_for(vol, limit)
                sums, _, _ = estep(images[rows], model, settings, ctf.subset(rows), groups[rows])
                cross += sums.loglik_sum / n_img
            print(f"  cross-validated log-likelihood per particle at {limit:.1f} Å: {cross:.2f}",
                  flush=True)
        limit = max(2.5 * s, min(limit, res_half))


if __name__ == "__main__":
    main()
