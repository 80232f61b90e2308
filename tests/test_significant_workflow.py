"""Reconstruct Significant through Snakemake from a user stack of averages: a run killed in the
middle of an iteration resumes (intermediates are temporary) to the same volume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cryosnake import demo
from cryosnake.io import mrc

REPO = Path(__file__).resolve().parents[1]
CONFIG = """
significant: {input: averages.mrcs, iterations: 4, angular_sampling: 15.0}
"""

pytestmark = pytest.mark.slow


def cmd(*args):
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args,
            "--cores", "2", "--configfile", "config.yaml"]


def setup_folder(folder: Path) -> None:
    vol = demo.phantom_volume(32, seed=5)
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(24, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    rot, tilt = np.degrees(np.arctan2(dirs[:, 1], dirs[:, 0])), np.degrees(np.arccos(dirs[:, 2]))
    images = np.stack([demo.project(vol, a, b, rng.uniform(0, 360)) for a, b in zip(rot, tilt,
                                                                                    strict=True)])
    images += rng.normal(0, images.std() / 3, images.shape)
    mrc.write_stack(folder / "averages.mrcs", images, 5.0)
    (folder / "config.yaml").write_text(CONFIG)


def test_kill_and_resume_gives_the_same_volume(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    for f in (ref, run):
        f.mkdir()
        setup_folder(f)
    subprocess.run(cmd("significant"), cwd=ref, check=True, capture_output=True)

    proc = subprocess.Popen(cmd("significant"), cwd=run, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    sig = run / "results" / "significant"
    deadline = time.time() + 300
    while time.time() < deadline and not (sig / "logs" / "iter_003.log").exists():
        time.sleep(0.02)  # iteration 3 has started: iteration 2's completion was handled
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (sig / "volume.mrc").exists()
    assert (sig / "iter_002" / "volume.mrc").exists()  # what the resume needs is kept
    assert not (sig / "iter_001" / "volume.mrc").exists()  # temporary intermediates removed
    mtime = (sig / "iter_002" / "stats.json").stat().st_mtime_ns

    subprocess.run(cmd("--unlock"), cwd=run, check=True, capture_output=True)
    subprocess.run(cmd("significant"), cwd=run, check=True, capture_output=True)
    assert (sig / "iter_002" / "stats.json").stat().st_mtime_ns == mtime  # not recomputed
    a = mrc.read(ref / "results" / "significant" / "volume.mrc")
    b = mrc.read(sig / "volume.mrc")
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max())
    assert mrc.header_info(sig / "volume.mrc")["sampling"] == 5.0
