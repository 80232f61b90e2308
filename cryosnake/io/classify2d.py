"""The files of a 2D classification run (ML2D and MLF2D; the jobs of
:mod:`cryosnake.pipeline.ml2d`), read and written here only:

* a model: ``model.json`` (the model's ``to_dict()`` plus ``references``, the name of its
  references file) and the references ``[K, N, N]`` as an MRC stack (float32, Å/px in the
  header);
* the additive statistics of an E-step chunk (``sums_CCCC.npz``): one array per field of the
  dataclass (:class:`cryosnake.classify2d.sums.AdditiveStats`), scalars as 0-d arrays;
* the per-particle state of a chunk (``state_CCCC.npz``,
  :class:`~cryosnake.classify2d.state.ParticleState`) and its assignments
  (``assignments_CCCC.npz``: ``rows`` and one ``[n]`` array per key);
* MLF2D's defocus groups of the whole run (``start/defocus_groups.npz``: ``labels [n]``,
  ``defocus [G]`` in Å), written once by the start job.

Every file is written atomically (:mod:`cryosnake.atomic`); one damaged by a killed job or a
full disk is an :class:`~cryosnake.errors.InputError` that names it and says how to recover
(:func:`cryosnake.errors.reading_intermediate`).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np

from cryosnake.atomic import save_npz, write_json
from cryosnake.classify2d.state import ParticleState
from cryosnake.errors import reading_intermediate
from cryosnake.io import mrc
from cryosnake.io.jsonfile import read_json


def write_model(model, model_json, references_mrcs, sampling: float) -> None:
    """Write ``model`` (:class:`~cryosnake.ml2d.ML2DModel` or
    :class:`~cryosnake.mlf2d.MLF2DModel`) as JSON and its references as an MRC stack at
    ``sampling`` Å/px."""
    mrc.write_stack(references_mrcs, model.references.astype(np.float32), sampling)
    d = model.to_dict()
    d["references"] = str(Path(references_mrcs).name)
    write_json(model_json, d)


def read_model(model_json, model_type, references_mrcs=None):
    """A ``model_type`` read from a model written by :func:`write_model` (references next to
    the JSON unless given)."""
    with reading_intermediate(model_json):
        d = read_json(model_json)
        if references_mrcs is None:
            references_mrcs = Path(model_json).parent / d["references"]
    with reading_intermediate(references_mrcs):
        refs = mrc.read_stack(references_mrcs).astype(np.float64)
    with reading_intermediate(model_json):
        return model_type.from_dict(d, refs)


def write_sums(path, sums) -> None:
    """Write additive statistics (a dataclass of arrays and scalars) as ``.npz``."""
    save_npz(path, **{f.name: np.asarray(getattr(sums, f.name)) for f in fields(sums)})


def read_sums(path, sums_type):
    """``sums_type`` read from a file of :func:`write_sums` (0-d arrays back as Python
    scalars)."""
    with reading_intermediate(path), np.load(path) as z:
        kw = {f.name: z[f.name] for f in fields(sums_type)}
    return sums_type(**{k: v.item() if v.ndim == 0 else v for k, v in kw.items()})


def write_state(path, state: ParticleState) -> None:
    """Write the per-particle state of a chunk as ``.npz``."""
    save_npz(path, offsets=state.offsets, norm_scale=state.norm_scale,
             background=state.background)


def read_state(path) -> ParticleState:
    """The :class:`ParticleState` of a file of :func:`write_state` (offsets int32, the rest
    float64)."""
    with reading_intermediate(path), np.load(path) as z:
        return ParticleState(
            z["offsets"].astype(np.int32),
            z["norm_scale"].astype(np.float64),
            z["background"].astype(np.float64),
        )


def write_assignments(path, rows: np.ndarray, assignments: dict[str, np.ndarray]) -> None:
    """Write the assignments of a chunk (``rows``: the particles' rows in the particle table)."""
    save_npz(path, rows=rows, **assignments)


def read_assignments(path) -> dict[str, np.ndarray]:
    """The arrays of a file of :func:`write_assignments`, ``rows`` included."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def write_defocus_groups(path, groups) -> None:
    """Write MLF2D's :class:`~cryosnake.mlf2d.groups.DefocusGroups` of a run as ``.npz``."""
    save_npz(path, labels=np.asarray(groups.labels, np.int64),
             defocus=np.asarray(groups.defocus, np.float64))


def read_defocus_groups(path, groups_type):
    """``groups_type`` (:class:`~cryosnake.mlf2d.groups.DefocusGroups`) from a file of
    :func:`write_defocus_groups`."""
    with reading_intermediate(path), np.load(path) as z:
        return groups_type(labels=z["labels"], defocus=z["defocus"])
