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


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """A complete run, untouched: the volume a killed-and-resumed run must reproduce."""
    ref = tmp_path_factory.mktemp("ref")
    setup_folder(ref)
    subprocess.run(cmd("significant"), cwd=ref, check=True, capture_output=True)
    return ref


def test_kill_and_resume_gives_the_same_volume(tmp_path, reference_run):
    ref, run = reference_run, tmp_path / "run"
    run.mkdir()
    setup_folder(run)

    proc = subprocess.Popen(cmd("significant"), cwd=run, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    sig = run / "results" / "significant"
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "results/logs/significant/iter_003.log").exists():
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


@pytest.mark.relion
def test_relion_reconstruct_reads_our_angles(reference_run, relion, tmp_path):
    """RELION 3.1's own relion_reconstruct, from significant/angles.star and the averages it
    names, gives our volume: Euler angles (ZYZ), origins in Å and hand are RELION's. The
    reconstructions differ in gridding and weighting only, so the FSC is ~1 at low resolution
    and stays high; a psi of the wrong sign or origins of the wrong sign fall far below."""
    import pandas as pd
    import starfile

    from cryosnake.volume3d.fsc import fsc

    ours = mrc.read(reference_run / "results" / "significant" / "volume.mrc")
    blocks = starfile.read(reference_run / "results" / "significant" / "angles.star",
                           always_dict=True)
    particles = blocks["particles"]
    assert particles["rlnOriginXAngst"].abs().max() > 5.0  # shifts big enough to test

    def relion_fsc(name: str, table: pd.DataFrame) -> np.ndarray:
        star = tmp_path / f"{name}.star"
        starfile.write({"optics": blocks["optics"], "particles": table}, star)
        relion("relion_reconstruct", "--i", star, "--o", tmp_path / f"{name}.mrc",
               cwd=reference_run)
        theirs = mrc.read(tmp_path / f"{name}.mrc")
        assert theirs.shape == ours.shape
        return fsc(ours, theirs)[1]

    # the file exactly as written (copied so that RELION's outputs stay in tmp_path)
    as_written = relion_fsc("angles", particles)
    print("FSC(ours, RELION's) by shell:", np.round(as_written[1:], 3))
    n = ours.shape[0]
    assert (as_written[1:n // 5 + 1] >= 0.9).all()  # to 25 Å (5 Å/px, 32 px)
    assert (as_written[1:n // 3 + 1] >= 0.7).all()  # to 16 Å
    for name, wrong in (("psi", particles.assign(rlnAnglePsi=-particles["rlnAnglePsi"])),
                        ("origin", particles.assign(rlnOriginXAngst=-particles["rlnOriginXAngst"],
                                                    rlnOriginYAngst=-particles["rlnOriginYAngst"]))):
        assert relion_fsc(name, wrong)[1:n // 3 + 1].min() < 0.5, name
