"""Benchmark data and scores shared by the quality benchmarks (scripts, not tests).

* :func:`structure_map`: a density map of a real structure (a PDB read with ``gemmi``; atoms
  as Gaussians weighted by their atomic number, computed on a 2x finer grid and Fourier-cropped,
  centre of mass on the box centre ``N // 2``).
* :func:`relion_project`: clean projections with RELION 3.1's own ``relion_project`` (optionally
  with each particle's CTF), for given Euler angles, origins and CTF parameters.
* :func:`add_noise`: white Gaussian noise at a given SNR (variance of the clean particles over
  the box / noise variance).
* :func:`run_relion_class2d`: RELION 3.1 ``relion_refine`` 2D classification on a STAR file;
  returns per-particle classes and the class averages.
* the scores (class recovery, fidelity of a class average to a clean view after the best
  in-plane rotation, mirror and shift) come from :mod:`cryosnake.scores`.

Needs RELION 3.1 on the PATH (``apt-get install -y relion`` on Debian 12) and ``gemmi``
(``pip install gemmi``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from cryosnake.io import mrc
from cryosnake.scores import (  # noqa: F401
    adjusted_rand_index,
    aligned_ncc,
    masked_unit,
    soft_mask,
)

#: Atomic numbers of the elements of a protein (the rest counts as carbon).
_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "S": 16, "P": 15, "SE": 34, "MG": 12, "ZN": 30}


def structure_map(pdb_path, box: int, sampling: float, bfactor_sigma: float = 1.0) -> np.ndarray:
    """Density ``[z, y, x]`` of the structure in ``pdb_path`` (Å, centred on its centre of
    mass), ``box`` voxels of ``sampling`` Å, scaled to unit standard deviation."""
    import gemmi

    st = gemmi.read_structure(str(pdb_path))
    st.remove_hydrogens()
    st.remove_ligands_and_waters()
    atoms = [(a.pos.tolist(), _Z.get(a.element.name.upper(), 6))
             for ch in st[0] for r in ch for a in r]
    pos = np.array([p for p, _ in atoms])
    z = np.array([w for _, w in atoms], dtype=np.float64)
    pos -= (pos * z[:, None]).sum(0) / z.sum()
    fine, s = 2 * box, sampling / 2
    grid = np.zeros((fine, fine, fine))
    idx = np.rint(pos / s + fine // 2).astype(int)  # (x, y, z) voxels
    ok = ((idx >= 0) & (idx < fine)).all(axis=1)
    np.add.at(grid, (idx[ok, 2], idx[ok, 1], idx[ok, 0]), z[ok])
    # Gaussian atoms: multiply the spectrum, then keep the central box^3 frequencies
    k = np.fft.fftfreq(fine)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    sigma_px = bfactor_sigma / s
    spec = np.fft.fftn(np.fft.ifftshift(grid)) * np.exp(-2 * (np.pi * sigma_px) ** 2
                                                         * (kx**2 + ky**2 + kz**2))
    spec = np.fft.fftshift(spec)
    c, h = fine // 2, box // 2
    crop = spec[c - h : c - h + box, c - h : c - h + box, c - h : c - h + box]
    vol = np.real(np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(crop))))
    return (vol / vol.std()).astype(np.float32)


def particle_table(rot, tilt, psi, origin_px, sampling: float, box: int, ctf=None,
                   stack: str | None = None) -> dict[str, pd.DataFrame]:
    """RELION 3.1 STAR blocks for projections: angles (deg), origins ``[n, 2]`` (px, RELION's
    sign), optional CTF ``dict`` of per-particle ``defocus_u``, ``defocus_v``,
    ``defocus_angle`` (Å, deg) at 300 kV, Cs 2.7 mm, Q0 0.1."""
    n = len(rot)
    particles = pd.DataFrame({
        "rlnAngleRot": rot, "rlnAngleTilt": tilt, "rlnAnglePsi": psi,
        "rlnOriginXAngst": origin_px[:, 0] * sampling,
        "rlnOriginYAngst": origin_px[:, 1] * sampling,
        "rlnOpticsGroup": np.ones(n, int),
    })
    if stack is not None:
        particles.insert(0, "rlnImageName", [f"{i + 1:06d}@{stack}" for i in range(n)])
    if ctf is not None:
        particles["rlnDefocusU"] = ctf["defocus_u"]
        particles["rlnDefocusV"] = ctf["defocus_v"]
        particles["rlnDefocusAngle"] = ctf["defocus_angle"]
    optics = pd.DataFrame({
        "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnImagePixelSize": [sampling], "rlnImageSize": [box],
        "rlnImageDimensionality": [2], "rlnVoltage": [300.0],
        "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
    })
    return {"optics": optics, "particles": particles}


def relion_project(volume_mrc, blocks, out_prefix: Path, ctf: bool) -> np.ndarray:
    """Projections of ``volume_mrc`` at the poses of ``blocks`` (:func:`particle_table`) by
    RELION's ``relion_project`` (with each particle's CTF when ``ctf``); ``[n, N, N]``."""
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    ang = out_prefix.with_suffix(".in.star")
    starfile.write(blocks, ang, overwrite=True)
    cmd = ["relion_project", "--i", str(volume_mrc), "--o", str(out_prefix), "--ang", str(ang)]
    if ctf:
        cmd.append("--ctf")
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return mrc.read(f"{out_prefix}.mrcs")


def add_noise(clean: np.ndarray, snr: float, rng) -> tuple[np.ndarray, float]:
    """``clean`` plus white Gaussian noise of variance ``var(clean) / snr`` (over the box)."""
    sigma = float(np.sqrt(clean.var() / snr))
    return (clean + rng.normal(0.0, sigma, clean.shape)).astype(np.float32), sigma


def relion_class2d(star, out_dir: Path, k: int, iterations: int, diameter_A: float, ctf: bool,
                   threads: int = 2, extra=(), seed: int = 1) -> dict:
    """RELION 3.1 Class2D (``relion_refine``) with the benchmark's sampling (issue 12):
    ``--psi_step 10 --oversampling 1`` (5° at the fine level), offsets 5 px in steps of 2,
    ``--tau2_fudge 2``, plus the GUI's defaults (zero mask, solvent flattening, norm and scale
    correction); ``seed``: RELION's ``--random_seed``. Returns ``classes`` (1-based, per
    particle, in input order), ``averages`` ``[K, N, N]``, ``seconds`` (wall) and the
    per-iteration seconds."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    cmd = ["relion_refine", "--i", str(star), "--o", str(out_dir / "run"), "--K", str(k),
           "--iter", str(iterations), "--tau2_fudge", "2", "--psi_step", "10",
           "--offset_range", "5", "--offset_step", "2", "--oversampling", "1",
           "--j", str(threads), "--particle_diameter", f"{diameter_A:.0f}", "--zero_mask",
           "--flatten_solvent", "--norm", "--scale", "--dont_combine_weights_via_disc",
           "--pool", "3", "--pad", "2", "--random_seed", str(seed), *extra]
    if ctf:
        cmd.append("--ctf")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    stamps = []
    for _ in proc.stdout:
        found = sorted(out_dir.glob("run_it*_model.star"))
        if len(found) > len(stamps):
            stamps += [time.perf_counter() - start] * (len(found) - len(stamps))
    if proc.wait() != 0:
        raise RuntimeError(f"relion_refine failed (see {out_dir})")
    seconds = time.perf_counter() - start
    last = sorted(out_dir.glob("run_it*_data.star"))[-1]
    data = starfile.read(last)["particles"]
    order = np.argsort([int(n.split("@")[0]) for n in data["rlnImageName"]], kind="stable")
    return {"classes": data["rlnClassNumber"].to_numpy()[order].astype(int),
            "averages": mrc.read(str(last).replace("_data.star", "_classes.mrcs")),
            "seconds": seconds, "iteration_seconds": np.diff([0.0, *stamps])}


# --- scores ---------------------------------------------------------------------------------


def direction_spread(labels, rot, tilt) -> float:
    """Median over particles of the angle (deg) between a particle's true viewing direction
    and its class's axis (the principal axis of the members' directions, so that a direction
    and its opposite, mirror images of each other, count as one). Random classes give ~57°."""
    r, t = np.deg2rad(rot), np.deg2rad(tilt)
    d = np.stack([np.cos(r) * np.sin(t), np.sin(r) * np.sin(t), np.cos(t)], axis=1)
    angles = np.full(len(d), np.nan)
    for k in np.unique(labels):
        sel = np.flatnonzero(labels == k)
        axis = np.linalg.eigh(d[sel].T @ d[sel])[1][:, -1]
        angles[sel] = np.degrees(np.arccos(np.clip(np.abs(d[sel] @ axis), 0.0, 1.0)))
    return float(np.median(angles))


def hemisphere_directions(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rot, tilt)`` (deg) of ``n`` directions on a Fibonacci hemisphere (tilt 0-90°; a
    direction and its opposite project to mirror images)."""
    i = np.arange(n) + 0.5
    return np.degrees(np.pi * (1.0 + 5.0**0.5) * i) % 360.0, np.degrees(np.arccos(i / n))


def frc_resolution(a: np.ndarray, b: np.ndarray, sampling: float,
                   threshold: float = 0.5) -> float:
    """Å: the period of the first ring where the Fourier ring correlation of ``a`` and ``b``
    falls below ``threshold`` (Nyquist if it never does)."""
    n = a.shape[-1]
    fa, fb = np.fft.rfft2(a), np.fft.rfft2(b)
    ring = np.rint(np.hypot(*np.meshgrid(np.fft.fftfreq(n) * n, np.fft.rfftfreq(n) * n,
                                         indexing="ij"))).astype(int).ravel()
    nr = n // 2 + 1

    def rsum(x):
        return np.bincount(ring, x.ravel(), minlength=nr)[:nr]

    frc = rsum(np.real(fa * np.conj(fb))) / np.sqrt(rsum(np.abs(fa) ** 2) * rsum(np.abs(fb) ** 2)
                                                   + 1e-30)
    below = np.flatnonzero(frc[1: n // 2] < threshold)
    ring_ok = n // 2 if below.size == 0 else max(int(below[0]), 1)  # last ring above
    return n * sampling / ring_ok


def average_resolutions(averages: np.ndarray, volume: np.ndarray, sampling: float,
                        mask: np.ndarray, n_directions: int = 500,
                        psi_step: float = 5.0) -> np.ndarray:
    """Å, per class average: its FRC-0.5 resolution against the clean projection of the true
    map that it matches best (``n_directions`` on a hemisphere, in-plane rotation in steps
    of ``psi_step``, mirror and integer shift by normalised cross-correlation inside
    ``mask``). Averages that are 0 everywhere get NaN."""
    from cryosnake.kernels import cpu
    from cryosnake.volume3d.projector import project

    n = averages.shape[-1]
    rot, tilt = hemisphere_directions(n_directions)
    proj = project(np.asarray(volume, np.float32), rot, tilt, 0.0).astype(np.float64)
    pf = np.conj(np.fft.rfft2(masked_unit(proj, mask)))
    angles = np.arange(0.0, 360.0, psi_step)
    mirror_x = (2 * (n // 2) - np.arange(n)) % n
    out = np.full(len(averages), np.nan)
    for a, avg in enumerate(np.asarray(averages, np.float64)):
        if not np.any(avg):
            continue
        cands = np.concatenate([cpu.rotate_images(np.repeat(img[None], len(angles), 0), angles,
                                                  order=1)
                                for img in (avg, avg[:, mirror_x])])
        cf = np.fft.rfft2(masked_unit(cands, mask))
        best, arg = -np.inf, None
        for v0 in range(0, n_directions, 16):
            cc = np.fft.irfft2(cf[:, None] * pf[None, v0:v0 + 16], s=(n, n))
            i = int(np.argmax(cc))
            if cc.flat[i] > best:
                c, v, y, x = np.unravel_index(i, cc.shape)
                best, arg = cc.flat[i], (c, v0 + v, y, x)
        c, v, y, x = arg
        img = avg if c < len(angles) else avg[:, mirror_x]
        aligned = cpu.rotate_images(img[None], angles[c % len(angles)][None], order=3)[0]
        aligned = np.roll(aligned, (-y, -x), axis=(0, 1))
        out[a] = frc_resolution(aligned * mask, proj[v] * mask, sampling)
    return out


def class_scores(labels, averages, truth, views, mask, rot=None, tilt=None) -> dict:
    """ARI of ``labels`` against the true views ``truth``, and the NCC of every non-empty
    class average to its best clean view (median, and per view the best class). With random
    orientations (no discrete views: ``rot``, ``tilt`` given) the direction spread of the
    classes (:func:`direction_spread`) and the number of classes of 5 particles or fewer."""
    counts = np.bincount(np.asarray(labels) - 1, minlength=len(averages))
    used = np.flatnonzero(counts > 0)
    if rot is not None:
        return {"spread_deg": direction_spread(np.asarray(labels), rot, tilt),
                "largest_class": float(counts.max() / counts.sum()),
                "classes_le5": int((counts <= 5).sum()),
                "classes_used": int(len(used))}
    ncc = aligned_ncc(averages[used], views, mask)
    return {"ari": adjusted_rand_index(labels, truth),
            "median_ncc": float(np.median(ncc.max(axis=1))),
            "views_found": int(len(set(ncc.argmax(axis=1)))),
            "largest_class": float(counts.max() / counts.sum()),
            "classes_used": int(len(used))}
