"""cryosnake as a Snakemake module of another workflow ("Inside your own workflow", README):
its own config and output folder, the host's default target, the demo ML2D run to the end."""

from __future__ import annotations

import json

import pytest
from workflow_run import REPO, jobs, snakemake

from cryosnake.io import mrc

pytestmark = pytest.mark.slow

HOST = f"""\
configfile: "config.yaml"


rule all:
    default_target: True
    input:
        "paper/cryosnake/ml2d/classes.mrcs",


module cryosnake:
    snakefile:
        "{REPO / "Snakefile"}"
    config:
        config["cryosnake"]


use rule * from cryosnake as cryosnake_*
"""

CONFIG = """\
cryosnake:
  outdir: paper/cryosnake
  demo: {n_particles: 120, box: 32, views: 3, snr: 1.0, seed: 3}
  ml2d: {classes: 3, max_iterations: 2}
  compute: {chunk_size: 60, threads: 1}
"""


def test_ml2d_as_a_module_of_a_host_workflow(tmp_path):
    (tmp_path / "Snakefile").write_text(HOST)
    (tmp_path / "config.yaml").write_text(CONFIG)
    out = snakemake(tmp_path, snakefile=None).stdout
    ran = jobs(out)
    # the host's target: ML2D only (the module's own `all` is not the default)
    assert "cryosnake_ml2d_final" in ran and "cryosnake_all" not in ran
    assert not any(j.startswith("cryosnake_significant") for j in ran)
    ml2d = tmp_path / "paper/cryosnake/ml2d"
    assert mrc.read(ml2d / "classes.mrcs").shape == (3, 32, 32)
    assert json.loads((ml2d / "model.json").read_text())["iteration"] == 2
    assert not (tmp_path / "results").exists()  # the module's outdir, not the default
    assert jobs(snakemake(tmp_path, snakefile=None).stdout) == set()  # complete
