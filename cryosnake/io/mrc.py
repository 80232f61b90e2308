"""MRC images, stacks and volumes via ``mrcfile``.

Arrays are in mrcfile's order: a stack is ``[n, y, x]``, a volume ``[z, y, x]``. Pixel (voxel)
size is in Å/px and always written to the header so that RELION, cryoSPARC and ChimeraX read
the right scale. All writes are atomic (:mod:`cryosnake.atomic`).
"""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np

from cryosnake.atomic import atomic_path


def _label(mrc) -> None:
    """One header label naming cryosnake (mrcfile's names the time: same data, other bytes)."""
    from cryosnake import __version__

    mrc.header.label[0] = f"{'Created by cryosnake':40s}{__version__:>39s} ".encode()
    mrc.header.nlabl = 1


def write_stack(path, images, sampling: float) -> None:
    """Write ``images`` (``[n, y, x]``) as a float32 MRC image stack (ispg 0, ``.mrcs``)."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim == 2:
        images = images[None]
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(images)
            mrc.set_image_stack()
            mrc.voxel_size = float(sampling)
            mrc.update_header_stats()
            _label(mrc)


def write_volume(path, volume, sampling: float) -> None:
    """Write a ``[z, y, x]`` volume as float32 MRC (ispg 1) with the voxel size in Å."""
    volume = np.ascontiguousarray(volume, dtype=np.float32)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(volume)
            mrc.set_volume()
            mrc.voxel_size = float(sampling)
            mrc.update_header_stats()
            _label(mrc)


def read(path) -> np.ndarray:
    """Read a whole MRC file into memory as float32 (copy)."""
    with mrcfile.open(path, permissive=True) as mrc:
        return np.array(mrc.data, dtype=np.float32)


def open_memmap(path):
    """Open an MRC file memory-mapped, read-only. Returns the ``mrcfile`` object."""
    return mrcfile.mmap(path, mode="r", permissive=True)


def header_info(path) -> dict:
    """Shape (``n, ny, nx`` for stacks and volumes alike) and pixel size (Å, 0 if unset)."""
    with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
        shape = mrc.data.shape
        vs = float(mrc.voxel_size.x)
        is_volume = mrc.is_volume()
    if len(shape) == 2:
        shape = (1, *shape)
    return {"shape": tuple(int(s) for s in shape), "sampling": vs, "is_volume": is_volume,
            "path": str(Path(path))}
