"""The Snakemake workflow's foundation: the DAG, start-up checks, running from another folder."""

from __future__ import annotations

import re
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


def test_auto_chunks_follow_the_particles_not_the_cores(tmp_path):
    """compute.chunk_size: auto (the default) on 20 000 demo particles of 64 px: three E-step
    jobs of 6667 (cryosnake.io.particles.auto_chunk_size), with 1 core as with 2; an integer
    is taken as is."""
    (tmp_path / "config.yaml").write_text("demo: {n_particles: 20000, box: 64}\n")
    target = "results/ml2d/iter_000/model.json"  # iteration 0 lists every chunk's E-step
    for cores in ("1", "2"):
        out = snakemake(target, "-n", "--cores", cores, "--configfile", "config.yaml",
                        cwd=tmp_path, check=True).stdout
        assert set(re.findall(r"chunk=(\d{4})", out)) == {"0000", "0001", "0002"}, cores
    (tmp_path / "config.yaml").write_text("demo: {n_particles: 20000, box: 64}\n"
                                          "compute: {chunk_size: 5000}\n")
    out = snakemake(target, "-n", "--cores", "2", "--configfile", "config.yaml", cwd=tmp_path,
                    check=True).stdout
    assert set(re.findall(r"chunk=(\d{4})", out)) == {f"{c:04d}" for c in range(4)}


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


def test_cuda_backend_asks_each_estep_for_a_gpu(tmp_path):
    """compute.backend: cuda puts `gpu=1` on the E-step jobs (SLURM: --gpus=1); cpu puts 0.

    The dry run uses numba's CUDA simulator as the "GPU" (a dry run runs no kernel); without
    a GPU or the simulator the same config stops at start-up with the fix.
    """
    import os

    (tmp_path / "g.yaml").write_text("compute:\n  backend: cuda\n")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "1"]
    gpu = subprocess.run([*cmd, "--configfile", "g.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    cpu = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)

    def estep_resources(out):
        blocks = out.split("rule ml2d_estep:")[1:]
        return [b.split("resources:")[1].splitlines()[0] for b in blocks]

    assert gpu.returncode == 0, gpu.stderr[-2000:]
    assert estep_resources(gpu.stdout) and all("gpu=1" in r for r in estep_resources(gpu.stdout))
    assert estep_resources(cpu.stdout) and all("gpu=0" in r for r in estep_resources(cpu.stdout))
    env.pop("NUMBA_ENABLE_CUDASIM")
    env["CUDA_VISIBLE_DEVICES"] = ""  # hide any real GPU: the start-up check must stop the run
    nogpu = subprocess.run([*cmd, "--configfile", "g.yaml"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert nogpu.returncode != 0
    assert "no usable CUDA GPU" in nogpu.stdout + nogpu.stderr
