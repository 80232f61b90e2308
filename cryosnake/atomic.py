"""Atomic file writing: write to a temporary file in the same folder, then rename.

A job killed mid-write leaves only a ``.tmp`` file behind, never a half-written output that a
rerun would trust; a disk that fills up leaves the previous file as it was. Outputs get the
permissions the user's umask gives a new file (``0o666 & ~umask``), as ``open`` would, not
``mkstemp``'s private 0o600.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from cryosnake.errors import InputError


def _file_mode() -> int:
    """``0o666`` less the process umask (read by setting it and putting it back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    ``suffix`` defaults to the suffix of ``path`` so that libraries that pick a format from the
    extension (mrcfile, numpy) behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with contextlib.suppress(PermissionError):  # a file system without modes keeps 0o600
            os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = (f"the previous {path.name} is unchanged" if path.exists()
                    else f"{path.name} was not written")
            raise InputError(
                f"{path.parent} is full (no space left while writing {path.name}; {kept}); free "
                "some space or set outdir on a larger disk, then rerun.") from err
        raise


def write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON atomically (numpy scalars and arrays converted)."""

    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"cannot serialise {type(o).__name__}")

    write_text(path, json.dumps(obj, indent=2, default=default) + "\n")


def save_npz(path, **arrays) -> None:
    """``numpy.savez`` atomically (no compression: partial sums are read back at once)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
