"""Peak memory per ML2D E-step job against the chunk size (a script, not a test).

Simulates ``--n`` particles (default 100 000) of ``--box`` px (64) into one memory-mapped MRC
stack (written block by block, never held in memory), then runs ONE ML2D iteration through the
Snakemake workflow (user references, so no iteration 0) for each ``--chunk-sizes`` value and
prints, from Snakemake's per-job benchmark files, the peak resident memory (max_rss, MB) of the
E-step jobs and of the M-step. The E-step's peak must follow the chunk size, not the dataset:

    python tests/benchmarks/bench_memory.py --n 100000 --chunk-sizes 2000 10000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

from cryosnake import demo
from cryosnake.io import mrc

REPO = Path(__file__).resolve().parents[2]


def simulate(folder: Path, n: int, box: int, block: int = 5000) -> None:
    vol = demo.phantom_volume(box, seed=1)
    views = np.stack([demo.project(vol, *a) for a in demo.view_directions(2, 1)])
    rng = np.random.default_rng(0)
    noise = np.sqrt(views.var() / 0.1)
    with mrcfile.new_mmap(folder / "particles.mrcs", shape=(n, box, box), mrc_mode=2,
                          overwrite=True) as m:
        m.set_image_stack()
        m.voxel_size = 3.0
        for start in range(0, n, block):
            stop = min(n, start + block)
            pick = rng.integers(0, 2, stop - start)
            m.data[start:stop] = views[pick] + rng.normal(0, noise, (stop - start, box, box))
    mrc.write_stack(folder / "references.mrcs", views, 3.0)
    particles = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in range(n)],
                              "rlnOpticsGroup": 1})
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [3.0],
                           "rlnImageSize": [box]})
    starfile.write({"optics": optics, "particles": particles}, folder / "particles.star")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--chunk-sizes", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--workdir", default="/tmp/cryosnake_bench_memory")
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not (work / "particles.star").exists():
        simulate(work, args.n, args.box)
    size_gb = (work / "particles.mrcs").stat().st_size / 1e9
    print(f"dataset: {args.n} particles of {args.box} px, {size_gb:.2f} GB on disk "
          f"(simulated in {time.perf_counter() - t0:.0f} s)")
    for chunk in args.chunk_sizes:
        out = f"run_chunk{chunk}"
        (work / f"{out}.yaml").write_text(
            f"particles: particles.star\noutdir: {out}\n"
            f"ml2d: {{references: references.mrcs, psi_step: 30.0, mirror: false, "
            f"max_iterations: 1}}\ncompute: {{chunk_size: {chunk}, threads: 1}}\n")
        t1 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                        f"{out}/ml2d/iter_001/model.json", "--cores", str(args.cores),
                        "--configfile", f"{out}.yaml", "--quiet"], cwd=work, check=True)
        wall = time.perf_counter() - t1
        bench = work / out / "benchmarks" / "ml2d"
        estep = pd.concat([pd.read_csv(p, sep="\t") for p in bench.glob("estep_001_*.tsv")])
        mstep = pd.read_csv(bench / "mstep_001.tsv", sep="\t")
        print(f"chunk_size {chunk:6d}: {len(estep):4d} E-step jobs, peak RSS per E-step job "
              f"max {estep['max_rss'].max():7.0f} MB, median {estep['max_rss'].median():7.0f} "
              f"MB; M-step {mstep['max_rss'].max():5.0f} MB; images per job "
              f"{chunk * args.box**2 * 4 / 2**20:6.0f} MB; iteration wall {wall:.0f} s")


if __name__ == "__main__":
    main()
