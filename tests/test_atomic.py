"""Atomic outputs: a job killed while writing never leaves a file under the final name."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cryosnake.atomic import atomic_path, save_npz
from cryosnake.io.classify2d import read_sums, write_sums
from cryosnake.ml2d import Sums

WRITER = """
import sys, time
from cryosnake.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as fh:
        for _ in range(1000):
            fh.write(b"x" * 100_000)
            fh.flush()
            time.sleep(0.01)
"""


def test_killed_writer_leaves_no_final_file(tmp_path):
    final = tmp_path / "iter_003" / "chunks" / "sums_0001.npz"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(final)])
    deadline = time.time() + 60
    while time.time() < deadline and not list(final.parent.glob("*.tmp*")):
        time.sleep(0.02)
    time.sleep(0.2)  # mid-write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not final.exists()  # the M-step's input never appears half-written
    leftovers = list(final.parent.glob(".sums_0001.npz.*.tmp.npz"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0


def test_failed_write_cleans_up_and_success_replaces(tmp_path):
    target = tmp_path / "model.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    sums = Sums.zeros(2, 8)
    sums.noise_sum = 3.5
    save_npz(tmp_path / "s.npz", a=np.arange(3))
    write_sums(tmp_path / "sums.npz", sums)
    assert read_sums(tmp_path / "sums.npz", Sums).noise_sum == 3.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "s.npz", "sums.npz"]
