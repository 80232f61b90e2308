"""Same inputs, seed and code give the same bytes: with a cold or a warm numba cache (the
first run compiles every kernel, the next loads them), and with 1 or 2 threads per job (the
cold run has 1, the warm one 2)."""

from __future__ import annotations

import pytest
from workflow_run import snakemake

pytestmark = pytest.mark.slow

CONFIG = """
demo: {n_particles: 120, box: 32, views: 3, snr: 1.0, seed: 3}
ml2d: {classes: 3, max_iterations: 2}
significant: {iterations: 2, angular_sampling: 20.0}
compute: {chunk_size: 60, threads: THREADS}
"""
OUTPUTS = ("ml2d/classes.mrcs", "ml2d/particles.star", "significant/volume.mrc",
           "significant/angles.star")


def test_cold_cache_warm_cache_and_threads_give_identical_files(tmp_path):
    cache = tmp_path / "numba_cache"  # empty: the first run compiles every kernel
    runs = {}
    # the warm run also takes 2 threads: identical bytes then show that neither the cache
    # nor the thread count changes a number (two runs instead of three: CI time)
    for name, threads in (("cold", 1), ("warm", 2)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.yaml").write_text(CONFIG.replace("THREADS", str(threads)))
        # the rules that make OUTPUTS (the figures and the report read them, they add none)
        snakemake(folder, "ml2d", "significant", env={"NUMBA_CACHE_DIR": str(cache)})
        runs[name] = {f: (folder / "results" / f).read_bytes() for f in OUTPUTS}
    for f in OUTPUTS:
        assert runs["warm"][f] == runs["cold"][f], f"{f}: the warm 2-thread run differs"
