"""ML2D through Snakemake: resume after a kill, determinism, convergence ends the chain,
outputs RELION reads back (poses that bring particles onto their class)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import starfile

from cryosnake.classify2d.poses import apply_pose
from cryosnake.io import mrc
from cryosnake.io.particles import ParticleStack

REPO = Path(__file__).resolve().parents[1]
CONFIG = """
demo: {n_particles: 200, box: 32, views: 3, snr: 0.3, seed: 4}
ml2d: {classes: 3, max_iterations: 4, seed: 2}
compute: {chunk_size: 100, threads: 1}
"""

pytestmark = pytest.mark.slow


def snakemake_cmd(*args):
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args,
            "--cores", "2", "--configfile", "config.yaml"]


def run(folder, *targets):
    proc = subprocess.run(snakemake_cmd(*targets), cwd=folder, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def outputs(folder):
    ml2d = Path(folder) / "results" / "ml2d"
    return {
        "classes": mrc.read(ml2d / "classes.mrcs"),
        "particles": starfile.read(ml2d / "particles.star")["particles"],
        "model": json.loads((ml2d / "model.json").read_text()),
    }


def assert_same(a, b):
    np.testing.assert_array_equal(a["classes"], b["classes"])
    cols = ["rlnClassNumber", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
            "cryosnakeMirror", "rlnMaxValueProbDistribution", "rlnLogLikeliContribution"]
    np.testing.assert_array_equal(a["particles"][cols].to_numpy(), b["particles"][cols].to_numpy())
    assert a["model"] == b["model"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    (folder / "config.yaml").write_text(CONFIG)
    run(folder, "ml2d")
    return folder


def test_outputs_are_complete_and_read_back(reference_run):
    out = outputs(reference_run)
    ml2d = reference_run / "results" / "ml2d"
    assert out["classes"].shape == (3, 32, 32)
    assert mrc.header_info(ml2d / "classes.mrcs")["sampling"] == pytest.approx(4.0)
    classes = starfile.read(ml2d / "classes.star")
    assert classes["rlnReferenceImage"].tolist() == [
        f"{k:06d}@results/ml2d/classes.mrcs" for k in (1, 2, 3)]
    assert classes["cryosnakeParticleCount"].sum() == 200
    np.testing.assert_allclose(classes["rlnClassDistribution"].sum(), 1.0, atol=1e-6)
    # same rows, same order, same image names as the input
    inp = starfile.read(reference_run / "results" / "input" / "particles.star")["particles"]
    assert out["particles"]["rlnImageName"].tolist() == inp["rlnImageName"].tolist()
    assert set(out["particles"]["rlnClassNumber"]) <= {1, 2, 3}
    for i in range(1, 5):
        m = json.loads((ml2d / f"iter_{i:03d}" / "model.json").read_text())
        for key in ("sigma_noise", "sigma_offset", "class_fractions", "mirror_fractions",
                    "loglik", "ave_pmax", "signal_change", "converged"):
            assert key in m
    assert not (ml2d / "iter_005").exists()


def test_written_poses_bring_particles_onto_their_class(reference_run, monkeypatch):
    """Apply (origin, mirror, psi) from particles.star to each image: it must correlate with
    its own class average better than with the other classes, for nearly every particle."""
    monkeypatch.chdir(reference_run)  # image paths are relative to the run folder (RELION)
    out = outputs(reference_run)
    p = out["particles"]
    with ParticleStack(reference_run / "results" / "input" / "particles.star") as ps:
        images = ps.read(np.arange(ps.n))
    aligned = apply_pose(images, p["rlnAnglePsi"].to_numpy(), p["rlnOriginXAngst"].to_numpy() / 4,
                         p["rlnOriginYAngst"].to_numpy() / 4, p["cryosnakeMirror"].to_numpy())
    disc = np.hypot(*np.mgrid[-16:16, -16:16]) < 13
    a = aligned[:, disc] - aligned[:, disc].mean(1, keepdims=True)
    c = out["classes"][:, disc] - out["classes"][:, disc].mean(1, keepdims=True)
    corr = (a @ c.T) / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(c, axis=1))
    own = corr[np.arange(len(p)), p["rlnClassNumber"].to_numpy() - 1]
    assert np.mean(own >= corr.max(axis=1) - 1e-9) > 0.95
    assert np.median(own) > 0.25  # SNR 0.3: a single image vs the clean-ish average


def test_resume_after_kill_equals_uninterrupted(reference_run, tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG)
    run(tmp_path, "results/ml2d/iter_002/model.json")  # stop cleanly after iteration 2
    ml2d = tmp_path / "results" / "ml2d"
    done = [ml2d / f"iter_{i:03d}" / "model.json" for i in (0, 1, 2)]
    mtimes = [p.stat().st_mtime_ns for p in done]
    chunk_mtimes = {p: p.stat().st_mtime_ns for p in (ml2d / "iter_002" / "chunks").iterdir()}

    # start the rest, kill the whole process group in the middle of iteration 3
    proc = subprocess.Popen(snakemake_cmd("ml2d"), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((ml2d / "iter_003").glob("chunks/sums_*.npz")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (ml2d / "iter_003" / "model.json").exists()

    subprocess.run(snakemake_cmd("--unlock"), cwd=tmp_path, check=True, capture_output=True)
    run(tmp_path, "ml2d")  # resume
    assert [p.stat().st_mtime_ns for p in done] == mtimes  # iterations 0-2 not recomputed
    assert {p: p.stat().st_mtime_ns for p in chunk_mtimes} == chunk_mtimes
    assert_same(outputs(tmp_path), outputs(reference_run))  # same seed -> identical outputs


def test_convergence_ends_the_chain(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "demo: {n_particles: 120, box: 32, views: 2, snr: 5.0, seed: 1}\n"
        "ml2d: {classes: 2, max_iterations: 60}\n"
        "compute: {chunk_size: 120, threads: 1}\n")
    run(tmp_path, "ml2d")
    ml2d = tmp_path / "results" / "ml2d"
    models = sorted(ml2d.glob("iter_*/model.json"))
    last = json.loads(models[-1].read_text())
    assert last["converged"] and len(models) - 1 < 60
    assert all(not json.loads(m.read_text())["converged"] for m in models[:-1])
    n_last = last["iteration"]
    assert not (ml2d / f"iter_{n_last + 1:03d}").exists()  # no E-step after convergence
    assert json.loads((ml2d / "model.json").read_text())["iteration"] == n_last
