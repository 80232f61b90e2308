"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

# The CUDA parity tests run on a real GPU where there is one, otherwise under numba's CUDA
# simulator; the switch must be set before numba is first imported. ``auto`` never selects the
# simulator, so every other test still runs on the CPU backend.
if not (os.path.exists("/dev/nvidia0") or os.environ.get("CRYOSNAKE_NO_CUDASIM")):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def rng():
    """A seeded generator: tests are deterministic."""
    return np.random.default_rng(20261121)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))


@pytest.fixture(scope="session")
def cuda_backend():
    """The cuda kernel module (real GPU or simulator); skips cleanly where neither applies."""
    import importlib

    from cryosnake import kernels

    if not kernels.cuda_available():
        pytest.skip("neither a CUDA GPU (with CuPy) nor numba's CUDA simulator is available")
    return importlib.import_module("cryosnake.kernels.cuda")


@pytest.fixture(scope="session")
def relion():
    """RELION 3.1's programs as the real client of our files: a function ``run(program, *args,
    cwd)`` that runs one and fails the test with its output on a non-zero exit. Skips where
    RELION is not installed, unless CRYOSNAKE_REQUIRE_RELION=1 (set by .ci/run)."""
    import shutil
    import subprocess

    if shutil.which("relion_reconstruct") is None:
        if os.environ.get("CRYOSNAKE_REQUIRE_RELION") == "1":
            pytest.fail("CRYOSNAKE_REQUIRE_RELION=1 but relion_reconstruct is not on PATH "
                        "(bash .ci/relion/install.sh)")
        pytest.skip("RELION 3.1 is not installed (apt-get install -y relion)")

    def run(program: str, *args, cwd=None) -> str:
        proc = subprocess.run([program, *map(str, args)], cwd=cwd, capture_output=True,
                              text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"{program} {' '.join(map(str, args))} exited {proc.returncode}:\n"
                        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout

    return run
