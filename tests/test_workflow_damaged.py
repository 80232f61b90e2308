"""Damaged intermediates in a real run (issue 15): the error names the file and the fix, and a
rerun after deleting it recomputes what depends on it and finishes (no "Nothing to be done"
with a hole). One tiny ML2D run, changed step by step (the tests share it, in file order)."""

from __future__ import annotations

import json

import pytest
import yaml
from workflow_run import jobs, snakemake

pytestmark = pytest.mark.slow

CONFIG = {
    "demo": {"n_particles": 40, "box": 16, "views": 2, "snr": 1.0, "seed": 5},
    "ml2d": {"classes": 2, "max_iterations": 2},
    "compute": {"chunk_size": 20, "threads": 1},
}
RERUN = "delete it and rerun; the iteration is recomputed"


def truncate(path, keep: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(keep)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("damaged")
    (folder / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    snakemake(folder, "ml2d")
    return folder


def test_damaged_sums_are_named_in_the_console_and_the_log(run):
    iter2 = run / "results/ml2d/iter_002"
    sums = iter2 / "chunks/sums_0001.npz"
    truncate(sums, sums.stat().st_size // 2)
    for name in ("model.json", "references.mrcs"):  # the M-step meets the damaged file
        (iter2 / name).unlink()
    out = snakemake(run, "ml2d", check=False).stdout
    assert "results/ml2d/iter_002/chunks/sums_0001.npz is damaged (BadZipFile" in out
    assert RERUN in out
    log = (run / "results/ml2d/logs/iter_002/mstep.log").read_text()
    assert "sums_0001.npz is damaged" in log


def test_damaged_model_json_is_named_and_recomputed(run):
    # the iteration the test above left damaged: its sums deleted, recomputed on request (a
    # plain rerun of `ml2d` at this point says "Nothing to be done": open, issue 15)
    (run / "results/ml2d/iter_002/chunks/sums_0001.npz").unlink()
    snakemake(run, "results/ml2d/iter_002/model.json")
    snakemake(run, "ml2d")
    model = run / "results/ml2d/iter_002/model.json"
    truncate(model, 30)
    out = snakemake(run, "ml2d", check=False).stdout
    assert "results/ml2d/iter_002/model.json is damaged (JSONDecodeError" in out and RERUN in out
    model.unlink()
    out = snakemake(run, "ml2d").stdout
    assert {"ml2d_mstep(iter=002)", "ml2d"} <= jobs(out)
    assert json.loads(model.read_text())["iteration"] == 2
