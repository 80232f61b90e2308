"""RELION STAR files (3.0 and 3.1+) through ``starfile``.

cryosnake's canonical particle table is RELION 3.1: a ``data_optics`` table (one row per optics
group: ``rlnOpticsGroup``, ``rlnImagePixelSize`` in Å/px, ``rlnImageSize``, ``rlnVoltage`` in kV,
``rlnSphericalAberration`` in mm, ``rlnAmplitudeContrast``) and a ``data_particles`` table in
input order. Columns we do not use pass straight through, as RELION does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from cryosnake import ctf
from cryosnake.atomic import write_text
from cryosnake.errors import InputError

#: Per-particle columns that RELION 3.1 keeps in the optics table.
OPTICS_COLUMNS = ("rlnImagePixelSize", "rlnImageSize", "rlnImageDimensionality",
                  *ctf.OPTICS_COLUMNS)


def read_blocks(path) -> dict[str, pd.DataFrame]:
    """Read every data block of a STAR file; a clear :class:`InputError` if it is malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"the STAR file {path} does not exist. Check the path in your config.")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as err:  # starfile raises ValueError, KeyError, IndexError, ...
        raise InputError(
            f"{path} is not a readable STAR file ({type(err).__name__}: {err}). Every row of a "
            "loop_ must have one value per _label, values with spaces must be quoted; open the "
            "file in a text editor near the reported problem, or re-export it from RELION."
        ) from err
    blocks = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    for name, table in blocks.items():
        twice = table.columns[table.columns.duplicated()]
        if len(twice):
            raise InputError(f"{path}: data_{name} has the label _{twice[0]} twice; each label "
                             "names one column. Fix the file or re-export it.")
    if not blocks:
        raise InputError(f"{path} contains no loop_ table; expected data_particles (RELION).")
    return blocks


def main_table(blocks: dict[str, pd.DataFrame], block: str = "particles") -> pd.DataFrame:
    """The ``data_<block>`` table of :func:`read_blocks`' result, else its first table."""
    return blocks.get(block, next(iter(blocks.values())))


def read_table(path, block: str) -> pd.DataFrame:
    """The ``data_<block>`` table of a STAR file, or its only table; an :class:`InputError`
    naming the tables there when it has several and none is ``data_<block>``."""
    blocks = read_blocks(path)
    if block in blocks:
        return blocks[block]
    if len(blocks) == 1:
        return next(iter(blocks.values()))
    raise InputError(f"{path}: no data_{block} table (tables: {sorted(blocks)})")


def read_particles(path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Return ``(particles, optics)`` from a RELION 3.0 or 3.1+ STAR file.

    RELION 3.0 files have a single particle table and ``optics`` is None. The particle table
    must have ``rlnImageName``.
    """
    path = Path(path)
    blocks = read_blocks(path)
    optics = blocks.get("optics")
    if "particles" in blocks:
        particles = blocks["particles"]
    elif len(blocks) - (optics is not None) == 1:
        particles = next(v for k, v in blocks.items() if k != "optics")
    else:
        raise InputError(
            f"{path} has data blocks {sorted(blocks)} but no data_particles; cryosnake reads "
            "RELION particle STAR files (data_optics + data_particles, or one RELION 3.0 table)."
        )
    if "rlnImageName" not in particles.columns:
        raise InputError(
            f"{path}: the particle table has no rlnImageName column (columns: "
            f"{', '.join(map(str, particles.columns))}). Point `particles:` at a particle STAR "
            "file (e.g. RELION Extract/job*/particles.star), not a micrograph or model STAR."
        )
    if optics is not None and "rlnOpticsGroup" not in optics.columns:
        raise InputError(f"{path}: data_optics has no rlnOpticsGroup column.")
    return particles.reset_index(drop=True), optics


def merge_optics(particles: pd.DataFrame, optics: pd.DataFrame | None) -> pd.DataFrame:
    """Per-particle view: copy each optics-group value onto its particles (a new frame)."""
    if optics is None:
        return particles.copy()
    if "rlnOpticsGroup" not in particles.columns:
        if len(optics) != 1:
            raise InputError("particles have no rlnOpticsGroup but there are several groups")
        particles = particles.assign(rlnOpticsGroup=optics["rlnOpticsGroup"].iloc[0])
    cols = [c for c in optics.columns if c not in particles.columns or c == "rlnOpticsGroup"]
    merged = particles.merge(optics[cols], on="rlnOpticsGroup", how="left", sort=False)
    return merged


def write_blocks(path, blocks: dict[str, pd.DataFrame]) -> None:
    """Write STAR data blocks atomically. The first line names cryosnake and its version
    instead of starfile's time stamp, so the same results give the same bytes."""
    from cryosnake import __version__

    text = starfile.to_string(blocks, float_format="%.6f")
    if text.startswith("# Created by the starfile"):
        text = text[text.index("\n") + 1:]
    write_text(path, f"# cryosnake {__version__}\n{text}")


#: What an optics group without CTF metadata gets on writing (300 kV, 2.7 mm, 10 %): RELION 3.1
#: reads ``rlnVoltage``, ``rlnSphericalAberration`` and ``rlnAmplitudeContrast`` of every optics
#: group even when it does not correct the CTF, and stops without them ("trying to read image
#: with empty file name!"). They mean nothing without per-particle ``rlnDefocusU``.
NOMINAL_OPTICS = dict(zip(ctf.OPTICS_COLUMNS, (300.0, 2.7, 0.1), strict=True))


def write_particles(path, particles: pd.DataFrame, optics: pd.DataFrame) -> None:
    """Write a RELION 3.1 particle STAR (optics + particles) atomically; optics groups without
    CTF columns get :data:`NOMINAL_OPTICS` so that RELION's programs read the file."""
    missing = {k: v for k, v in NOMINAL_OPTICS.items() if k not in optics}
    if missing:
        optics = optics.assign(**missing)
    write_blocks(path, {"optics": optics, "particles": particles})


def write_table(path, table: pd.DataFrame, block: str) -> None:
    """Write one table as ``data_<block>`` atomically."""
    write_blocks(path, {block: table})


def split_image_names(names) -> tuple[np.ndarray, np.ndarray]:
    """``'000012@path/stack.mrcs'`` → (index 12 (1-based), ``'path/stack.mrcs'``).

    A name without ``@`` is a single image (index 1). An index that is not a number is NaN
    (the index array is then float). One pass of ``str.partition`` per name: every E-step job
    splits the names of the whole set, so this stays linear and cheap (0.1 s per 100 000 names).
    """
    names = pd.Series(names, dtype="string").tolist()
    if not names:
        return np.zeros(0), np.zeros(0, dtype=str)
    index = np.ones(len(names))
    path = []
    for i, name in enumerate(names):
        if not isinstance(name, str):  # a missing name (NaN): no index, path "nan"
            index[i] = np.nan
            path.append(str(name))
            continue
        head, at, tail = name.partition("@")
        if at:
            try:
                index[i] = float(head)
            except ValueError:
                index[i] = np.nan
            path.append(tail)
        else:
            path.append(name)
    if np.isfinite(index).all() and (index == np.round(index)).all():
        index = index.astype(np.int64)
    return index, np.array(path, dtype=str)
