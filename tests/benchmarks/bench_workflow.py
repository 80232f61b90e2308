"""ML2D / MLF2D through the workflow against the same E-step + M-step in process (a script, not
a test; issue 16).

Runs the real Snakemake workflow (``python -m snakemake --cores CORES``, target
``ml2d/classes.mrcs``) on the built-in demo simulation (``--n`` particles of ``--box`` px at
``--snr``, with CTF for ``--fourier``), then, in the same run, :func:`cryosnake.ml2d.run.run_ml2d`
(:func:`cryosnake.mlf2d.run.run_mlf2d` with ``--fourier``) on the particles the workflow
imported, with the same settings and the jobs' thread count. Per iteration it prints:

* ``wall``: the workflow's time for the iteration, from the mtime of the previous M-step's
  ``model.json`` (the start model's for iteration 0) to this one's;
* ``jobs``: the summed wall of the iteration's jobs (E-steps + M-step), from Snakemake's
  ``benchmark:`` files (process start to exit);
* ``compute``: the summed time inside the jobs' bodies (the "done in" line of each rule log);
* ``start-up``: ``jobs - compute`` (Python, imports, numba cache load, reading the job's
  inputs), and ``sched.``: ``wall - jobs`` (Snakemake between jobs; negative where jobs ran
  side by side);
* ``in-proc``: the in-process iteration (E-step on all particles + M-step) and the ratio
  ``wall / in-proc``.

* ``E-step RSS``, ``M-step RSS``: the peak resident memory (MB) of the largest E-step job and
  of the M-step job (Snakemake's ``max_rss``).

* ``fast kept``: the mean over particles of the fraction of ``(class, psi, flip)`` blocks the
  fast search kept (the E-step's ``search_kept`` in the iteration's chunk assignments; 1.00
  for a complete search, as in iterations 0 and 1).

    python tests/benchmarks/bench_workflow.py --n 2000 --box 48 --k 5 --iterations 3

``--repo`` runs the workflow of another checkout (e.g. an older commit, for a before/after
table); the in-process run always uses the cryosnake this script imports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cryosnake.io.particles import ParticleStack  # noqa: E402
from cryosnake.kernels import get_backend  # noqa: E402
from cryosnake.pipeline.ml2d import settings_from_config  # noqa: E402
from cryosnake.pipeline.runtime import set_threads  # noqa: E402

_DONE = re.compile(r"\] done in ([0-9.]+) s")


def workflow_config(args) -> dict:
    config = {
        "particles": "demo",
        "demo": {"n_particles": args.n, "box": args.box, "snr": args.snr, "ctf": args.fourier,
                 "seed": args.seed},
        "ml2d": {"classes": args.k, "max_iterations": args.iterations, "fourier": args.fourier,
                 "fast": not args.full, "seed": args.seed},
        "compute": {"threads": args.threads, "backend": "cpu"},
    }
    if args.fourier:
        config["ml2d"]["phase_flipped"] = False
    if args.chunk_size is not None:
        config["compute"]["chunk_size"] = args.chunk_size
    return config


def run_workflow(folder: Path, repo: Path, cores: int) -> float:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--cores",
           str(cores), "--configfile", "config.yaml", "--", "results/ml2d/classes.mrcs"]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(proc.stdout[-4000:])
    return wall


def _bench(path: Path, column: str = "s") -> float:
    """One column of a Snakemake benchmark file: ``s`` (wall seconds), ``max_rss`` (MB)."""
    lines = path.read_text().splitlines()
    return float(lines[1].split("\t")[lines[0].split("\t").index(column)])


def _done_s(path: Path) -> float:
    return float(_DONE.findall(path.read_text())[-1])


def _search_kept(chunks: Path) -> float:
    """Mean ``search_kept`` over the particles of an iteration's chunk assignments (NaN if the
    E-step did not report it)."""
    kept = []
    for path in sorted(chunks.glob("assignments_*.npz")):
        with np.load(path) as chunk:
            if "search_kept" in chunk.files:
                kept.append(chunk["search_kept"])
    return float(np.concatenate(kept).mean()) if kept else float("nan")


def iteration_logs(results: Path, it: str) -> list[Path]:
    """The E-step and M-step logs of iteration ``it``: ``logs/ml2d/estep_NNN_CCCC.log`` and
    ``logs/ml2d/mstep_NNN.log`` (issue 17), or, from a checkout before that (``--repo``),
    ``ml2d/logs/iter_NNN/{estep_CCCC,mstep}.log``."""
    logs = results / "logs" / "ml2d"
    if (logs / f"mstep_{it}.log").exists():
        return [*sorted(logs.glob(f"estep_{it}_*.log")), logs / f"mstep_{it}.log"]
    old = results / "ml2d" / "logs" / f"iter_{it}"
    return [*sorted(old.glob("estep_*.log")), old / "mstep.log"]


def workflow_iterations(results: Path) -> list[dict]:
    """Per iteration: wall (M-step mtimes), summed job wall and compute, E-step job count."""
    ml2d = results / "ml2d"
    rows = []
    previous = (ml2d / "start" / "model.json").stat().st_mtime
    i = 0
    while (ml2d / f"iter_{i:03d}" / "model.json").exists():
        it = f"{i:03d}"
        mtime = (ml2d / f"iter_{it}" / "model.json").stat().st_mtime
        esteps = sorted((results / "benchmarks" / "ml2d").glob(f"estep_{it}_*.tsv"))
        bench = [*esteps, results / "benchmarks" / "ml2d" / f"mstep_{it}.tsv"]
        logs = iteration_logs(results, it)
        rows.append({"iteration": i, "wall": mtime - previous,
                     "jobs": sum(_bench(p) for p in bench),
                     "estep_rss": max(_bench(p, "max_rss") for p in esteps),
                     "mstep_rss": _bench(bench[-1], "max_rss"),
                     "compute": sum(_done_s(p) for p in logs),
                     "estep_jobs": len(esteps),
                     "fast_kept": _search_kept(ml2d / f"iter_{it}" / "chunks")})
        previous = mtime
        i += 1
    return rows


def in_process(results: Path, config: dict, threads: int) -> list[float]:
    """Seconds per iteration (E-step on all particles + M-step) of the in-process run on the
    particles the workflow imported."""
    set_threads(threads)
    os.chdir(results.parent)  # the STAR names its stacks relative to the folder the run was in
    ml2d_cfg = {**yaml.safe_load((REPO / "config" / "config.yaml").read_text())["ml2d"],
                **config["ml2d"]}
    with ParticleStack(results / "input" / "particles.star") as ps:
        images = ps.read(range(ps.n))
        table, sampling = ps.table, ps.sampling
    settings = settings_from_config(ml2d_cfg, table)
    backend = get_backend("cpu")
    marks = [time.perf_counter()]

    def callback(model, assignments):
        marks.append(time.perf_counter())

    if ml2d_cfg["fourier"]:
        from cryosnake import mlf2d
        from cryosnake.mlf2d.run import run_mlf2d

        ctf = mlf2d.particle_ctf(table, settings)
        # the first interval includes the start model (the workflow's start job)
        run_mlf2d(images, ctf, sampling, settings, max_iterations=ml2d_cfg["max_iterations"],
                  backend=backend, callback=callback)
    else:
        from cryosnake.ml2d.run import run_ml2d

        run_ml2d(images, settings, max_iterations=ml2d_cfg["max_iterations"], backend=backend,
                 callback=callback, sampling=sampling)
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--snr", type=float, default=0.1)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--fourier", action="store_true", help="MLF2D (the demo with CTF)")
    ap.add_argument("--full", action="store_true", help="ML2D full search (fast: false)")
    ap.add_argument("--chunk-size", default=None,
                    help="compute.chunk_size (default: the config's default)")
    ap.add_argument("--threads", type=int, default=2, help="compute.threads")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose workflow runs")
    ap.add_argument("--folder", type=Path, default=None, help="work folder (default: a temp)")
    ap.add_argument("--no-in-process", action="store_true",
                    help="the workflow only (e.g. for the 10k -> 100k scaling)")
    args = ap.parse_args()
    if args.chunk_size not in (None, "auto"):
        args.chunk_size = int(args.chunk_size)

    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench_workflow_"))
    folder.mkdir(parents=True, exist_ok=True)
    config = workflow_config(args)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    total = run_workflow(folder, args.repo.resolve(), args.cores)
    folder = folder.resolve()
    rows = workflow_iterations(folder / "results")
    inproc = [] if args.no_in_process else in_process(folder / "results", config, args.threads)

    mode = "MLF2D" if args.fourier else f"ML2D {'full' if args.full else 'fast'}"
    print(f"{mode}: {args.n} particles, {args.box} px, SNR {args.snr}, K={args.k}, "
          f"--cores {args.cores}, threads {args.threads}, chunk_size "
          f"{config['compute'].get('chunk_size', 'default')}, workflow of {args.repo}")
    print(f"workflow total (demo, import, start, iterations, final): {total:.1f} s; "
          f"work folder {folder}")
    print("| iter | E-step jobs | wall (s) | jobs (s) | compute (s) | start-up (s) | sched. (s) "
          "| in-proc (s) | wall / in-proc | E-step RSS (MB) | M-step RSS (MB) | fast kept |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    inproc_rows = inproc + [float("nan")] * (len(rows) - len(inproc))
    for row, t in zip(rows, inproc_rows, strict=False):
        print(f"| {row['iteration']} | {row['estep_jobs']} | {row['wall']:.1f} | "
              f"{row['jobs']:.1f} | {row['compute']:.1f} | {row['jobs'] - row['compute']:.1f} | "
              f"{row['wall'] - row['jobs']:.1f} | {t:.1f} | {row['wall'] / t:.2f} | "
              f"{row['estep_rss']:.0f} | {row['mstep_rss']:.0f} | {row['fast_kept']:.3f} |")
    if len(rows) > 1 and len(inproc) > 1:
        wall = statistics.median(r["wall"] for r in rows[1:])
        ref = statistics.median(inproc[1:len(rows)])
        print(f"median over iterations >= 1: workflow {wall:.1f} s, in process {ref:.1f} s, "
              f"ratio {wall / ref:.2f}")
    print(json.dumps({"rows": rows, "in_process": inproc}))


if __name__ == "__main__":
    main()
