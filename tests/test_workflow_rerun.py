"""What a rerun runs: the exact set of jobs after each kind of change to a finished run.

One run folder, changed step by step (the tests run in file order and share it): an unchanged
config runs nothing; compute keys run nothing; raising ml2d.max_iterations runs only the new
iterations; lowering it takes an earlier iteration's outputs; raising significant.iterations
recomputes Reconstruct Significant only (its alpha schedule depends on it); a run killed in
the middle of an iteration resumes with that iteration's unfinished jobs; an edited stack, an
edited reference file and a numeric key rerun what depends on them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import mrcfile
import numpy as np
import pytest
import yaml
from workflow_run import (
    REPO,
    estep,
    jobs,
    ml2d_iteration,
    significant_run,
    snakemake,
    snakemake_cmd,
)

from cryosnake.io import mrc

pytestmark = pytest.mark.slow

CONFIG = {
    "demo": {"n_particles": 120, "box": 32, "views": 3, "snr": 1.0, "seed": 3},
    "ml2d": {"classes": 3, "max_iterations": 2},
    "significant": {"iterations": 2, "angular_sampling": 20.0},
    "compute": {"chunk_size": 60, "threads": 1},
}
CHUNKS = 2
# after the ML2D classes change: the final ML2D rule, its figures and all of Significant
AFTER_ML2D = {"ml2d_final", "ml2d_plots", "significant_prepare"} | significant_run(2)


def configure(folder, **changes) -> None:
    """Write ``folder/config.yaml``: CONFIG with ``section={key: value}`` changes."""
    cfg = json.loads(json.dumps(CONFIG))
    for section, values in changes.items():
        cfg.setdefault(section, {}).update(values)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rerun")
    configure(folder)
    snakemake(folder)
    return folder


def final_iteration(folder) -> int:
    return json.loads((folder / "results/ml2d/model.json").read_text())["iteration"]


def test_unchanged_config_runs_nothing(run_folder):
    out = snakemake(run_folder).stdout
    assert jobs(out) == set() and "Nothing to be done" in out


def test_compute_keys_run_nothing(run_folder):
    configure(run_folder, compute={"threads": 2, "backend": "cpu"})
    assert jobs(snakemake(run_folder).stdout) == set()
    configure(run_folder)


def test_write_subsets_writes_only_the_subsets(run_folder):
    """ml2d.write_subsets on: the per-class STARs and nothing else; off again: nothing."""
    configure(run_folder, ml2d={"write_subsets": True})
    assert jobs(snakemake(run_folder).stdout) == {"ml2d_subsets", "all"}
    assert (run_folder / "results/ml2d/class_003.star").exists()
    configure(run_folder)
    assert jobs(snakemake(run_folder).stdout) == set()


def test_raising_max_iterations_runs_only_the_new_iterations(run_folder):
    assert final_iteration(run_folder) == 2
    configure(run_folder, ml2d={"max_iterations": 3})
    assert jobs(snakemake(run_folder).stdout) == ml2d_iteration(3, CHUNKS) | AFTER_ML2D
    assert final_iteration(run_folder) == 3
    assert "classes from iteration 3" in (run_folder / "results/summary.txt").read_text()


def test_lowering_max_iterations_takes_the_earlier_iteration(run_folder):
    configure(run_folder, ml2d={"max_iterations": 2})
    assert jobs(snakemake(run_folder).stdout) == AFTER_ML2D
    ml2d = run_folder / "results/ml2d"
    assert final_iteration(run_folder) == 2
    np.testing.assert_array_equal(mrc.read(ml2d / "classes.mrcs"),
                                  mrc.read(ml2d / "iter_002/references.mrcs"))
    summary = (run_folder / "results/summary.txt").read_text()
    assert "classes from iteration 2 (iter_002)" in summary  # iter_003 is still on disk
    assert (ml2d / "iter_003/model.json").exists()


def test_raising_significant_iterations_recomputes_significant_only(run_folder):
    configure(run_folder, significant={"iterations": 3})
    assert jobs(snakemake(run_folder).stdout) == significant_run(3)
    stats = json.loads((run_folder / "results/significant/iter_003/stats.json").read_text())
    assert stats["iteration"] == 3 and stats["alpha"] == pytest.approx(0.005)
    assert "volume from iteration 3" in (run_folder / "results/summary.txt").read_text()


def test_a_killed_iteration_resumes_with_its_unfinished_jobs(run_folder):
    """Raise to 4 iterations (and Significant back to 2), kill while iteration 4's second
    E-step runs (one job at a time), then rerun: that E-step, the M-step and what follows;
    nothing else."""
    configure(run_folder, ml2d={"max_iterations": 4})
    logs = run_folder / "results/logs/ml2d"
    proc = subprocess.Popen(snakemake_cmd(cores=1), cwd=run_folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(logs.glob("estep_004_*.log"))) < 2:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    started = sorted(logs.glob("estep_004_*.log"), key=lambda p: p.stat().st_mtime_ns)
    assert len(started) == 2, "the run did not reach iteration 4's second E-step"
    running = started[-1].stem.split("_")[2]  # the E-step that was killed
    snakemake(run_folder, "--unlock")
    out = snakemake(run_folder).stdout
    assert jobs(out) == ({f"ml2d_estep(iter=004, chunk={running})", "ml2d_mstep(iter=004)"}
                         | AFTER_ML2D)
    assert final_iteration(run_folder) == 4


def test_numeric_keys_rerun_their_stage(run_folder):
    configure(run_folder, ml2d={"max_iterations": 4}, significant={"alphaF": 99.0})
    out = jobs(snakemake(run_folder, "-n").stdout)
    assert out == {"significant_start", "significant_iteration(iter=001)",
                   "significant_iteration(iter=002)", "significant_final", "significant_plots",
                   "significant_reprojections", "demo_check", "summary", "all"}
    configure(run_folder, ml2d={"max_iterations": 4}, significant={"classes": {"min_share": 0.5}})
    out = jobs(snakemake(run_folder, "-n").stdout)
    assert "significant_prepare" in out and not any(j.startswith("ml2d") for j in out)
    configure(run_folder, ml2d={"max_iterations": 4, "psi_step": 10.0})
    out = jobs(snakemake(run_folder, "-n").stdout)
    assert "ml2d_start" in out and estep(0, CHUNKS) <= out and "import_particles" not in out


def test_an_edited_stack_reruns_the_import_and_everything_after(run_folder):
    configure(run_folder, ml2d={"max_iterations": 4})  # the state the kill test left
    stack = run_folder / "results/demo/particles.mrcs"
    with mrcfile.open(stack, "r+") as m:
        m.data[0, 0, 0] += 1.0
    out = snakemake(run_folder, "-n").stdout
    assert "Updated input files: results/demo/particles.mrcs" in out
    assert {"import_particles", "ml2d_start"} <= jobs(out) and "demo_data" not in jobs(out)


def test_an_edited_reference_file_reruns_ml2d(tmp_path):
    """User references: editing the file in place reruns ML2D from its start."""
    rng = np.random.default_rng(1)
    mrc.write_stack(tmp_path / "refs.mrcs", rng.normal(size=(3, 32, 32)), 4.0)
    configure(tmp_path, ml2d={"references": "refs.mrcs", "max_iterations": 1})
    snakemake(tmp_path, "ml2d")
    refs = mrc.read(tmp_path / "refs.mrcs")
    refs[0, 0, 0] += 1.0
    mrc.write_stack(tmp_path / "refs.mrcs", refs, 4.0)
    out = snakemake(tmp_path, "ml2d", "-n").stdout
    assert "Updated input files: refs.mrcs" in out and "ml2d_start" in jobs(out)
    assert "import_particles" not in jobs(out)


def test_edited_package_code_reruns_the_rules_that_run_it(tmp_path):
    """In a copy of the checkout: editing a module reruns the rules whose code includes it
    (the `code` param, cryosnake.provenance) and nothing else."""
    checkout = tmp_path / "cryosnake"
    files = subprocess.run(["git", "ls-files", "Snakefile", "cryosnake", "workflow", "scripts",
                            "config", "envs", "profiles"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        (checkout / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, checkout / f)
    run = tmp_path / "run"
    run.mkdir()
    configure(run)
    targets = ("results/input/summary.json", "results/ml2d/start/model.json")
    snakefile = checkout / "Snakefile"
    snakemake(run, *targets, snakefile=snakefile)

    def rerun_after_editing(module: str) -> set[str]:
        path = checkout / module
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        try:
            return jobs(snakemake(run, *targets, "-n", snakefile=snakefile).stdout)
        finally:
            path.write_text(original)

    assert rerun_after_editing("cryosnake/plots.py") == set()
    assert rerun_after_editing("cryosnake/ml2d/mstep.py") == {"ml2d_start"}
    assert rerun_after_editing("cryosnake/io/importers.py") == {"demo_data", "import_particles",
                                                                "ml2d_start"}
    assert jobs(snakemake(run, *targets, "-n", snakefile=snakefile).stdout) == set()
