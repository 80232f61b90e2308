"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def rng():
    """A seeded generator: tests are deterministic."""
    return np.random.default_rng(20261121)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
