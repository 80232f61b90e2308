"""From particles to an initial volume, end to end through the workflow (a script, not a test).

Simulates particles of CFTR (PDB 6MSM, as :mod:`bench_quality2d`) with RELION's
``relion_project``: random orientations, CTF (defocus 1-3 µm, not phase-flipped), white noise
at ``--snr`` (on the signal before the CTF). Then, for each ``--presets`` entry, runs the real
Snakemake workflow (``--cores 2``, target ``significant``) on the RELION 3.1 STAR in a folder of
its own and reports:

* the class sizes: largest class share and its ratio to the mean class size, the share of
  classes above a third of the mean (issue 19's goals), classes of 5 particles or fewer, and
  how many averages Reconstruct Significant took;
* the class averages' resolution: per non-empty class, the FRC-0.5 against the clean
  projection of the true map it matches best (:func:`relion_sim.average_resolutions`),
  median and best;
* the initial volume's FSC-0.5 resolution (Å) against the true map, after aligning it
  (rotation, shift, hand: :func:`cryosnake.volume3d.fsc.align_volume`);
* the same for ``relion_reconstruct --ctf`` with the true poses (the best any pipeline can do
  with these particles);
* wall time.

    python tests/benchmarks/bench_pipeline.py --n 5000 --snr 0.05 --k 30 \\
        --presets no-reseed default recommended
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quality2d import simulate  # noqa: E402
from relion_sim import average_resolutions, soft_mask  # noqa: E402

from cryosnake.io import mrc, star  # noqa: E402
from cryosnake.volume3d.fsc import align_volume, resolution_period  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

#: workflow config presets: name -> (ml2d overrides, significant overrides)
PRESETS = {
    # the config: MLF2D, K classes, otherwise defaults (phase_flipped: false: RELION
    # particles are not phase-flipped); re-seeding and class selection are on by default
    "default": ({}, {}),
    # the seed's behaviour in 2D: an emptied class stays empty
    "no-reseed": ({"reseed_fraction": 0.0}, {}),
    # the defaults plus the particle mask (``--diameter``)
    "recommended": ({"particle_diameter": "diameter"}, {}),
    # ... and the MLF2D likelihood to 12 Å instead of 20 (better 2D classes at SNR 0.1)
    "recommended-12A": ({"particle_diameter": "diameter", "high_res_limit": 12.0}, {}),
}


def run_workflow(folder: Path, star_file: Path, args, preset: str, truth: np.ndarray) -> dict:
    ml2d_extra, sig_extra = PRESETS[preset]
    ml2d_extra = {k: args.diameter if v == "diameter" else v for k, v in ml2d_extra.items()}
    config = {"particles": str(star_file), "outdir": "results",
              "ml2d": {"fourier": True, "classes": args.k, "max_iterations": args.iterations,
                       "phase_flipped": False, **ml2d_extra},
              "significant": {**sig_extra}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                    "--configfile", "config.yaml", "--cores", "2", "significant"],
                   cwd=folder, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    res = folder / "results"
    counts = star.read_blocks(res / "ml2d/classes.star")["classes"]
    counts = counts["cryosnakeParticleCount"].to_numpy()
    info = json.loads((res / "significant/input/info.json").read_text())
    averages = mrc.read(res / "ml2d/classes.mrcs")
    resolution = average_resolutions(averages[counts > 0], truth, args.sampling,
                                     soft_mask(args.box, 0.45 * args.box))
    return {"volume": mrc.read(res / "significant/volume.mrc"), "wall_s": wall,
            "largest_class": float(counts.max() / counts.sum()),
            "largest_over_mean": float(counts.max() / counts.mean()),
            "above_third_of_mean": float((counts > counts.mean() / 3).mean()),
            "classes_le5": int((counts <= 5).sum()), "averages_used": int(info["n_images"]),
            "median_average_A": float(np.nanmedian(resolution)),
            "best_average_A": float(np.nanmin(resolution))}


def true_pose_volume(folder: Path, star_file: Path) -> np.ndarray:
    out = folder / "true_poses.mrc"
    if not out.exists():
        subprocess.run(["relion_reconstruct", "--i", str(star_file), "--o", str(out), "--ctf"],
                       check=True, capture_output=True)
    return mrc.read(out)


def resolution_A(volume: np.ndarray, truth: np.ndarray, sampling: float) -> float:
    """FSC-0.5 resolution (Å) of ``volume`` against ``truth`` after alignment (the volume is
    resampled to the truth's box first when they differ)."""
    if volume.shape != truth.shape:
        from cryosnake.volume3d.volume_ops import fourier_resize

        volume = fourier_resize(volume, truth.shape[0])
    aligned, _ = align_volume(volume, truth)
    return resolution_period(aligned, truth) * sampling


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--sampling", type=float, default=3.2)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--shift", type=float, default=2.0)
    p.add_argument("--snr", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--iterations", type=int, default=20, help="ml2d.max_iterations")
    p.add_argument("--presets", nargs="+", default=list(PRESETS))
    p.add_argument("--diameter", type=float, default=170.0, help="Å")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=Path("bench_pipeline"))
    args = p.parse_args(argv)
    args.random_views, args.views, args.view_step = True, 0, 0.0  # for simulate()

    rows = []
    for snr in args.snr:
        folder = args.out / f"n{args.n}_random_snr{snr:g}_ctf"
        simulate(folder, args, snr, True)
        truth = mrc.read(args.out / "volume.mrc")
        star_file = folder / "particles.star"
        best = resolution_A(true_pose_volume(folder, star_file), truth, args.sampling)
        rows.append({"snr": snr, "run": "true poses (relion_reconstruct)", "fsc05_A": best})
        print(json.dumps(rows[-1]), flush=True)
        for preset in args.presets:
            run = folder / (f"run_{preset}" if args.k == 30 else f"run_{preset}_k{args.k}")
            r = run_workflow(run, star_file.resolve(), args, preset, truth)
            vol = r.pop("volume")
            rows.append({"snr": snr, "run": preset, **r,
                         "fsc05_A": resolution_A(vol, truth, args.sampling)})
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
