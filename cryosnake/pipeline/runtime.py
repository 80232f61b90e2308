"""How a rule's job runs, for every script in ``scripts/``: its output copied to the rule's log,
clear errors (:func:`rule_job`), its threads (:func:`set_threads`), its memory allocator
(:func:`retain_freed_memory`), its kernel backend (:func:`job_backend`) and the checkout it
imports cryosnake from (:func:`use_package_from`, called by the Snakefile). The jobs themselves
are the other modules of :mod:`cryosnake.pipeline`."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
import traceback
from pathlib import Path

from cryosnake.errors import InputError


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False


def use_package_from(folder) -> None:
    """Put ``folder`` (the checkout holding the Snakefile) first on ``PYTHONPATH`` so that every
    job's script imports this checkout's cryosnake, locally, in a conda env or on SLURM."""
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), *rest])


def job_backend(resources) -> str:
    """The kernel backend of a job: ``cuda`` when the rule gave it a GPU (its ``gpu``
    resource, set from ``compute.backend`` at start-up), else ``cpu``."""
    return "cuda" if int(getattr(resources, "gpu", 0) or 0) > 0 else "cpu"


def set_threads(threads: int, whole_process: bool = False) -> None:
    """Limit numba and BLAS/FFT threads to the rule's ``threads``. ``whole_process``: the
    process runs this one job and ends; if numba is not imported yet, only
    ``NUMBA_NUM_THREADS`` is set (numba sizes its thread pool from it on import), so a job
    that runs no kernel never imports numba (0.3 s, issue 16). Otherwise numba is imported
    and told the number, which a later call can raise again."""
    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "CRYOSNAKE_THREADS"):
        os.environ[var] = str(threads)
    if whole_process and "numba" not in sys.modules:
        limit = int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1)
        os.environ["NUMBA_NUM_THREADS"] = str(min(threads, limit))
        return
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


#: bytes up to which a job process's freed memory stays in its heap (:func:`retain_freed_memory`)
RETAIN_BYTES = 1 << 30

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def retain_freed_memory(limit: int = RETAIN_BYTES) -> bool:
    """Let a job process reuse the memory it frees (glibc's ``malloc``; elsewhere nothing).

    glibc serves every block above its mmap threshold (at most 32 MiB by default) with fresh
    pages and hands them back to the kernel on ``free``, so an E-step, which allocates the same
    20-70 MB work arrays for every batch of images, takes the page faults of all of them again
    in every batch. ``mallopt`` raises the mmap and trim thresholds to ``limit``: such blocks
    come from the heap and are reused. MLF2D E-step of 3000 particles of 64 px (iterations 4
    and 25, three alternating pairs of processes): 4.42 -> 3.85 s and 1.96 -> 1.79 s; peak RSS
    480 -> 528 MB, returned when the job ends (issue 16). Returns whether both settings took
    (``False`` off Linux or without glibc's ``mallopt``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    limit = min(int(limit), 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


@contextlib.contextmanager
def rule_job(log_path=None, threads: int = 1, name: str = "job", end_process: bool = False):
    """Run a rule's body: output to the log (and the console), :class:`InputError` printed as a
    one-paragraph message (no traceback) and exit status 1. Any other error writes its full
    traceback to the log before the log closes, then propagates (Python prints it to the
    console as usual).

    ``end_process``: once the body has succeeded and the log is closed, end the process at once
    (exit status 0) instead of tearing the interpreter down, which takes about 0.2 s after numba
    has run a kernel (issue 16). Only for a job's script, whose outputs are written and closed
    by then; never in a process that goes on (tests). Such a process also keeps the memory it
    frees for reuse (:func:`retain_freed_memory`)."""
    set_threads(threads, whole_process=end_process)
    if end_process:
        retain_freed_memory()
    succeeded = False
    log = None
    stdout, stderr = sys.stdout, sys.stderr
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "w")  # noqa: SIM115
        sys.stdout = _Tee(stdout, log)
        sys.stderr = _Tee(stderr, log)
    start = time.perf_counter()
    try:
        yield
        print(f"[{name}] done in {time.perf_counter() - start:.1f} s")
        succeeded = True
    except InputError as err:
        print(f"\ncryosnake: ERROR: {err}\n", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception:
        if log:
            traceback.print_exc(file=log)
        raise
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        if log:
            log.close()
    if succeeded and end_process:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
