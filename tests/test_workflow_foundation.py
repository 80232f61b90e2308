"""The Snakemake workflow's foundation: the DAG, start-up checks, running from another folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from cryosnake.io import mrc

REPO = Path(__file__).resolve().parents[1]


def snakemake(*args, cwd, check=False):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


def test_dry_run_with_defaults_shows_the_pipeline(tmp_path):
    proc = snakemake("-n", "--cores", "1", cwd=tmp_path, check=True)
    out = proc.stdout + proc.stderr
    for rule in ("demo_data", "import_particles", "ml2d_start", "ml2d_estep", "ml2d_mstep"):
        assert rule in out, rule
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


def test_runs_from_another_folder_with_relative_paths(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    imgs = np.random.default_rng(0).normal(size=(5, 16, 16)).astype(np.float32)
    mrc.write_stack(data / "s.mrcs", imgs, 2.0)
    starfile.write(pd.DataFrame({"rlnImageName": [f"{i + 1}@data/s.mrcs" for i in range(5)],
                                 "rlnDetectorPixelSize": 5.0, "rlnMagnification": 25000.0}),
                   data / "p.star")
    (tmp_path / "my.yaml").write_text("particles: data/p.star\noutdir: out\n")
    snakemake("out/input/particles.star", "--cores", "1", "--configfile", "my.yaml",
              cwd=tmp_path, check=True)
    table = starfile.read(tmp_path / "out" / "input" / "particles.star")
    assert len(table["particles"]) == 5
    assert table["optics"]["rlnImagePixelSize"][0] == 2.0
    assert not (REPO / "out").exists()


def test_bad_config_stops_before_any_job(tmp_path):
    (tmp_path / "bad.yaml").write_text("ml2d:\n  psi_step: 0\n")
    proc = snakemake("-n", "--cores", "1", "--configfile", "bad.yaml", cwd=tmp_path)
    assert proc.returncode != 0
    assert "ml2d.psi_step = 0" in proc.stderr + proc.stdout
    (tmp_path / "bad.yaml").write_text("significant:\n  alpha0: 99.9\n")
    proc = snakemake("-n", "--cores", "1", "--configfile", "bad.yaml", cwd=tmp_path)
    assert proc.returncode != 0
    assert "alpha0 = 99.9 must be smaller" in proc.stderr + proc.stdout


def test_bad_input_stops_at_import_with_the_fix(tmp_path):
    starfile.write(pd.DataFrame({"rlnImageName": ["1@gone.mrcs"], "rlnImagePixelSize": 1.0}),
                   tmp_path / "p.star")
    (tmp_path / "c.yaml").write_text("particles: p.star\n")
    proc = snakemake("results/input/particles.star", "--cores", "1", "--configfile", "c.yaml",
                     cwd=tmp_path)
    assert proc.returncode != 0
    assert "'gone.mrcs' (referenced by p.star) not found. Tried" in proc.stderr + proc.stdout
    assert not (tmp_path / "results" / "input" / "particles.star").exists()
