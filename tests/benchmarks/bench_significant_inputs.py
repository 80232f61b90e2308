"""What Reconstruct Significant makes of a set of 2D averages (a script, not a test).

Runs Reconstruct Significant in process (defaults: c1, 5°, 50 iterations, random start) on

* ``--averages FILE``: a stack of averages (``.mrcs``), or a ``bench_quality2d`` result
  (``result_*.npz``: its class averages, the classes below a quarter of the mean size left
  out as ``significant.classes`` does by default); or
* ``--projections K``: ``K`` projections of the true map along random directions with random
  psi, low-passed to ``--lowpass`` Å (0 = none), plus white noise of ``--noise`` times their
  std -- view-pure averages, the best a 2D classification could hand over;

and prints the FSC-0.5 resolution (Å) of the volume against the true map after alignment
(rotation, shift and hand, as ``bench_pipeline``).

    python tests/benchmarks/bench_significant_inputs.py --truth bench_quality2d/volume.mrc \\
        --projections 30 --lowpass 20 --noise 0.3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import resolution_A  # noqa: E402

from cryosnake.io import mrc  # noqa: E402
from cryosnake.significant.iteration import (  # noqa: E402
    SignificantSettings,
    initial_volume,
    run_iteration,
)
from cryosnake.volume3d.projector import project  # noqa: E402
from cryosnake.volume3d.volume_ops import raised_cosine_lowpass  # noqa: E402


def read_averages(path: Path) -> np.ndarray:
    if path.suffix == ".npz":
        r = np.load(path)
        counts = np.bincount(r["labels"] - 1, minlength=len(r["averages"]))
        return r["averages"][counts >= 0.25 * counts.mean()].astype(np.float32)
    return mrc.read(path).astype(np.float32)


def projections(truth, k: int, lowpass: float, noise: float, sampling: float,
                seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rot = rng.uniform(0.0, 360.0, k)
    tilt = np.degrees(np.arccos(rng.uniform(-1.0, 1.0, k)))
    psi = rng.uniform(0.0, 360.0, k)
    n = truth.shape[0]
    out = np.stack([project(truth, r, t, p).reshape(n, n) for r, t, p in zip(rot, tilt, psi,
                                                                           strict=True)])
    if lowpass > 0:
        out = np.stack([raised_cosine_lowpass(a, sampling / lowpass) for a in out])
    return (out + noise * out.std() * rng.normal(size=out.shape)).astype(np.float32)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--truth", type=Path, required=True, help="the true map (MRC)")
    p.add_argument("--sampling", type=float, default=3.2, help="Å/px")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--averages", type=Path)
    src.add_argument("--projections", type=int)
    p.add_argument("--lowpass", type=float, default=0.0, help="Å (with --projections)")
    p.add_argument("--noise", type=float, default=0.3, help="noise std / signal std")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)

    truth = mrc.read(args.truth).astype(np.float32)
    averages = (read_averages(args.averages) if args.averages is not None else
                projections(truth, args.projections, args.lowpass, args.noise, args.sampling,
                            args.seed))
    settings = SignificantSettings(iterations=args.iterations)
    volume = initial_volume(averages, settings, args.sampling)
    for it in range(1, args.iterations + 1):
        volume, _ = run_iteration(averages, volume, settings, it, sampling_A=args.sampling)
    print(f"{len(averages)} averages: FSC-0.5 {resolution_A(volume, truth, args.sampling):.1f} Å")


if __name__ == "__main__":
    main()
