"""Memory-mapped access to the particles of a canonical STAR (``{outdir}/input/particles.star``).

:class:`ParticleStack` opens each MRC stack once, memory-mapped, and reads any subset of rows,
so a chunk job touches only the pages of its own particles. Image paths resolve like RELION
(relative to the working directory) and, failing that, relative to the STAR file's folder.

:class:`ParticleIndex` reads the same images from the run's particle index
(``{outdir}/ml2d/start/particles.npz``, :func:`write_particle_index`): the image locations and
the CTF of every particle as arrays, written once by the start job, so that an E-step job needs
neither the STAR parser nor pandas (a quarter of a second of every job's start, issue 16) and
does not parse the whole STAR to find its chunk.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cryosnake.atomic import save_npz
from cryosnake.ctf import CTFParams
from cryosnake.errors import InputError, reading_intermediate
from cryosnake.io import mrc

if TYPE_CHECKING:
    import pandas as pd


def resolve_stack(path: str, star_dir: Path | None, source: Path | None = None) -> Path:
    """Find an image stack: as given (relative to the working directory, RELION's rule), then
    relative to ``star_dir``. The error names both places tried."""
    path = str(path)
    p = Path(path)
    if p.is_file():
        return p
    tried = [p.absolute()]
    if not p.is_absolute() and star_dir is not None:
        q = Path(star_dir) / p
        if q.is_file():
            return q
        if q.absolute() not in tried:
            tried.append(q.absolute())
    where = f" (referenced by {source})" if source else ""
    raise InputError(
        f"image stack {path!r}{where} not found. Tried: {' and '.join(map(str, tried))}. "
        "RELION resolves rlnImageName relative to the folder you run in: run snakemake from "
        "your project folder, or fix the paths in the STAR file."
    )


def read_image_names(names, star_dir: Path | None = None, source=None) -> np.ndarray:
    """Read the images named ``N@stack`` (RELION ``rlnImageName`` / ``rlnReferenceImage``)."""
    from cryosnake.io import star

    index, paths = star.split_image_names(names)
    out = []
    for i, p in zip(index, paths, strict=True):
        with mrc.open_memmap(resolve_stack(p, star_dir, source)) as m:
            data = m.data if m.data.ndim == 3 else m.data[None]
            if not 1 <= int(i) <= len(data):
                raise InputError(f"{source}: image {int(i)}@{p} is beyond the end of the stack "
                                 f"({len(data)} images).")
            out.append(np.array(data[int(i) - 1], dtype=np.float32))
    return np.stack(out)


#: Columns that name the images of a STAR file of references or averages, in order of preference.
IMAGE_COLUMNS = ("rlnReferenceImage", "rlnImageName")


def read_image_stack(path, setting: str) -> tuple[np.ndarray, list[str], dict[str, pd.DataFrame]]:
    """The images of an MRC stack, or those a STAR file names (:data:`IMAGE_COLUMNS` of its
    ``data_particles`` table, else its first table): ``(images [n, N, N], names "k@stack",
    the STAR's blocks or {})``. ``setting`` (the config key, e.g. ``ml2d.references``) starts
    the error messages."""
    from cryosnake.io import star

    path = Path(path)
    if path.suffix == ".star":
        blocks = star.read_blocks(path)
        table = star.main_table(blocks)
        col = next((c for c in IMAGE_COLUMNS if c in table), None)
        if col is None:
            raise InputError(f"{setting} = {path}: no rlnReferenceImage or rlnImageName column.")
        names = list(table[col])
        return read_image_names(names, path.parent, path), names, blocks
    images = mrc.read_stack(path)
    return images, [f"{k + 1:06d}@{path}" for k in range(len(images))], {}


def chunk_rows(n_particles: int, chunk_size: int, chunk: int) -> np.ndarray:
    """Row indices of chunk ``chunk`` (0-based) when ``n_particles`` are cut every
    ``chunk_size``."""
    start = chunk * chunk_size
    if chunk < 0 or start >= n_particles:
        raise IndexError(f"chunk {chunk} out of range for {n_particles} particles")
    return np.arange(start, min(n_particles, start + chunk_size))


def n_chunks(n_particles: int, chunk_size: int) -> int:
    """Number of E-step chunks."""
    return max(1, -(-n_particles // chunk_size))


#: ``compute.chunk_size: auto``: image pixels (particles × box²) a chunk holds at least, so that
#: its E-step computes for long enough to outweigh a job's start-up (about 1.5-2.5 s: Python,
#: imports, numba cache) many times over (2**25 px: 8192 particles of 64 px, about 30 s of ML2D
#: fast on 2 cores) ...
AUTO_CHUNK_MIN_PIXELS = 2**25
#: ... and at most, so that an E-step job's memory stays bounded: about 1.5 GB + pixels × 32
#: bytes (rule ml2d_estep's mem_mb), here 5.5 GB whatever the number of particles.
AUTO_CHUNK_MAX_PIXELS = 2**27
#: ... and between the two, the number of chunks a large set is cut into (jobs that can run
#: side by side on a cluster).
AUTO_CHUNKS = 16


def auto_chunk_size(n_particles: int, box: int) -> int:
    """``compute.chunk_size: auto``: particles per E-step job from the particle count and the
    box (px), never from the cores, so a rerun with other ``--cores`` finds the same chunks.

    ``ceil(n / AUTO_CHUNKS)`` clamped to ``[ceil(AUTO_CHUNK_MIN_PIXELS / box²),
    AUTO_CHUNK_MAX_PIXELS // box²]``, then evened out over the chunks it gives (``ceil(n /
    n_chunks)``: 6000 particles of 64 px are two chunks of 3000, not 4096 + 1904).
    """
    n, pixels = max(1, int(n_particles)), int(box) ** 2
    most = max(1, AUTO_CHUNK_MAX_PIXELS // pixels)
    least = min(most, -(-AUTO_CHUNK_MIN_PIXELS // pixels))
    size = min(most, max(least, -(-n // AUTO_CHUNKS)))
    return -(-n // n_chunks(n, size))


def resolve_chunk_size(chunk_size: int | str, n_particles: int, box: int) -> int:
    """``compute.chunk_size`` as a number of particles: an integer as given, ``auto`` by
    :func:`auto_chunk_size`."""
    if chunk_size == "auto":
        return auto_chunk_size(n_particles, box)
    return int(chunk_size)


class _MappedImages:
    """Images named per particle by a stack (one of ``stacks``, the paths as written in the
    STAR; ``stack_of`` ``[n]``) and a 0-based index into it (``index0`` ``[n]``), read from
    memory-mapped stacks opened on first use (``star_path``: where the paths came from, for
    RELION's fallback folder and the error messages)."""

    def __init__(self, stacks, stack_of, index0, star_path):
        self.star_path = Path(star_path)
        self._stacks = [str(p) for p in stacks]
        self._stack_of = np.asarray(stack_of, dtype=np.int64)
        self._index0 = np.asarray(index0, dtype=np.int64)
        self._maps: dict[int, object] = {}

    @property
    def n(self) -> int:
        return len(self._index0)

    def _data(self, stack: int) -> np.ndarray:
        if stack not in self._maps:
            path = resolve_stack(self._stacks[stack], self.star_path.parent, self.star_path)
            self._maps[stack] = mrc.open_memmap(path)
        data = self._maps[stack].data
        return data[None] if data.ndim == 2 else data

    def read(self, rows) -> np.ndarray:
        """Images of ``rows`` (input order), float32 ``[len(rows), box, box]``."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.box, self.box), dtype=np.float32)
        stacks = self._stack_of[rows]
        for stack in np.unique(stacks):
            sel = np.flatnonzero(stacks == stack)
            out[sel] = self._data(int(stack))[self._index0[rows[sel]]]
        return out

    def read_chunk(self, chunk: int, chunk_size: int) -> np.ndarray:
        """Images of one E-step chunk."""
        return self.read(chunk_rows(self.n, chunk_size, chunk))

    def close(self) -> None:
        for m in self._maps.values():
            m.close()
        self._maps.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ParticleStack(_MappedImages):
    """The particles of a canonical RELION 3.1 STAR, read lazily from memory-mapped stacks.

    Attributes: ``table`` (particles with optics merged per row), ``optics``, ``n``, ``box``,
    ``sampling`` (Å/px).
    """

    def __init__(self, star_path):
        from cryosnake.io import star

        particles, optics = star.read_particles(star_path)
        self.particles = particles
        self.optics = optics
        self.table = star.merge_optics(particles, optics)
        index, paths = star.split_image_names(particles["rlnImageName"])
        stacks, stack_of = np.unique(np.asarray(paths, dtype=str), return_inverse=True)
        super().__init__(stacks, stack_of, index.astype(np.int64) - 1, star_path)

    @cached_property
    def box(self) -> int:
        if "rlnImageSize" in self.table:
            return int(self.table["rlnImageSize"].iloc[0])
        return int(self._data(int(self._stack_of[0])).shape[-1])

    @cached_property
    def sampling(self) -> float:
        return float(self.table["rlnImagePixelSize"].iloc[0])


#: The CTF columns of a particle index: ``ctf_<field>`` for each field of :class:`CTFParams`.
_CTF_FIELDS = tuple(CTFParams.__dataclass_fields__)


def write_particle_index(path, ps: ParticleStack, ctf: CTFParams | None = None,
                         phase_flipped: bool | None = None) -> None:
    """The run's particle index (``.npz``, read by :class:`ParticleIndex`): the image
    locations of ``ps`` (each particle's stack path as in the STAR and its 0-based index), its
    box and sampling, the STAR it came from, ``ctf`` (every particle's, or none) and the
    resolved ``phase_flipped`` of MLF2D (``None``: not applicable)."""
    arrays = {"star": np.array(str(ps.star_path)), "stacks": np.array(ps._stacks, dtype=str),
              "stack": ps._stack_of.astype(np.int32), "index": ps._index0,
              "box": np.array(ps.box), "sampling": np.array(ps.sampling),
              "phase_flipped": np.array(-1 if phase_flipped is None else int(phase_flipped))}
    if ctf is not None:
        for name in _CTF_FIELDS:
            arrays[f"ctf_{name}"] = np.broadcast_to(
                np.asarray(getattr(ctf, name), dtype=np.float64), (ps.n,)).copy()
    save_npz(path, **arrays)


class ParticleIndex(_MappedImages):
    """The particles of a run as its particle index (:func:`write_particle_index`) describes
    them: ``n``, ``box``, ``sampling`` (Å/px), ``ctf`` (:class:`CTFParams` of every particle,
    or ``None``), ``phase_flipped`` (``None`` where the start job had none to resolve), and
    :meth:`read` as for :class:`ParticleStack`. Reads no STAR and imports no pandas."""

    def __init__(self, path):
        with reading_intermediate(path), np.load(path) as z:
            star_path = str(z["star"])
            stacks, stack_of, index0 = z["stacks"], z["stack"], z["index"]
            self.box = int(z["box"])
            self.sampling = float(z["sampling"])
            flipped = int(z["phase_flipped"])
            self.ctf = (CTFParams(**{name: z[f"ctf_{name}"] for name in _CTF_FIELDS})
                        if f"ctf_{_CTF_FIELDS[0]}" in z else None)
        self.phase_flipped = None if flipped < 0 else bool(flipped)
        super().__init__(stacks, stack_of, index0, star_path)
