"""MRC images, stacks and volumes via ``mrcfile``.

Arrays are in mrcfile's order: a stack is ``[n, y, x]``, a volume ``[z, y, x]``. Pixel (voxel)
size is in Å/px and always written to the header so that RELION, cryoSPARC and ChimeraX read
the right scale. All writes are atomic (:mod:`cryosnake.atomic`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mrcfile
import numpy as np

from cryosnake.atomic import atomic_path
from cryosnake.errors import InputError

REEXPORT = "re-export or re-extract it (a copy or download may have been cut short)"


def _label(mrc) -> None:
    """One header label naming cryosnake (mrcfile's names the time: same data, other bytes)."""
    from cryosnake import __version__

    mrc.header.label[0] = f"{'Created by cryosnake':40s}{__version__:>39s} ".encode()
    mrc.header.nlabl = 1


def _write(path, data: np.ndarray, sampling: float, stack: bool) -> None:
    """Write float32 ``data`` atomically: an image stack (ispg 0) or a volume (ispg 1), with
    the pixel size in Å, the header statistics and the cryosnake label."""
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(data)
            if stack:
                mrc.set_image_stack()
            else:
                mrc.set_volume()
            mrc.voxel_size = float(sampling)
            mrc.update_header_stats()
            _label(mrc)


def write_stack(path, images, sampling: float) -> None:
    """Write ``images`` (``[n, y, x]``) as a float32 MRC image stack (ispg 0, ``.mrcs``)."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    _write(path, images[None] if images.ndim == 2 else images, sampling, stack=True)


def write_volume(path, volume, sampling: float) -> None:
    """Write a ``[z, y, x]`` volume as float32 MRC (ispg 1) with the voxel size in Å."""
    _write(path, np.ascontiguousarray(volume, dtype=np.float32), sampling, stack=False)


def _damaged(path, reason: str) -> InputError:
    """The error for a damaged MRC file; ``reason`` is kept for
    :func:`~cryosnake.errors.reading_intermediate`, which gives its own fix."""
    err = InputError(f"{path} is {reason}; {REEXPORT}.")
    err.reason = reason
    return err


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e5 else f"{n_bytes} bytes"


def _contents(header) -> str:
    """What the header says the file holds, in words: '200 images of 64²', 'a 64³ volume'."""
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    plane = f"{nx}²" if nx == ny else f"{ny}×{nx}"
    if int(header.ispg) == 0 or nz == 1:
        return f"{nz} image{'s' if nz != 1 else ''} of {plane}"
    return f"a {nx}³ volume" if nx == ny == nz else f"a {nz}×{ny}×{nx} volume"


def _check_complete(path, m) -> None:
    """Raise :class:`InputError` unless the file holds every byte its header promises."""
    header = m.header
    try:
        itemsize = mrcfile.utils.data_dtype_from_header(header).itemsize
    except ValueError as err:
        raise _damaged(path, f"not a readable MRC file ({err})") from None
    expected = (1024 + int(header.nsymbt)
                + int(header.nx) * int(header.ny) * int(header.nz) * itemsize)
    held = Path(path).stat().st_size
    if held < expected:
        raise _damaged(path, f"truncated: it holds {_megabytes(held)}, its header says "
                             f"{_contents(header)} = {_megabytes(expected)}")
    if m.data is None:
        raise _damaged(path, f"not a readable MRC file (no data for the header's nx, ny, nz = "
                             f"{header.nx}, {header.ny}, {header.nz}, mode {header.mode})")


def _open(opener, path, **kwargs):
    """Open ``path`` with ``opener`` (``mrcfile.open`` or ``mrcfile.mmap``), permissively, and
    check that it is complete. mrcfile's warnings are passed on only for a complete file (for a
    damaged one the :class:`InputError` says it all)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            m = opener(path, permissive=True, **kwargs)
        except ValueError as err:
            raise _damaged(path, f"not a readable MRC file ({err})") from None
    try:
        _check_complete(path, m)
    except InputError:
        m.close()
        raise
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return m


def read(path) -> np.ndarray:
    """Read a whole MRC file into memory as float32 (copy), in the file's shape."""
    with _open(mrcfile.open, path) as m:
        return np.array(m.data, dtype=np.float32)


def read_stack(path) -> np.ndarray:
    """Read an image stack as float32 ``[n, y, x]``: a one-image file gives ``n = 1``."""
    images = read(path)
    return images[None] if images.ndim == 2 else images


def open_memmap(path):
    """Open a complete MRC file memory-mapped, read-only. Returns the ``mrcfile`` object."""
    return _open(mrcfile.mmap, path, mode="r")


def header_info(path) -> dict:
    """Shape (``n, ny, nx`` for stacks and volumes alike) and pixel size (Å, 0 if unset)."""
    with open_memmap(path) as m:
        shape = m.data.shape
        vs = float(m.voxel_size.x)
        is_volume = m.is_volume()
    if len(shape) == 2:
        shape = (1, *shape)
    return {"shape": tuple(int(s) for s in shape), "sampling": vs, "is_volume": is_volume,
            "path": str(Path(path))}
