"""ML2D through a real SLURM cluster (profiles/slurm) gives the same results as a local run.

Needs a running SLURM (`bash .ci/slurm/setup.sh` starts a one-node cluster on this machine;
`bash .ci/slurm/run_tests.sh` does setup, this test and teardown) and the executor plugin
(`pip install -e ".[cluster]"`); skipped otherwise, unless CRYOSNAKE_REQUIRE_SLURM=1 (set by
run_tests.sh), which makes a missing cluster a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import starfile

from cryosnake.io import mrc

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"

# 300 particles in chunks of 100: 3 E-step jobs per iteration; iterations 0..2 (ml2d_start's
# model is iteration 0's), so 9 E-step jobs, 3 M-steps, plus data, start and final: 16 jobs.
# threads: 1 lets two jobs share the 2-CPU node.
CONFIG = """\
demo: {n_particles: 300, box: 32, views: 4}
ml2d: {classes: 4, max_iterations: 2}
compute: {chunk_size: 100, threads: 1, backend: cpu}
"""
N_CHUNKS = 3
LAST_ITER = 2


def _slurm_problem() -> str | None:
    """Why the SLURM test cannot run here, or None when it can."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[cluster]')"
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client commands (sinfo/sbatch); bash .ci/slurm/setup.sh starts a cluster"
    try:
        proc = subprocess.run(["sinfo", "-h", "-t", "idle,mix,alloc", "-o", "%n"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo does not answer: {err}"
    if proc.returncode != 0:
        return f"sinfo does not answer: {proc.stderr.strip()[:200]}"
    if not proc.stdout.strip():
        return "SLURM answers but has no usable node (sinfo shows none idle/mix/alloc)"
    return None


pytestmark = pytest.mark.slurm


def _snakemake(args: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "ml2d",
           "--configfile", "config.yaml", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    (cwd / "snakemake.out").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed in {cwd}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def _flat(value, key=""):
    """model.json as {dotted.key: value} with lists flattened to arrays."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(v, f"{key}.{k}" if key else k))
        return out
    return {key: value}


def test_ml2d_on_slurm_equals_local(tmp_path):
    problem = _slurm_problem()
    if problem and os.environ.get("CRYOSNAKE_REQUIRE_SLURM") == "1":
        pytest.fail(f"CRYOSNAKE_REQUIRE_SLURM=1 but {problem}")  # .ci/slurm/run_tests.sh
    if problem:
        pytest.skip(problem)

    runs = {}
    for name in ("slurm", "local"):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        (runs[name] / "config.yaml").write_text(CONFIG)

    # the cluster: everything through sbatch; keep SLURM's logs to check them below, and poll
    # from 1 s after submission (the profile's 40 s suits a real cluster, not a test)
    proc = _snakemake(["--profile", str(PROFILE), "--slurm-keep-successful-logs",
                       "--slurm-init-seconds-before-status-checks", "1"],
                      cwd=runs["slurm"], timeout=900)
    log = proc.stdout + proc.stderr
    # locally, with the same configuration
    _snakemake(["--cores", "2"], cwd=runs["local"], timeout=600)

    # sbatch really ran the jobs: Snakemake reports SLURM job ids, and SLURM wrote a log per
    # E-step job (rule_ml2d_estep/<iter>_<chunk>/<jobid>.log)
    assert "SLURM run ID" in log
    assert log.count("has been submitted with SLURM jobid") >= N_CHUNKS * (LAST_ITER + 1) + 4
    estep_logs = sorted((runs["slurm"] / ".snakemake" / "slurm_logs" / "rule_ml2d_estep")
                        .glob("*/*.log"))
    wildcards = {p.parent.name for p in estep_logs}
    expected = {f"{i:03d}_{c:04d}" for i in range(LAST_ITER + 1) for c in range(N_CHUNKS)}
    assert wildcards == expected, sorted(wildcards)
    assert all(p.stem.isdigit() for p in estep_logs)  # named by SLURM job id
    # ... and the local run submitted nothing
    assert not (runs["local"] / ".snakemake" / "slurm_logs").exists()

    a = runs["slurm"] / "results" / "ml2d"
    b = runs["local"] / "results" / "ml2d"

    # class averages: float32, identical up to float32 rounding
    ca, cb = mrc.read(a / "classes.mrcs"), mrc.read(b / "classes.mrcs")
    assert ca.shape == cb.shape == (4, 32, 32)
    np.testing.assert_allclose(ca, cb, rtol=1e-5, atol=1e-6 * float(np.abs(cb).max()))

    # per-particle assignments: same classes, mirrors and poses, in input order
    pa = starfile.read(a / "particles.star")["particles"]
    pb = starfile.read(b / "particles.star")["particles"]
    assert len(pa) == len(pb) == 300
    assert list(pa["rlnImageName"]) == list(pb["rlnImageName"])
    np.testing.assert_array_equal(pa["rlnClassNumber"], pb["rlnClassNumber"])
    np.testing.assert_array_equal(pa["cryosnakeMirror"], pb["cryosnakeMirror"])
    for col in ("rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
                "rlnMaxValueProbDistribution"):
        np.testing.assert_allclose(pa[col], pb[col], rtol=1e-6, atol=1e-6, err_msg=col)

    # the final model: every value
    ma = _flat(json.loads((a / "model.json").read_text()))
    mb = _flat(json.loads((b / "model.json").read_text()))
    assert ma.keys() == mb.keys()
    assert ma["iteration"] == LAST_ITER
    for key, va in ma.items():
        vb = mb[key]
        if isinstance(vb, bool | str) or vb is None:
            assert va == vb, key
        else:
            np.testing.assert_allclose(np.asarray(va, dtype=float), np.asarray(vb, dtype=float),
                                       rtol=1e-6, err_msg=key)
