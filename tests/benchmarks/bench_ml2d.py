"""ML2D throughput benchmark (a script, not a test).

Simulates ``--n`` particles (default 6000) of ``--size`` px (64) from ``--classes`` (10)
asymmetric views (SNR 0.1, random psi, Gaussian shifts of 2 px, 50 % mirrored), then runs
ML2D exactly as the workflow does: iteration 0 against the global average with random groups
(generate classes), then full iterations. Prints the seconds of every iteration and, for the
iterations after the first K-class one (which is complete in fast mode by design), the mean
seconds per iteration and particle-iterations per second. Times are wall-clock of real
E-step + M-step calls (numba compilation happens before the clock starts).

    python tests/benchmarks/bench_ml2d.py --n 6000 --mode both
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml2d_sim import make_views, simulate  # noqa: E402

from cryosnake.kernels import get_backend  # noqa: E402
from cryosnake.ml2d import ML2DSettings, ParticleState, estep, mstep  # noqa: E402
from cryosnake.ml2d.init import initial_model_from_average, random_group_labels  # noqa: E402


def run(images, settings, iterations, backend, chunk):
    n = len(images)
    bounds = [(a, min(n, a + chunk)) for a in range(0, n, chunk)]

    def one(model, states, labels=None):
        t0 = time.perf_counter()
        total, new_states = None, []
        for c, (a, b) in enumerate(bounds):
            lab = None if labels is None else labels[a:b]
            s, _, st = estep(images[a:b], model, settings, states[c], lab, backend=backend)
            total = s if total is None else total + s
            new_states.append(st)
        new = mstep(model, total, settings)
        return new, new_states, time.perf_counter() - t0

    model = initial_model_from_average(images.mean(axis=0), settings)
    states = [ParticleState.initial(b - a, 1, settings) for a, b in bounds]
    labels = random_group_labels(n, settings.n_classes, settings.seed)
    model, states, t = one(model, states, labels)
    print(f"  iteration 0 (1 reference, K groups): {t:7.2f} s", flush=True)
    times = []
    for it in range(1, iterations + 1):
        model, states, t = one(model, states)
        times.append(t)
        print(
            f"  iteration {it}: {t:7.2f} s   avePmax {model.ave_pmax:.3f}  "
            f"sigma {model.sigma_noise:.3f}  xi {model.sigma_offset:.2f}",
            flush=True,
        )
    later = times[1:] if len(times) > 1 else times
    mean = float(np.mean(later))
    print(
        f"  => {mean:.2f} s/iteration (iterations 2..{iterations}), "
        f"{n / mean:.0f} particle-iterations/s",
        flush=True,
    )
    return mean


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=6000, help="particles")
    p.add_argument("--size", type=int, default=64, help="box size (px)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--psi-step", type=float, default=5.0)
    p.add_argument("--iterations", type=int, default=3, help="K-class iterations after it. 0")
    p.add_argument("--mode", choices=("fast", "full", "both"), default="both")
    p.add_argument("--precision", choices=("single", "double"), default="single")
    p.add_argument("--chunk", type=int, default=None, help="particles per E-step job")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)

    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    views = make_views(a.classes, a.size, rng, max_similarity=0.9)
    images, truth = simulate(views, a.n, rng, snr=0.1, offset_std=2.0)
    print(
        f"simulated {a.n} x {a.size}^2 particles, K={a.classes} in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    backend = get_backend(a.backend)
    chunk = a.chunk or a.n
    modes = ("fast", "full") if a.mode == "both" else (a.mode,)
    # compile every numba kernel once, outside the clock
    warm = ML2DSettings(n_classes=2, psi_step=45, precision=a.precision)
    m0 = initial_model_from_average(images[:8].mean(axis=0), warm)
    s, _, st = estep(images[:8], m0, warm, group_labels=np.arange(8) % 2, backend=backend)
    m1 = mstep(m0, s, warm)
    estep(images[:8], m1, warm, st, backend=backend)
    results = {}
    for mode in modes:
        settings = ML2DSettings(
            n_classes=a.classes,
            psi_step=a.psi_step,
            mirror=True,
            fast=mode == "fast",
            noise_std=float(truth["sigma"]),
            offset_std=3.0,
            precision=a.precision,
            seed=a.seed,
        )
        print(
            f"mode={mode} K={a.classes} psi_step={a.psi_step} mirror=on "
            f"precision={a.precision} backend={a.backend}",
            flush=True,
        )
        results[mode] = run(images, settings, a.iterations, backend, chunk)
    if len(results) == 2:
        print(f"fast speed-up after the first iteration: {results['full'] / results['fast']:.1f}x")


if __name__ == "__main__":
    main()
