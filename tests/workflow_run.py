"""Running the real workflow from tests: the Snakemake command and the jobs a run executed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_JOB = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):\n((?:    .*\n)*)", re.M)


def snakemake_cmd(*args, snakefile=REPO / "Snakefile", cores: int = 2) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", *args, "--cores", str(cores)]
    if snakefile is not None:  # --configfile takes several values: it comes last
        cmd[3:3] = ["-s", str(snakefile)]
        cmd += ["--configfile", "config.yaml"]
    return cmd


def snakemake(folder, *args, check: bool = True, env: dict | None = None, **kw):
    """Run snakemake in ``folder`` (with its ``config.yaml``); returns the completed process
    with ``stdout`` holding stdout and stderr together."""
    proc = subprocess.run(snakemake_cmd(*args, **kw), cwd=folder, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900,
                          env=None if env is None else {**os.environ, **env})
    if check:
        assert proc.returncode == 0, proc.stdout[-5000:]
    return proc


def jobs(output: str) -> set[str]:
    """The jobs a run's console output announces, as ``rule`` or ``rule(wildcards)``."""
    found = set()
    for m in _JOB.finditer(output):
        w = re.search(r"^    wildcards: (.*)$", m.group(2), re.M)
        found.add(m.group(1) + (f"({w.group(1)})" if w else ""))
    return found


def estep(iteration: int, chunks: int) -> set[str]:
    """The E-step jobs of one ML2D iteration."""
    return {f"ml2d_estep(iter={iteration:03d}, chunk={c:04d})" for c in range(chunks)}


def ml2d_iteration(iteration: int, chunks: int) -> set[str]:
    """The E-steps and the M-step of one ML2D iteration."""
    return estep(iteration, chunks) | {f"ml2d_mstep(iter={iteration:03d})"}


def significant_run(iterations: int) -> set[str]:
    """Every Reconstruct Significant job of a run of ``iterations`` (after the averages are
    prepared), plus the figures, the demo check and the summary that depend on it (the test
    runs are all on the built-in demo)."""
    return ({"significant_start", "significant_final", "significant_plots",
             "significant_reprojections", "demo_check", "summary", "all"}
            | {f"significant_iteration(iter={i:03d})" for i in range(1, iterations + 1)})
