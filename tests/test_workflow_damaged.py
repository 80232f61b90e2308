"""Damaged intermediates in a real run (issue 15): the error names the file and the fix, and a
rerun after deleting it recomputes what depends on it and finishes (no "Nothing to be done"
with a hole), with the bytes of a clean run. One tiny ML2D run, changed step by step (the
tests share it, in file order)."""

from __future__ import annotations

import json

import pytest
import yaml
from workflow_run import estep, jobs, snakemake

pytestmark = pytest.mark.slow

CONFIG = {
    "demo": {"n_particles": 40, "box": 16, "views": 2, "snr": 1.0, "seed": 5},
    "ml2d": {"classes": 2, "max_iterations": 2},
    "compute": {"chunk_size": 20, "threads": 1},
}
RERUN = "delete it and rerun; the iteration is recomputed"
CHUNKS = 2
# what a rerun must give back byte for byte (the workflow is deterministic)
CLEAN = ("classes.mrcs", "model.json", "particles.star", "iter_001/model.json",
         "iter_001/references.mrcs", "iter_002/model.json", "iter_002/references.mrcs",
         "iter_002/chunks/sums_0000.npz", "iter_002/chunks/sums_0001.npz")


def truncate(path, keep: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(keep)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("damaged")
    (folder / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    snakemake(folder, "ml2d")
    return folder


@pytest.fixture(scope="module")
def clean(run):
    """The bytes of the first (clean) run's files, read before any test damages them."""
    return {f: (run / "results/ml2d" / f).read_bytes() for f in CLEAN}


def assert_complete_and_clean(run, clean) -> None:
    """Every file of the chain and the final outputs are back, equal to the clean run's, and
    a further rerun finds nothing to do."""
    for f in CLEAN:
        assert (run / "results/ml2d" / f).read_bytes() == clean[f], f"{f} differs"
    out = snakemake(run, "ml2d").stdout
    assert jobs(out) == set() and "Nothing to be done" in out


def test_damaged_sums_are_named_in_the_console_and_the_log(run, clean):
    iter2 = run / "results/ml2d/iter_002"
    sums = iter2 / "chunks/sums_0001.npz"
    truncate(sums, sums.stat().st_size // 2)
    for name in ("model.json", "references.mrcs"):  # the M-step meets the damaged file
        (iter2 / name).unlink()
    out = snakemake(run, "ml2d", check=False).stdout
    assert "results/ml2d/iter_002/chunks/sums_0001.npz is damaged (BadZipFile" in out
    assert RERUN in out
    log = (run / "results/logs/ml2d/mstep_002.log").read_text()
    assert "sums_0001.npz is damaged" in log


def test_deleting_the_damaged_sums_recomputes_the_iteration(run, clean):
    """The fix the message above gives: the iteration the test above left (its model.json and
    references.mrcs gone, one sums file damaged) is recomputed by a plain rerun, although the
    final outputs of the first run are still there."""
    (run / "results/ml2d/iter_002/chunks/sums_0001.npz").unlink()
    out = snakemake(run, "ml2d").stdout
    assert {"ml2d_estep(iter=002, chunk=0001)", "ml2d_mstep(iter=002)"} <= jobs(out)
    assert "ml2d_estep(iter=002, chunk=0000)" not in jobs(out)  # its sums are intact
    assert_complete_and_clean(run, clean)


def test_damaged_model_json_is_named_and_recomputed(run):
    model = run / "results/ml2d/iter_002/model.json"
    truncate(model, 30)
    out = snakemake(run, "ml2d", check=False).stdout
    assert "results/ml2d/iter_002/model.json is damaged (JSONDecodeError" in out and RERUN in out
    model.unlink()
    out = snakemake(run, "ml2d").stdout
    assert {"ml2d_mstep(iter=002)", "ml2d_final"} <= jobs(out)
    assert json.loads(model.read_text())["iteration"] == 2


def test_deleted_sums_and_model_json_of_the_last_iteration_are_recomputed(run, clean):
    """The final outputs exist and were made from iteration 2: all its E-steps and its M-step
    run again (the final rule only if the iteration's files changed: they do not)."""
    iter2 = run / "results/ml2d/iter_002"
    for f in ("chunks/sums_0000.npz", "chunks/sums_0001.npz", "model.json"):
        (iter2 / f).unlink()
    out = snakemake(run, "ml2d").stdout
    assert estep(2, CHUNKS) | {"ml2d_mstep(iter=002)"} <= jobs(out)
    assert_complete_and_clean(run, clean)


def test_deleted_references_of_a_middle_iteration_are_recomputed(run, clean):
    (run / "results/ml2d/iter_001/references.mrcs").unlink()
    out = snakemake(run, "ml2d").stdout
    assert "ml2d_mstep(iter=001)" in jobs(out)
    assert_complete_and_clean(run, clean)


def test_deleted_sums_of_a_middle_iteration_leave_nothing_to_do(run, clean):
    """Only the M-step of their own iteration reads the sums: with its model.json and
    references.mrcs on disk and current, nothing depends on them any more (like a temporary
    file), so a rerun recomputes nothing and the chain stays as it is."""
    for f in ("sums_0000.npz", "sums_0001.npz"):
        (run / "results/ml2d/iter_001/chunks" / f).unlink()
    out = snakemake(run, "ml2d").stdout
    assert jobs(out) == set() and "Nothing to be done" in out
    for f in CLEAN:
        assert (run / "results/ml2d" / f).read_bytes() == clean[f], f"{f} differs"
