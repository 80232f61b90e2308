"""Benchmark of Reconstruct Significant: seconds per iteration (not collected by pytest).

Default problem (the issue's): 80 simulated class averages of 64 px (projections of a procedural
asymmetric phantom, SNR 3), c1, 5 degrees sampling, 50 iterations, random start. Example::

    python tests/benchmarks/bench_significant.py --iterations 5
    python tests/benchmarks/bench_significant.py --backend cpu --size 64 --images 80
    python tests/benchmarks/bench_significant.py --backend cuda --iterations 5

``--backend cuda`` runs the kernels (slices, insertion, peak refinement) on the GPU and prints
the device name first; the FFTs, ring products and statistics of the algorithm stay on the host.

Prints the wall and CPU time of each iteration, the number of significant rows, and the mean
seconds per iteration (the first, which includes numba compilation when the cache is cold, is
reported apart). The CPU time (all threads) is the figure to compare on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from significant_phantom import gaussian_phantom, simulated_averages  # noqa: E402

from cryosnake.kernels import get_backend  # noqa: E402
from cryosnake.significant import SignificantSettings, initial_volume, run_iteration  # noqa: E402
from cryosnake.volume3d.fsc import align_volume, resolution_period  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"],
                    help="kernel backend (cpu)")
    ap.add_argument("--size", type=int, default=64, help="box size in pixels (64)")
    ap.add_argument("--images", type=int, default=80, help="number of averages (80)")
    ap.add_argument("--sampling", type=float, default=5.0, help="angular sampling, deg (5)")
    ap.add_argument("--symmetry", default="c1")
    ap.add_argument("--iterations", type=int, default=50, help="iterations to run (50)")
    ap.add_argument("--schedule", type=int, default=None,
                    help="length of the alpha schedule (default: --iterations); run fewer "
                         "iterations of a 50-iteration schedule with --schedule 50")
    ap.add_argument("--snr", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true",
                    help="skip the comparison of the result with the phantom")
    args = ap.parse_args(argv)

    fold = int(args.symmetry[1:]) if args.symmetry.startswith("c") and args.symmetry != "c1" \
        else 1
    phantom = gaussian_phantom(args.size, seed=3, fold=fold)
    images, *_ = simulated_averages(phantom, args.images, args.snr, seed=4)
    schedule = args.schedule or args.iterations
    st = SignificantSettings(symmetry=args.symmetry, angular_sampling=args.sampling,
                             iterations=schedule, seed=args.seed)
    print(f"cryosnake bench_significant: {args.images} x {args.size} px, {args.symmetry}, "
          f"{args.sampling} deg, schedule {schedule} iterations, backend {args.backend}, "
          f"threads {os.cpu_count()}")
    backend = get_backend(args.backend)  # fails early, with the reason, where it cannot run
    if args.backend == "cuda":
        from cryosnake.kernels.cuda.runtime import device_name

        print(f"device: {device_name()}", flush=True)
    t0 = time.perf_counter()
    vol = initial_volume(images, st, backend=backend)
    print(f"initial volume: {time.perf_counter() - t0:.2f} s")
    times, cpu = [], []
    for it in range(1, args.iterations + 1):
        t, c = time.perf_counter(), time.process_time()
        vol, angles = run_iteration(images, vol, st, it, schedule, backend=backend)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        times.append(dt)
        cpu.append(dc)
        print(f"iteration {it:3d}: {dt:6.2f} s (cpu {dc:6.2f} s)  alpha "
              f"{angles.attrs['alpha']:.4f}  directions {angles.attrs['n_directions']}  "
              f"rows {len(angles)}", flush=True)
    steady = slice(1, None) if len(times) > 1 else slice(None)
    print(f"first iteration (includes compilation if the cache is cold): {times[0]:.2f} s")
    print(f"mean seconds per iteration (iterations 2..{len(times)}): "
          f"{np.mean(times[steady]):.2f} s wall, {np.mean(cpu[steady]):.2f} s cpu (all threads)")
    print(f"total: {sum(times):.1f} s")
    if not args.no_check:
        aligned, info = align_volume(vol, phantom, backend=backend)
        print(f"result vs phantom (mirrored: {info['mirrored']}): FSC 0.5 at "
              f"{resolution_period(aligned, phantom):.2f} px, FSC 0.143 at "
              f"{resolution_period(aligned, phantom, 0.143):.2f} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
