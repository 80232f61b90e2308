"""Jobs of the ML2D rules: start model, chunked E-step, M-step, final outputs. With
``ml2d.fourier`` the same jobs run MLF2D (:mod:`cryosnake.mlf2d`): each job picks its
strategy once (:func:`cryosnake.classify2d.strategy.classifier`); MLF2D's takes the CTF of
each chunk's particles from the run's particle index and their defocus groups from the files
the start job wrote.

Files of one run (``{outdir}/ml2d``):

* ``start/``: the single global average that iteration 0 of "generate classes" aligns to;
  ``particles.npz``, the run's particle index (image locations, CTF: what the E-step jobs read
  instead of the STAR, :class:`~cryosnake.io.particles.ParticleIndex`); with MLF2D,
  ``defocus_groups.npz``: the defocus group of every particle, computed once.
* ``iter_NNN/``: ``model.json`` + ``references.mrcs`` written by the M-step of iteration NNN,
  and ``chunks/{sums,state,assignments}_CCCC.npz`` written by its E-step jobs.
* ``classes.mrcs``, ``classes.star``, ``particles.star``, ``model.json``: the final outputs,
  with ``model.star`` (RELION Class2D model, :mod:`cryosnake.io.relion_model`),
  ``particles.xmd`` (every pose for Xmipp/Scipion, :mod:`cryosnake.io.xmipp`) and, on request,
  ``class_NNN.star`` (the particles of each class, :func:`subsets_job`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import numpy as np

from cryosnake.classify2d.classes import random_group_labels
from cryosnake.classify2d.state import ParticleState
from cryosnake.classify2d.strategy import Classifier2D, classifier, join_assignments
from cryosnake.errors import InputError
from cryosnake.io import mrc
from cryosnake.io.classify2d import (
    read_assignments,
    read_defocus_groups,
    read_model,
    read_state,
    read_sums,
    write_assignments,
    write_defocus_groups,
    write_model,
    write_state,
    write_sums,
)
from cryosnake.kernels import get_backend
from cryosnake.ml2d import ML2DModel, ML2DSettings

if TYPE_CHECKING:
    import pandas as pd

    from cryosnake.io.particles import ParticleStack

#: The documented mirror-flag column of ``particles.star`` (1 = the particle was mirrored
#: (x → −x about the box centre) after shifting by the origin and before rotating by −psi).
MIRROR_COLUMN = "cryosnakeMirror"

# Start-up of a job (issue 16): an ML2D E-step imports neither MLF2D, nor the config checks
# (jsonschema, the symmetry groups of Significant, scipy.spatial), nor the RELION/Xmipp
# writers; the functions that need them import them. No E-step or M-step reads or writes a
# STAR (pandas, starfile): an E-step reads the run's particle index, and an M-step, which calls
# no kernel (numba) either, takes 0.15 s instead of 0.6 s, 30 times in a run. Each job picks
# its strategy (ML2D or MLF2D, :mod:`cryosnake.classify2d.strategy`) once, from
# ``ml2d.fourier``.


def settings_from_config(ml2d: dict, table=None) -> ML2DSettings:
    """The ``ml2d:`` config section as :class:`ML2DSettings` (:class:`MLF2DSettings
    <cryosnake.mlf2d.MLF2DSettings>` with ``fourier``). ``phase_flipped: auto`` is resolved
    from the merged particle ``table`` (``None`` without one: the M-step does not use it)."""
    return classifier(ml2d.get("fourier")).settings(ml2d, table)


def load_model(model_json, ml2d_cfg: dict) -> ML2DModel:
    """The model of an iteration (:class:`MLF2DModel <cryosnake.mlf2d.MLF2DModel>` with
    ``fourier``)."""
    return read_model(model_json, classifier(ml2d_cfg.get("fourier")).model_type)


def read_references(path, box: int) -> np.ndarray:
    """User references from an MRC stack or a STAR of images; the box must match."""
    from cryosnake.io.particles import read_image_stack

    refs, _, _ = read_image_stack(path, "ml2d.references")
    if refs.shape[-1] != box or refs.shape[-2] != box:
        raise InputError(
            f"ml2d.references = {path}: references are {refs.shape[-1]}×{refs.shape[-2]} px but "
            f"the particles are {box}×{box} px. Resample the references to the particle box "
            "(e.g. relion_image_handler --new_box / --rescale_angpix).")
    if not np.isfinite(refs).all():
        raise InputError(f"ml2d.references = {path}: the references contain NaN or Inf.")
    return refs.astype(np.float64)


def count_references(path) -> int:
    """Number of user references in an MRC stack or a STAR of images (read at start-up to
    name the per-class outputs)."""
    from cryosnake.io import star

    if str(path).endswith(".star"):
        return len(star.main_table(star.read_blocks(path)))
    return mrc.header_info(path)["shape"][0]


def start_job(particles_star, ml2d_cfg: dict, chunk_size: int, out_model, out_refs,
              out_index, out_groups=None) -> None:
    """Iteration-0 input: the start model of ML2D (the global average, or the user
    references) or of MLF2D (also the initial noise spectra per defocus group, and the
    defocus groups of the run in ``out_groups``, which MLF2D needs), and the run's particle
    index for the E-step jobs (``out_index``, :func:`~cryosnake.io.particles.write_particle_index`:
    image locations, CTF, the resolved ``phase_flipped``)."""
    from cryosnake.io.particles import ParticleStack, chunk_rows, n_chunks, write_particle_index

    strategy = classifier(ml2d_cfg["fourier"])
    if strategy.groups_type is not None and out_groups is None:  # before any compute
        raise ValueError(f"{strategy.name} start: out_groups (defocus_groups.npz) not given")
    with ParticleStack(particles_star) as ps:
        _check_classes(ps, ml2d_cfg, particles_star)
        settings = strategy.settings(ml2d_cfg, ps.table)
        refs = (read_references(ml2d_cfg["references"], ps.box) if ml2d_cfg["references"]
                else None)
        groups = strategy.defocus_groups(ps.table, settings)
        ctf = strategy.particle_ctf(ps.table, settings)
        chunks = ((rows, ps.read(rows)) for rows in
                  (chunk_rows(ps.n, chunk_size, c) for c in range(n_chunks(ps.n, chunk_size))))
        model = strategy.start(ml2d_cfg, settings, ps.table, chunks, ps.sampling, ps.box, refs,
                               groups)
        write_model(model, out_model, out_refs, ps.sampling)
        write_particle_index(out_index, ps, ctf, getattr(settings, "phase_flipped", None))
    if groups is not None:
        write_defocus_groups(out_groups, groups)


def _check_classes(ps: ParticleStack, ml2d_cfg: dict, particles_star) -> None:
    from cryosnake.config import check_classes

    references = ml2d_cfg["references"]
    n_classes = count_references(references) if references else ml2d_cfg["classes"]
    check_classes(n_classes, ps.n, ml2d_cfg, particles_star)


def estep_job(particle_index, chunk: int, chunk_size: int, iteration: int, ml2d_cfg: dict,
              backend: str, model_json, previous_state, out_sums, out_state,
              out_assignments, groups_npz=None) -> None:
    """E-step of one particle chunk against the model of the previous iteration;
    ``particle_index``: the run's particle index the start job wrote (no STAR is read);
    ``backend``: the kernel backend's name (``cpu`` or ``cuda``); ``groups_npz``: the defocus
    groups the start job wrote (MLF2D)."""
    from cryosnake.io.particles import ParticleIndex, chunk_rows

    kernels = get_backend(backend)
    strategy = classifier(ml2d_cfg["fourier"])
    model = read_model(model_json, strategy.model_type)
    defocus = None
    if strategy.groups_type is not None:
        if groups_npz is None:
            raise ValueError(f"{strategy.name} E-step: groups_npz (defocus_groups.npz) not given")
        defocus = read_defocus_groups(groups_npz, strategy.groups_type)
    with ParticleIndex(particle_index) as pi:
        if pi.phase_flipped is not None:  # as the start job resolved it (``auto``)
            ml2d_cfg = ml2d_cfg | {"phase_flipped": pi.phase_flipped}
        settings = strategy.settings(ml2d_cfg)
        rows = chunk_rows(pi.n, chunk_size, chunk)
        images = pi.read(rows)
        data = strategy.particle_data(pi.ctf, rows, defocus)
        n_total = pi.n
    generated_start = iteration == 0 and not ml2d_cfg["references"]
    groups = (random_group_labels(n_total, settings.n_classes, settings.seed)[rows]
              if generated_start else None)
    state = read_state(previous_state) if previous_state else None
    sums, assignments, new_state = estep_with_progress(
        strategy, images, model, settings, state, data, groups, kernels,
        f"{strategy.name} E-step {iteration:03d}/{chunk:04d}")
    write_sums(out_sums, sums)
    write_state(out_state, new_state)
    write_assignments(out_assignments, rows, assignments)
    print(f"{strategy.name} E-step iteration {iteration}, chunk {chunk}: {len(rows)} particles, "
          f"LL {sums.loglik_sum:.6g}")


def estep_with_progress(strategy: Classifier2D, images, model, settings, state, data, groups,
                        backend, label, batch: int = 1000):
    """The E-step of a chunk in sub-batches of ``batch`` particles, with a progress bar
    (particles/s) on stderr (the job's log). Sums add up over sub-batches (exactly, up to the
    order of the floating-point additions, which the fixed ``batch`` keeps the same from run
    to run); ``state=None``: a fresh state.

    ML2D sets up its references (rotations, fast-mode operands) anew in each call: with
    sub-batches of 250, 3000 particles of 64 px (K=10) took 9.8-11.9 s against 8.5 s with 1000
    and 8.3 s in one call (issue 16), so a batch is 1000. MLF2D prepares its reference bank
    once per chunk (``strategy.prepare``)."""
    from tqdm import tqdm

    n = len(images)
    parts = []
    prepared = strategy.prepare(model, settings, state is None, backend)
    with tqdm(total=n, unit="particle", desc=label, mininterval=5.0, file=sys.stderr) as bar:
        for start in range(0, n, batch):
            sel = slice(start, min(n, start + batch))
            parts.append(strategy.estep(
                images[sel], model, settings, None if state is None else state.subset(sel),
                None if data is None else data.subset(sel),
                None if groups is None else groups[sel], backend, prepared))
            bar.update(sel.stop - sel.start)
    sums = sum((p[0] for p in parts[1:]), parts[0][0])
    return (sums, join_assignments(p[1] for p in parts),
            ParticleState.concatenate(p[2] for p in parts))


def mstep_job(model_json, sums_paths, ml2d_cfg: dict, sampling: float, out_model,
              out_refs) -> ML2DModel:
    """Gather the chunk sums and update the model (spec §1.8–1.10, §2.9)."""
    strategy = classifier(ml2d_cfg["fourier"])
    settings = strategy.settings(ml2d_cfg)
    model = read_model(model_json, strategy.model_type)
    new = strategy.mstep(model, sum(read_sums(p, strategy.sums_type) for p in sums_paths),
                         settings)
    write_model(new, out_model, out_refs, sampling)
    change = np.nanmax(new.signal_change) if np.isfinite(new.signal_change).any() else np.nan
    print(f"{strategy.name} M-step iteration {new.iteration}: LL {new.loglik:.8g}, "
          f"<Pmax> {new.ave_pmax:.4f}, sigma {new.sigma_noise:.5g}, xi {new.sigma_offset:.4g}, "
          f"max change {change:.4g}, converged {new.converged}{strategy.mstep_summary(new)}")
    return new


def load_assignments(paths) -> dict[str, np.ndarray]:
    """Concatenate the per-chunk assignment files in particle order."""
    out = join_assignments(read_assignments(p) for p in paths)
    order = np.argsort(out["rows"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def final_job(particles_star, model_json, assignment_paths, ml2d_cfg: dict, out_classes,
              out_classes_star, out_particles, out_model, out_model_star, out_xmd) -> None:
    """Final class averages, per-class table and per-particle assignments (RELION 3.1), the
    RELION Class2D ``model.star`` and the poses as Xmipp metadata (mirrored ones included)."""
    import pandas as pd

    from cryosnake.io import relion_model, star, xmipp

    model = load_model(model_json, ml2d_cfg)
    particles, optics = star.read_particles(particles_star)
    sampling = float(star.merge_optics(particles, optics)["rlnImagePixelSize"].iloc[0])
    a = load_assignments(assignment_paths)
    if len(a["rows"]) != len(particles) or (a["rows"] != np.arange(len(particles))).any():
        raise RuntimeError("assignment chunks do not cover the particles exactly once")
    mrc.write_stack(out_classes, model.references, sampling)
    write_model(model, out_model, str(out_model).replace(".json", "_references.mrcs"), sampling)

    counts = np.bincount(a["class_number"] - 1, minlength=model.n_classes)
    classes = pd.DataFrame({
        "rlnReferenceImage": [f"{k + 1:06d}@{out_classes}" for k in range(model.n_classes)],
        "rlnClassDistribution": model.class_fractions,
        "cryosnakeParticleCount": counts,
        "cryosnakeClassWeight": model.class_weights,
        "cryosnakeMirrorFraction": model.mirror_fractions,
        "cryosnakeSignalChange": np.nan_to_num(model.signal_change, nan=0.0),
    })
    star.write_table(out_classes_star, classes, "classes")

    out = particles.drop(columns=[c for c in ("rlnOriginX", "rlnOriginY") if c in particles])
    out["rlnClassNumber"] = a["class_number"].astype(int)
    out["rlnAnglePsi"] = a["psi_deg"]
    out["rlnOriginXAngst"] = a["origin_x_px"] * sampling
    out["rlnOriginYAngst"] = a["origin_y_px"] * sampling
    out[MIRROR_COLUMN] = a["mirror"].astype(int)
    out["rlnMaxValueProbDistribution"] = a["max_posterior"]
    out["rlnLogLikeliContribution"] = a["loglik"]
    if ml2d_cfg["norm"]:
        out["rlnNormCorrection"] = a["norm_scale"] / model.norm_scale_mean
    star.write_particles(out_particles, out, optics)
    relion_model.write(out_model_star, model, classes["rlnReferenceImage"])
    xmipp.write_metadata(out_xmd, xmipp_particles(out, sampling))
    print("classes: " + ", ".join(f"{k + 1}: {c} ({100 * c / len(out):.1f} %)"
                                  for k, c in enumerate(counts)))


def xmipp_particles(particles: pd.DataFrame, sampling: float) -> pd.DataFrame:
    """The rows of ``particles.xmd``: ``image``, ``itemId`` (the input's, else 1..n), ``ref``
    (class, 1-based), ``anglePsi``, ``shiftX``, ``shiftY`` (px), ``flip`` in Xmipp's convention
    (:mod:`cryosnake.io.xmipp`), ``pMax`` and ``logLikelihood`` (the labels Xmipp's ML2D writes)
    and ``samplingRate`` (Å/px), from the final ``particles.star`` table."""
    import pandas as pd

    from cryosnake.io import xmipp

    pose = xmipp.alignment_from_pose(
        particles["rlnAnglePsi"], particles["rlnOriginXAngst"] / sampling,
        particles["rlnOriginYAngst"] / sampling, particles[MIRROR_COLUMN])
    item = (particles["itemId"].astype(int) if "itemId" in particles
            else np.arange(1, len(particles) + 1))
    return pd.DataFrame({
        "image": particles["rlnImageName"].astype(str), "itemId": item,
        "ref": particles["rlnClassNumber"].astype(int), **pose,
        "pMax": particles["rlnMaxValueProbDistribution"],
        "logLikelihood": particles["rlnLogLikeliContribution"], "samplingRate": float(sampling),
    })


def subsets_job(particles_star, out_paths) -> None:
    """One RELION 3.1 particle STAR per class (``out_paths[k - 1]`` for class ``k``): the whole
    optics table (as RELION's Select job keeps it) and the rows of ``particles.star`` with
    ``rlnClassNumber == k``, in order (an empty class gives an empty particle table)."""
    from cryosnake.io import star

    particles, optics = star.read_particles(particles_star)
    for k, path in enumerate(out_paths, start=1):
        subset = particles[particles["rlnClassNumber"] == k].reset_index(drop=True)
        star.write_particles(path, subset, optics)
        print(f"class {k}: {len(subset)} particles -> {path}")
