"""The whole workflow on a tiny demo: demo -> ML2D -> Reconstruct Significant -> figures ->
summary -> Snakemake report (what reruns after which change: tests/test_workflow_rerun.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from cryosnake.io import mrc

REPO = Path(__file__).resolve().parents[1]
CONFIG = """
demo: {n_particles: 150, box: 32, views: 3, snr: 1.0, seed: 3}
ml2d: {classes: 3, max_iterations: 3}
significant: {iterations: 3, angular_sampling: 15.0}
compute: {chunk_size: 75, threads: 1}
"""

pytestmark = pytest.mark.slow


def snakemake(folder, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args,
           "--cores", "2", "--configfile", "config.yaml"]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    (folder / "config.yaml").write_text(CONFIG)
    proc = snakemake(folder)
    return folder, proc.stdout + proc.stderr


@pytest.mark.parametrize("png,min_panels", [
    ("ml2d/gallery.png", 3), ("ml2d/convergence.png", 5), ("significant/volume.png", 6),
    ("significant/angular_distribution.png", 1), ("significant/progress.png", 2),
])
def test_figures_from_a_real_run(run_folder, png, min_panels):
    folder, _ = run_folder
    img = mpimg.imread(folder / "results" / png)
    assert img.ndim == 3 and 300 <= img.shape[0] <= 3000 and 300 <= img.shape[1] <= 3000
    assert img[..., :3].var() > 1e-3  # not blank


def test_volume_and_summary(run_folder):
    folder, log = run_folder
    vol = mrc.read(folder / "results" / "significant" / "volume.mrc")
    assert vol.shape == (32, 32, 32) and np.isfinite(vol).all() and vol.std() > 0
    assert mrc.header_info(folder / "results" / "significant" / "volume.mrc")["sampling"] == 4.0
    summary = (folder / "results" / "summary.txt").read_text()
    assert "classes: 3" in summary and "volume: results/significant/volume.mrc" in summary
    assert "cryosnake run summary" in log  # printed on the console too
    # intermediates are temporary without keep_intermediate; stats are kept for the plots
    sig = folder / "results" / "significant"
    assert not (sig / "iter_001" / "volume.mrc").exists()
    assert (sig / "iter_001" / "stats.json").exists()


def test_report_builds(run_folder):
    folder, _ = run_folder
    snakemake(folder, "--report", "report.html")
    html = (folder / "report.html").read_text(errors="replace")
    assert len(html) > 50_000
    for name in ("gallery.png", "convergence.png", "volume.png", "angular_distribution.png",
                 "progress.png"):
        assert name in html
