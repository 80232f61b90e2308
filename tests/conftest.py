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
