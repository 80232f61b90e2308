"""Jobs of the Reconstruct Significant rules.

Files (``{outdir}/significant``):

* ``input/averages.mrcs`` + ``input/info.json``: the 2D averages at the working grid (empty
  ML2D classes left out; resampled when ``target_resolution`` is set) and where they came from.
* ``iter_000/volume.mrc``: the start volume (reference or random start).
* ``iter_NNN/volume.mrc``, ``angles.star`` (kept with ``keep_intermediate``, else removed once
  the next iteration has used them) and ``stats.json`` (always kept; tiny).
* ``volume.mrc`` (input box and pixel size) and ``angles.star``: the final outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cryosnake.atomic import write_json
from cryosnake.errors import InputError
from cryosnake.io import mrc, star
from cryosnake.io.jsonfile import read_json
from cryosnake.io.particles import read_image_stack, resolve_stack
from cryosnake.kernels import get_backend
from cryosnake.significant.iteration import (
    SignificantSettings,
    finalize_volume,
    initial_volume,
    prepare_images,
    run_iteration,
)


def settings_from_config(sig: dict) -> SignificantSettings:
    """The ``significant:`` config section as :class:`SignificantSettings`."""
    return SignificantSettings.from_config({k: v for k, v in sig.items()
                                            if k not in ("input", "reference", "classes")})


def select_classes(counts: np.ndarray, empty: np.ndarray, rule) -> tuple[np.ndarray, list]:
    """The ML2D classes that go to Reconstruct Significant (``significant.classes``).

    ``counts`` [K] particles per class (most probable class), ``empty`` [K] all-zero averages.
    ``rule``: ``"all"``, a list of 1-based class numbers, or a dict of thresholds a class must
    all pass (``min_particles``, ``min_fraction`` of all particles, ``min_share`` of the mean
    class size). Empty classes (no particle or an all-zero average) never go on. Returns
    ``(keep [K] bool, [(class number, particles, why it was left out), ...])``."""
    k = len(counts)
    total = int(counts.sum())
    reasons = {}
    for c in np.flatnonzero((counts == 0) | empty):
        reasons[c] = "empty"
    if isinstance(rule, list):
        unknown = sorted(set(rule) - set(range(1, k + 1)))
        if unknown:
            raise InputError(f"significant.classes = {rule}: there is no class "
                             f"{', '.join(map(str, unknown))} (ML2D has {k} classes, numbered "
                             f"1-{k}).")
        for c in set(range(k)) - {n - 1 for n in rule}:
            reasons.setdefault(c, "not in the list")
    elif rule != "all":
        mean = total / k
        tests = (("min_particles", lambda n, t: n >= t, "{n} < min_particles {t}"),
                 ("min_fraction", lambda n, t: n >= t * total,
                  "{f:.2%} of the particles < min_fraction {t:g}"),
                 ("min_share", lambda n, t: n >= t * mean,
                  "{n} < min_share {t:g} × the mean class size {m:.1f}"))
        for c in range(k):
            for key, passes, why in tests:
                t = rule.get(key, 0)
                if c not in reasons and not passes(counts[c], t):
                    reasons[c] = why.format(n=int(counts[c]), t=t, f=counts[c] / max(total, 1),
                                            m=mean)
    keep = np.ones(k, bool)
    keep[list(reasons)] = False
    return keep, [(c + 1, int(counts[c]), reasons[c]) for c in sorted(reasons)]


def read_averages(source, classes_star=None, sampling=None, classes="all"):
    """2D averages and their names: the ML2D classes chosen by ``classes``
    (:func:`select_classes`) or a user stack / STAR (used as given). Returns ``(images [n, N,
    N], names, sampling Å/px, the ML2D classes left out as (class, particles, why))``."""
    source = Path(source)
    dropped = []
    if classes_star is not None:  # this run's ML2D classes
        images, names, _ = read_image_stack(source, "significant.input")
        table = star.read_blocks(classes_star)["classes"]
        counts = table["cryosnakeParticleCount"].to_numpy()
        empty = np.abs(images).reshape(len(images), -1).max(axis=1) == 0
        keep, dropped = select_classes(counts, empty, classes)
        sampling = mrc.header_info(source)["sampling"]
        images, names = images[keep], [n for n, k in zip(names, keep, strict=True) if k]
        print(f"ML2D classes: {int(keep.sum())} of {len(keep)} go to Reconstruct Significant "
              f"(significant.classes: {classes})")
        for number, n, why in dropped:
            print(f"  class {number} ({n} particles) left out: {why}")
    elif source.suffix == ".star":
        images, names, blocks = read_image_stack(source, "significant.input")
        table = star.main_table(blocks)
        optics = blocks.get("optics")
        if optics is not None and "rlnImagePixelSize" in optics:
            sampling = sampling or float(optics["rlnImagePixelSize"].iloc[0])
        elif "rlnImagePixelSize" in table:
            sampling = sampling or float(table["rlnImagePixelSize"].iloc[0])
        if not sampling:
            first = star.split_image_names(names[:1])[1][0]
            sampling = mrc.header_info(resolve_stack(first, source.parent, source))["sampling"]
    else:
        images, names, _ = read_image_stack(source, "significant.input")
        sampling = sampling or mrc.header_info(source)["sampling"]
    if not sampling or sampling <= 0:
        raise InputError(f"significant.input = {source}: no pixel size; set `sampling:` (Å/px).")
    if images.shape[-1] != images.shape[-2]:
        raise InputError(f"significant.input = {source}: averages must be square.")
    if len(images) < 2:
        fix = ("use more classes (ml2d.classes) or significant.classes: all"
               if classes_star is not None else "give a stack of several class averages")
        raise InputError(f"significant.input = {source}: {len(images)} average(s) to reconstruct "
                         "from, but Reconstruct Significant needs several averages (distinct "
                         f"views); {fix}.")
    if len(images) < 3:
        print(f"warning: only {len(images)} averages; an initial volume needs several distinct "
              "views (use more classes)")
    if not np.isfinite(images).all():
        raise InputError(f"significant.input = {source}: the averages contain NaN or Inf.")
    return images.astype(np.float32), names, float(sampling), dropped


def prepare_job(source, classes_star, sig_cfg: dict, sampling, out_stack, out_info) -> None:
    """Averages at the working grid plus ``info.json`` (boxes, pixel sizes, names)."""
    settings = settings_from_config(sig_cfg)
    images, names, input_sampling, dropped = read_averages(
        source, classes_star, sampling, sig_cfg["classes"] if classes_star else "all")
    work, work_sampling = prepare_images(images, input_sampling, settings)
    mrc.write_stack(out_stack, work, work_sampling)
    write_json(out_info, {"names": names, "n_images": len(names),
                          "classes_rule": sig_cfg["classes"] if classes_star else None,
                          "classes_left_out": [{"class": c, "particles": n, "why": why}
                                               for c, n, why in dropped],
                          "input_box": int(images.shape[-1]), "input_sampling": input_sampling,
                          "box": int(work.shape[-1]), "sampling": work_sampling})
    print(f"{len(names)} averages of {images.shape[-1]} px at {input_sampling:.3f} Å/px; "
          f"working grid {work.shape[-1]} px at {work_sampling:.3f} Å/px")


def _info(path) -> dict:
    return read_json(path)


def start_job(averages, info_json, sig_cfg: dict, reference, backend: str, out_volume) -> None:
    """Iteration-0 volume: the reference (resampled to the working grid) or a random start.
    ``backend``: the kernel backend's name (``cpu`` or ``cuda``)."""
    kernels = get_backend(backend)
    settings = settings_from_config(sig_cfg)
    info = _info(info_json)
    images = mrc.read_stack(averages)
    ref = ref_sampling = None
    if reference:
        ref = mrc.read(reference)
        if ref.ndim != 3 or len(set(ref.shape)) != 1:
            raise InputError(f"significant.reference = {reference}: expected a cubic 3D volume, "
                             f"got shape {ref.shape}.")
        ref_sampling = mrc.header_info(reference)["sampling"] or info["input_sampling"]
    try:
        volume = initial_volume(images, settings, info["sampling"], ref, ref_sampling,
                                backend=kernels)
    except ValueError as err:
        raise InputError(f"significant.reference = {reference}: {err}") from err
    mrc.write_volume(out_volume, volume, info["sampling"])


def iteration_job(averages, info_json, volume_in, iteration: int, sig_cfg: dict, backend: str,
                  out_volume, out_angles, out_stats) -> None:
    """One Reconstruct Significant iteration (spec §3.1); ``backend``: the kernel backend's name
    (``cpu`` or ``cuda``)."""
    kernels = get_backend(backend)
    settings = settings_from_config(sig_cfg)
    info = _info(info_json)
    images = mrc.read_stack(averages)
    previous = mrc.read(volume_in)
    volume, angles = run_iteration(
        images, previous, settings, iteration, settings.iterations,
        sampling_A=info["sampling"], input_sampling_A=info["input_sampling"],
        full_resolution=iteration == settings.iterations, backend=kernels)
    mrc.write_volume(out_volume, volume, info["sampling"])
    write_angles(out_angles, angles, info)
    counts = np.bincount(angles["image"].to_numpy(), minlength=len(images))
    norm = float(np.linalg.norm(previous))
    change = float(np.linalg.norm(volume - previous) / norm) if iteration > 1 and norm else None
    write_json(out_stats, {"iteration": iteration, "alpha": float(angles.attrs["alpha"]),
                           "n_images": len(images), "n_directions":
                           int(angles.attrs["n_directions"]),
                           "n_significant": counts.tolist(), "volume_change": change,
                           "n_rows": len(angles)})
    print(f"iteration {iteration}: alpha {angles.attrs['alpha']:.4g}, {len(angles)} significant "
          f"(image, direction) pairs, {counts.mean():.1f} directions per image"
          + (f", volume change {change:.4f}" if change is not None else ""))


def write_angles(path, angles: pd.DataFrame, info: dict) -> None:
    """Significant assignments as a RELION 3.1 STAR (ZYZ Euler, origins in Å at the input
    pixel size; ``cryosnakeWeight``, ``cryosnakeCC``, ``cryosnakeIMED``)."""
    image = angles["image"].to_numpy()
    table = pd.DataFrame({
        "rlnImageName": np.asarray(info["names"], dtype=object)[image],
        "rlnAngleRot": angles["rot"].to_numpy(),
        "rlnAngleTilt": angles["tilt"].to_numpy(),
        "rlnAnglePsi": angles["psi"].to_numpy(),
        "rlnOriginXAngst": angles["origin_x_px"].to_numpy() * info["sampling"],
        "rlnOriginYAngst": angles["origin_y_px"].to_numpy() * info["sampling"],
        "rlnOpticsGroup": 1,
        "cryosnakeWeight": angles["weight"].to_numpy(),
        "cryosnakeCC": angles["cc"].to_numpy(),
        "cryosnakeIMED": np.nan_to_num(angles["imed"].to_numpy(), nan=0.0),
        "cryosnakeImageIndex": image + 1,
        "cryosnakeDirection": angles["direction"].to_numpy() + 1,
    })
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnImagePixelSize": [info["input_sampling"]],
                           "rlnImageSize": [info["input_box"]], "rlnImageDimensionality": [2]})
    star.write_particles(path, table, optics)


def final_job(volume_in, angles_in, info_json, out_volume, out_angles) -> None:
    """The last iteration's volume at the input box and pixel size, and its assignments."""
    info = _info(info_json)
    volume = finalize_volume(mrc.read(volume_in), info["input_box"])
    mrc.write_volume(out_volume, volume, info["input_sampling"])
    particles, optics = star.read_particles(angles_in)
    star.write_particles(out_angles, particles, optics)
    print(f"initial volume: {out_volume} ({volume.shape[0]}³ voxels at "
          f"{info['input_sampling']:.3f} Å/voxel)")
