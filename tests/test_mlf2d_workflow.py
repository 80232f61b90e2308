"""MLF2D through Snakemake (``ml2d.fourier: true``): the ML2D outputs plus the noise spectra
and SSNR in the model, and the checks before compute (CTF columns, pixel size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from cryosnake.io import mrc

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def snakemake(folder, *targets, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *targets,
           "--cores", "2", "--configfile", "config.yaml"]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_mlf2d_run_writes_the_ml2d_outputs(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "demo: {n_particles: 200, box: 32, views: 3, snr: 0.3, seed: 4, ctf: true}\n"
        "ml2d: {classes: 3, max_iterations: 3, seed: 2, fourier: true}\n"
        "compute: {chunk_size: 100, threads: 1}\n")
    snakemake(tmp_path, "ml2d")
    out = tmp_path / "results" / "ml2d"
    classes = mrc.read(out / "classes.mrcs")
    assert classes.shape == (3, 32, 32) and np.isfinite(classes).all()
    assert mrc.header_info(out / "classes.mrcs")["sampling"] == pytest.approx(4.0)
    table = starfile.read(out / "classes.star")
    assert table["cryosnakeParticleCount"].sum() == 200
    particles = starfile.read(out / "particles.star")["particles"]
    inp = starfile.read(tmp_path / "results" / "input" / "particles.star")["particles"]
    assert particles["rlnImageName"].tolist() == inp["rlnImageName"].tolist()
    for col in ("rlnClassNumber", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
                "cryosnakeMirror", "rlnMaxValueProbDistribution", "rlnLogLikeliContribution",
                "rlnDefocusU"):
        assert col in particles
    assert set(particles["rlnClassNumber"]) <= {1, 2, 3}
    model = json.loads((out / "model.json").read_text())
    assert model["fourier"] is True and model["iteration"] == 3
    assert model["shell_high"] == round(32 * 4.0 / 20.0)  # default high_res_limit 20 Å
    spectra = np.array(model["noise_spectra"])
    assert spectra.shape == (len(model["group_defocus"]), 16) and (spectra > 0).all()
    assert len(model["group_defocus"]) > 1  # defocus 1-3 µm: several defocus groups
    assert np.array(model["ssnr"]).shape == (3, 16)
    for i in range(4):  # iteration 0 (generated classes) .. 3
        m = json.loads((out / f"iter_{i:03d}" / "model.json").read_text())
        assert m["fourier"] is True and np.isfinite(m["loglik"])
    start_log = (tmp_path / "results" / "logs" / "ml2d_start.log").read_text()
    assert "MLF2D start model" in start_log
    # phase_flipped: auto (default) reads the demo's rlnCtfDataArePhaseFlipped 0
    assert "phase flipped: false (auto: rlnCtfDataArePhaseFlipped = 0 in the input)" in start_log


def test_mlf2d_without_ctf_columns_stops_at_import(tmp_path):
    imgs = np.random.default_rng(0).normal(size=(4, 16, 16)).astype(np.float32)
    mrc.write_stack(tmp_path / "s.mrcs", imgs, 2.0)
    starfile.write(pd.DataFrame({"rlnImageName": [f"{i + 1}@s.mrcs" for i in range(4)],
                                 "rlnImagePixelSize": 2.0}), tmp_path / "p.star")
    (tmp_path / "config.yaml").write_text("particles: p.star\nml2d: {fourier: true}\n")
    proc = snakemake(tmp_path, "ml2d", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "MLF2D" in log and "rlnDefocusU" in log and "ctf_correction: false" in log
    assert not (tmp_path / "results" / "ml2d").exists()  # stopped before any compute


def test_mlf2d_without_pixel_size_stops_at_import(tmp_path):
    """No CTF correction still needs the pixel size (resolution limit in Å)."""
    imgs = np.random.default_rng(0).normal(size=(4, 16, 16)).astype(np.float32)
    mrc.write_stack(tmp_path / "s.mrcs", imgs, 0.0)
    (tmp_path / "config.yaml").write_text(
        "particles: s.mrcs\nml2d: {fourier: true, ctf_correction: false}\n")
    proc = snakemake(tmp_path, "ml2d", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "no pixel size" in log and "sampling:" in log
    assert not (tmp_path / "results" / "ml2d").exists()
