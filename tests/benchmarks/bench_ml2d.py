"""ML2D throughput benchmark (a script, not a test).

Simulates ``--n`` particles (default 6000) of ``--size`` px (64) from ``--classes`` (10)
asymmetric views (SNR 0.1, random psi, Gaussian shifts of 2 px, 50 % mirrored), then runs
ML2D exactly as the workflow does: iteration 0 against the global average with random groups
(generate classes), then full iterations. Prints the seconds of every iteration and, for the
iterations after the first K-class one (which is complete in fast mode by design), the mean
seconds per iteration and particle-iterations per second. Times are wall-clock of real
E-step + M-step calls (numba compilation happens before the clock starts).

    python tests/benchmarks/bench_ml2d.py --n 6000 --mode both

``--backend cuda`` times the CUDA kernels instead of the CPU ones (on a GPU node with the
``cuda`` extra; the device name is printed first). Every kernel call returns host arrays, so
the wall-clock times include the transfers.

``--mlf2d`` benchmarks MLF2D instead (spec §2): the same views, each particle multiplied by
its CTF (defocus 1-3 µm, 300 kV, Cs 2.7 mm, Q0 0.1, astigmatism up to 5 %) before the noise,
``--sampling`` Å/px (4) and the ``--limit`` resolution (20 Å); the E-step gets the CTF of
its particles and the defocus groups, as in the workflow:

    python tests/benchmarks/bench_ml2d.py --mlf2d --n 6000 --mode fast
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml2d_sim import make_views, simulate  # noqa: E402

from cryosnake import mlf2d  # noqa: E402
from cryosnake.classify2d.classes import random_group_labels  # noqa: E402
from cryosnake.classify2d.state import ParticleState  # noqa: E402
from cryosnake.ctf import CTFParams, apply_ctf  # noqa: E402
from cryosnake.kernels import get_backend  # noqa: E402
from cryosnake.kernels.cpu import fft_workers  # noqa: E402
from cryosnake.ml2d import ML2DSettings, estep, mstep  # noqa: E402
from cryosnake.ml2d.initial import initial_model_from_average  # noqa: E402


def load_backend(name):
    """The kernel backend ``name``; prints the device it runs on."""
    backend = get_backend(name)
    if name == "cuda":
        from cryosnake.kernels.cuda.runtime import device_name

        print(f"backend cuda on {device_name()}", flush=True)
    else:
        print(f"backend cpu, {fft_workers()} threads", flush=True)
    return backend


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


def run_mlf2d(images, ctf, sampling, settings, iterations, backend, chunk):
    """MLF2D as the workflow runs it: start statistics, iteration 0 against the CTF-corrected
    global average with random groups, then K-class iterations (chunked E-steps)."""
    n = len(images)
    bounds = [(a, min(n, a + chunk)) for a in range(0, n, chunk)]
    groups, centres = mlf2d.defocus_groups(ctf, n, settings.defocus_bin, settings.min_group_size)
    t0 = time.perf_counter()
    stats = mlf2d.start_statistics(images, ctf, groups, len(centres), sampling, settings,
                                   backend)
    model = mlf2d.start_model(stats, settings, sampling, images.shape[-1], centres)
    print(f"  start model ({len(centres)} defocus groups, limit shell {model.shell_high}): "
          f"{time.perf_counter() - t0:7.2f} s", flush=True)

    def one(model, states, labels=None):
        t0, c0 = time.perf_counter(), time.process_time()
        total, new_states = None, []
        for c, (a, b) in enumerate(bounds):
            rows = np.arange(a, b)
            s, _, st = mlf2d.estep(images[a:b], model, settings, ctf.subset(rows), groups[a:b],
                                   states[c], None if labels is None else labels[a:b],
                                   backend=backend)
            total = s if total is None else total + s
            new_states.append(st)
        new = mlf2d.mstep(model, total, settings)
        return new, new_states, time.perf_counter() - t0, time.process_time() - c0

    labels = random_group_labels(n, settings.n_classes, settings.seed)
    model, _, t, cpu = one(model, [None] * len(bounds), labels)
    print(f"  iteration 0 (1 reference, K groups): {t:7.2f} s (CPU {cpu:.1f} s)", flush=True)
    states = [None] * len(bounds)  # iteration 1 starts afresh, as in the workflow
    times, cpus = [], []
    for it in range(1, iterations + 1):
        model, states, t, cpu = one(model, states)
        times.append(t)
        cpus.append(cpu)
        print(
            f"  iteration {it}: {t:7.2f} s (CPU {cpu:.1f} s)   avePmax {model.ave_pmax:.3f}  "
            f"sigma {model.sigma_noise:.3f}  xi {model.sigma_offset:.2f}",
            flush=True,
        )
    later = slice(1, None) if len(times) > 1 else slice(None)
    mean, mean_cpu = float(np.mean(times[later])), float(np.mean(cpus[later]))
    print(
        f"  => {mean:.2f} s/iteration (iterations 2..{iterations}), "
        f"{n / mean:.0f} particle-iterations/s; CPU {1e3 * mean_cpu / n:.2f} ms per "
        "particle-iteration (all threads; wall-clock figures need an otherwise idle machine)",
        flush=True,
    )
    return mean


def simulate_ctf(views, n, rng, sampling):
    """Noiseless particles of ``views`` times a CTF each (defocus 1-3 µm), then white noise at
    SNR 0.1 (variance of the CTF-affected particles / noise variance)."""
    clean, truth = simulate(views, n, rng, snr=np.inf, offset_std=2.0)
    du = rng.uniform(10000.0, 30000.0, n)
    ctf = CTFParams(du, du * rng.uniform(0.95, 1.0, n), rng.uniform(0.0, 180.0, n), 300.0, 2.7,
                    0.1)
    clean = apply_ctf(clean, ctf, sampling)
    sigma = np.sqrt(clean.var() / 0.1)
    images = (clean + rng.normal(0.0, sigma, clean.shape)).astype(np.float32)
    return images, ctf, sigma


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
    p.add_argument("--backend", choices=("cpu", "cuda"), default="cpu", help="kernel backend")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--mlf2d", action="store_true", help="MLF2D with CTF instead of ML2D")
    p.add_argument("--sampling", type=float, default=4.0, help="MLF2D: pixel size (Å/px)")
    p.add_argument("--limit", type=float, default=20.0, help="MLF2D: high_res_limit (Å)")
    a = p.parse_args(argv)
    if a.mlf2d:
        return main_mlf2d(a)

    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    views = make_views(a.classes, a.size, rng, max_similarity=0.9)
    images, truth = simulate(views, a.n, rng, snr=0.1, offset_std=2.0)
    print(
        f"simulated {a.n} x {a.size}^2 particles, K={a.classes} in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    backend = load_backend(a.backend)
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


def main_mlf2d(a):
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    views = make_views(a.classes, a.size, rng, max_similarity=0.9)
    images, ctf, sigma = simulate_ctf(views, a.n, rng, a.sampling)
    print(f"simulated {a.n} x {a.size}^2 particles with CTF, K={a.classes} in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    backend = load_backend(a.backend)
    chunk = a.chunk or a.n
    # compile every numba kernel once, outside the clock
    warm = mlf2d.MLF2DSettings(n_classes=2, psi_step=45, precision=a.precision)
    run_mlf2d(images[:16], ctf.subset(np.arange(16)), a.sampling, warm, 2, backend, 16)
    modes = ("fast", "full") if a.mode == "both" else (a.mode,)
    results = {}
    for mode in modes:
        settings = mlf2d.MLF2DSettings(
            n_classes=a.classes, psi_step=a.psi_step, mirror=True, fast=mode == "fast",
            offset_std=3.0, precision=a.precision, seed=a.seed, phase_flipped=False,
            high_res_limit=a.limit)
        print(f"MLF2D mode={mode} K={a.classes} psi_step={a.psi_step} mirror=on CTF "
              f"sampling={a.sampling} limit={a.limit} Å precision={a.precision} "
              f"backend={a.backend} (true noise std {sigma:.3f})", flush=True)
        results[mode] = run_mlf2d(images, ctf, a.sampling, settings, a.iterations, backend,
                                  chunk)
    if len(results) == 2:
        print(f"fast speed-up after the first iteration: {results['full'] / results['fast']:.1f}x")


if __name__ == "__main__":
    main()
