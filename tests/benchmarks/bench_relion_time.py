"""Time to the final 2D classes: the cryosnake workflow side by side with RELION 3.1 Class2D on
the same particles and cores (a script, not a test; issue 16).

For each case, RELION and cryosnake run one after the other on one machine (alternating, so a
change in the machine's load shows as a change between neighbouring runs, not as a bias):

* ``noctf``: ``--particles-noctf`` (a STAR without CTF); cryosnake ML2D (the defaults: fast
  search, ψ 5°, mirrors, ``max_iterations`` 100 with the seed's convergence test) against
  ``relion_refine`` Class2D without ``--ctf``;
* ``ctf``: ``--particles-ctf``; cryosnake MLF2D (``fourier: true``, the defaults) against
  Class2D with ``--ctf``.

RELION runs with the benchmark sampling of issue 12 (``--K --iter 25 --tau2_fudge 2
--psi_step 10 --offset_range 5 --offset_step 2 --oversampling 1 --j CORES``, see
``relion_sim.relion_class2d``); cryosnake runs the real workflow (``snakemake --cores CORES``,
target ``ml2d/classes.mrcs``: import, start, every iteration, final files). Prints per run the
iterations, the median seconds per iteration (iterations ≥ 2, once the first full searches
are over, and over all), the wall time to the final classes, and the ratios to RELION.

The STARs of ``bench_quality2d.py``'s cache are the intended input, e.g.::

    python tests/benchmarks/bench_relion_time.py \\
        --particles-noctf /tmp/bench/q/n3000_v10x8_snr0.05_noctf/particles.star \\
        --particles-ctf /tmp/bench/q/n3000_v10x8_snr0.05_ctf/particles.star --out /tmp/i16/rt
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_workflow import REPO, run_workflow, workflow_iterations  # noqa: E402
from relion_sim import relion_class2d  # noqa: E402


def run_cryosnake(star: Path, folder: Path, fourier: bool, k: int, cores: int,
                  overrides: dict | None = None) -> dict:
    """The workflow on ``star`` with the defaults (K = ``k``; MLF2D where ``fourier``) and the
    ``ml2d`` keys ``overrides``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"particles": str(star.resolve()),
              "ml2d": {"classes": k, "fourier": fourier, **(overrides or {})},
              "compute": {"backend": "cpu"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    wall = run_workflow(folder, REPO, cores)
    seconds = [row["wall"] for row in workflow_iterations(folder / "results")]
    return {"seconds": wall, "iteration_seconds": seconds}


def run_relion(star: Path, folder: Path, ctf: bool, k: int, iterations: int, diameter: float,
               cores: int) -> dict:
    res = relion_class2d(star, folder, k, iterations, diameter, ctf, threads=cores)
    return {"seconds": res["seconds"], "iteration_seconds": [float(s) for s in
                                                             res["iteration_seconds"]]}


def summary(run: dict) -> dict:
    its = run["iteration_seconds"]
    late = its[2:] if len(its) > 2 else its
    return {"iterations": len(its), "s_it_late": statistics.median(late),
            "s_it_all": statistics.median(its), "wall": run["seconds"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles-noctf", type=Path)
    ap.add_argument("--particles-ctf", type=Path)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--relion-iterations", type=int, default=25)
    ap.add_argument("--diameter", type=float, default=170.0, help="Å, RELION's mask")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cryosnake-first", action="store_true",
                    help="in each case run cryosnake before RELION")
    ap.add_argument("--jobs", nargs="+", choices=["relion", "cryosnake"],
                    default=["relion", "cryosnake"],
                    help="run only these; the others' times are read from OUT/times.json "
                         "(e.g. cryosnake after a change, against RELION's recorded runs)")
    ap.add_argument("--ml2d", nargs="*", default=[], metavar="KEY=VALUE",
                    help="ml2d config keys for the cryosnake runs (e.g. psi_step=10; "
                         "fourier=true ctf_correction=false on the noctf case)")
    ap.add_argument("--reprint", action="store_true",
                    help="print the table of the runs in OUT/times.json, run nothing")
    args = ap.parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.ml2d)}

    cases = [(name, star) for name, star in (("noctf", args.particles_noctf),
                                             ("ctf", args.particles_ctf)) if star is not None]
    recorded = args.out / "times.json"
    results = json.loads(recorded.read_text()) if recorded.exists() else {}
    for name, star in [] if args.reprint else cases:
        ctf = name == "ctf"
        order = ["cryosnake", "relion"] if args.cryosnake_first else ["relion", "cryosnake"]
        for job in (j for j in order if j in args.jobs):
            start = time.strftime("%H:%M:%S")
            folder = args.out / name / job
            run = (run_relion(star, folder, ctf, args.k, args.relion_iterations, args.diameter,
                              args.cores) if job == "relion"
                   else run_cryosnake(star, folder, ctf, args.k, args.cores, overrides))
            results[f"{name}/{job}"] = run
            print(f"{start} {name}/{job}: {run['seconds']:.0f} s", flush=True)
        recorded.write_text(json.dumps(results, indent=1))

    print(f"\n{args.k} classes, --cores {args.cores}; s/it late = median of iterations >= 2")
    print("| case | job | iterations | s/it late | s/it all | wall to classes (s) "
          "| s/it late ÷ RELION | wall ÷ RELION |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, _ in cases:
        ref = summary(results[f"{name}/relion"])
        for job, label in (("relion", "RELION 3.1 Class2D" + (" --ctf" if name == "ctf" else "")),
                           ("cryosnake", "cryosnake "
                            + ("MLF2D" if overrides.get("fourier", name == "ctf") else "ML2D")
                            + "".join(f" {kv}" for kv in args.ml2d))):
            s = summary(results[f"{name}/{job}"])
            print(f"| {name} | {label} | {s['iterations']} | {s['s_it_late']:.1f} | "
                  f"{s['s_it_all']:.1f} | {s['wall']:.0f} | "
                  f"{s['s_it_late'] / ref['s_it_late']:.3f} | {s['wall'] / ref['wall']:.3f} |")


if __name__ == "__main__":
    main()
