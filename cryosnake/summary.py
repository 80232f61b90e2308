"""The plain-text run summary: what a run produced, read from its final output files.

:func:`run_summary` describes exactly the files it is given (:class:`RunFiles`): the final ML2D
model (``ml2d/model.json``, the iteration the classes come from), the classes, the final volume
and angles and the statistics of the iteration that made them. It never looks for the newest
``iter_*`` folder: after ``max_iterations`` is lowered, a later iteration may still lie on disk.
A file that is missing leaves its line out; one that cannot be read is named with the reason
instead of stopping the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cryosnake.atomic import write_text
from cryosnake.io import mrc, star
from cryosnake.io.jsonfile import read_json


@dataclass
class RunFiles:
    """The final outputs of a run (any may be ``None`` or missing)."""

    outdir: Path
    ml2d_model: Path | None = None  # {outdir}/ml2d/model.json (the final model)
    classes: Path | None = None  # {outdir}/ml2d/classes.mrcs
    classes_star: Path | None = None  # {outdir}/ml2d/classes.star
    volume: Path | None = None  # {outdir}/significant/volume.mrc
    angles: Path | None = None  # {outdir}/significant/angles.star
    significant_stats: Path | None = None  # stats.json of the final Significant iteration
    significant_info: Path | None = None  # {outdir}/significant/input/info.json
    demo_check: Path | None = None  # {outdir}/demo/check.json (runs on the built-in demo)
    reprojections: Path | None = None  # {outdir}/significant/reprojections.star
    phase_flip: str | None = None  # MLF2D with CTF: the phase flip used and where it came from
    plots: list = field(default_factory=list)

    @classmethod
    def of(cls, outdir, **files) -> RunFiles:
        return cls(Path(outdir), **{k: (None if v is None else
                                        [Path(p) for p in v] if k == "plots" else Path(v))
                                    for k, v in files.items()})


def _exists(path) -> bool:
    return path is not None and Path(path).is_file()


def _fmt(x, spec: str = ".6g") -> str:
    return "n/a" if x is None else format(float(x), spec)


def _ml2d_iterations(files: RunFiles) -> list[str]:
    lines = []
    if _exists(files.ml2d_model):
        model = read_json(files.ml2d_model)
        state = ("converged" if model.get("converged")
                 else "not converged (stopped at ml2d.max_iterations)")
        n = int(model["iteration"])
        lines.append(f"  classes from iteration {n} (iter_{n:03d}), {state}")
        lines.append(f"  final log-likelihood: {_fmt(model.get('loglik'))}, "
                     f"<Pmax> {_fmt(model.get('ave_pmax'), '.4f')}, "
                     f"sigma {_fmt(model.get('sigma_noise'), '.4g')}, "
                     f"xi {_fmt(model.get('sigma_offset'), '.3g')} px")
    return lines


def _ml2d_phase_flip(files: RunFiles) -> list[str]:
    return [] if files.phase_flip is None else [f"  phase flipped: {files.phase_flip}"]


def _ml2d_classes(files: RunFiles) -> list[str]:
    lines = []
    classes_star, classes_mrcs = files.classes_star, files.classes
    if _exists(classes_star):
        table = star.read_table(classes_star, "classes")
        counts = (table["cryosnakeParticleCount"].to_numpy(dtype=np.int64)
                  if "cryosnakeParticleCount" in table else None)
        header = f"  classes: {len(table)}"
        if _exists(classes_mrcs):
            info = mrc.header_info(classes_mrcs)
            header += (f" in {classes_mrcs} (box {info['shape'][-1]} px, "
                       f"{info['sampling']:.4g} Å/px)")
        if counts is not None:
            header += f", {int(counts.sum())} particles"
        lines.append(header)
        lines.append("    class  particles        %   alpha_k")
        total = int(counts.sum()) if counts is not None else 0
        alpha = (table["rlnClassDistribution"].to_numpy(dtype=np.float64)
                 if "rlnClassDistribution" in table else np.full(len(table), np.nan))
        for k in range(len(table)):
            n = int(counts[k]) if counts is not None else None
            pct = 100.0 * n / total if n is not None and total > 0 else float("nan")
            n_text = "n/a" if n is None else str(n)
            flag = "  (empty)" if n == 0 else ""
            lines.append(f"    {k + 1:5d}  {n_text:>9}  {pct:7.1f}  {alpha[k]:8.4f}{flag}")
    return lines


def _significant_volume(files: RunFiles) -> list[str]:
    lines = []
    volume = files.volume
    if _exists(volume):
        info = mrc.header_info(volume)
        nz, ny, nx = info["shape"]
        box = f"{nx}^3" if nx == ny == nz else f"{nx} x {ny} x {nz}"
        s = info["sampling"]
        size = f", {s:.4g} Å/voxel (edge {nx * s:.1f} Å)" if s > 0 else ", voxel size not set"
        lines.append(f"  volume: {volume}, box {box} voxels{size}")
    return lines


def _significant_input(files: RunFiles) -> list[str]:
    lines = []
    if _exists(files.significant_info):
        info = read_json(files.significant_info)
        if info.get("classes_rule") is not None:
            out = info.get("classes_left_out", [])
            lines.append(f"  averages: {info['n_images']} ML2D classes (significant.classes: "
                         f"{info['classes_rule']}), {len(out)} left out"
                         + ("" if not out else ":"))
            lines += [f"    class {c['class']} ({c['particles']} particles): {c['why']}"
                      for c in out]
        else:
            lines.append(f"  averages: {info['n_images']} from significant.input")
    return lines


def _significant_iterations(files: RunFiles) -> list[str]:
    lines = []
    if _exists(files.significant_stats):
        stats = read_json(files.significant_stats)
        n = int(stats["iteration"])
        text = f"  volume from iteration {n} (iter_{n:03d})"
        if stats.get("alpha") is not None:
            text += f", final significance {100 * (1 - stats['alpha']):.2f} %"
        if stats.get("volume_change") is not None:
            text += f", last volume change {stats['volume_change']:.3g}"
        lines.append(text)
        n_sig = [v for v in stats.get("n_significant") or [] if v is not None]
        if n_sig:
            lines.append(f"  significant directions per image (last iteration): mean "
                         f"{np.mean(n_sig):.1f}, min {min(n_sig)}, max {max(n_sig)}")
    return lines


def _significant_angles(files: RunFiles) -> list[str]:
    lines = []
    angles = files.angles
    if _exists(angles):
        table = star.read_table(angles, "particles")
        n_images = (table["cryosnakeImageIndex"].nunique()
                    if "cryosnakeImageIndex" in table else "?")
        lines.append(f"  angles: {angles}, {len(table)} assignments of {n_images} images")
    return lines


def _significant_reprojections(files: RunFiles) -> list[str]:
    lines = []
    if _exists(files.reprojections):
        table = star.read_table(files.reprojections, "particles")
        ncc = table["cryosnakeReprojectionCC"].to_numpy(dtype=np.float64)
        ok = np.isfinite(ncc)
        if ok.any():
            low = int(np.flatnonzero(ok)[np.argmin(ncc[ok])])
            lines.append(f"  reprojection NCC (average vs. volume projected at its pose, circle "
                         f"of the box): median {np.median(ncc[ok]):.3f}, lowest {ncc[low]:.3f} "
                         f"({table['rlnImageName'].iloc[low]})")
        if not ok.all():
            lines.append(f"  {int((~ok).sum())} of {len(ncc)} averages without a significant "
                         "direction (no reprojection)")
    return lines


def _demo_check(files: RunFiles) -> list[str]:
    if not _exists(files.demo_check):
        return []
    check = read_json(files.demo_check)
    c, v = check["classes"], check["volume"]
    return [f"  2D classes: adjusted Rand index {c['ari']:.3f} against the true views, "
            f"{c['views_found']} of {c['views']} views found, median NCC of the best class "
            f"average to each clean view {c['median_view_ncc']:.3f}",
            f"  initial volume against the phantom (aligned, either hand): FSC-0.5 "
            f"{v['fsc05_A']:.1f} Å, FSC-0.143 {v['fsc0143_A']:.1f} Å (Nyquist "
            f"{v['nyquist_A']:.1f} Å){', mirrored hand' if v['mirrored'] else ''}"]


_SECTIONS = (
    ("ML2D 2D classification", "ml2d", (_ml2d_iterations, _ml2d_phase_flip, _ml2d_classes)),
    ("Reconstruct Significant", "significant",
     (_significant_volume, _significant_input, _significant_iterations, _significant_angles,
      _significant_reprojections)),
    ("Demo check: the run against the demo's truth", "demo", (_demo_check,)),
)


def _guard(part, files: RunFiles) -> list[str]:
    try:
        return part(files)
    except Exception as err:  # a summary names a broken file, it does not stop the run
        return [f"  (could not read part of the outputs: {type(err).__name__}: {err})"]


def run_summary(files: RunFiles) -> str:
    """A short plain-text summary of the final outputs ``files``.

    Sections (each only when its files exist): ML2D (the iteration the classes come from,
    converged or not, final log-likelihood, ⟨Pmax⟩, σ, ξ; the classes with particle count, % of
    particles and α_k, empty ones flagged), Reconstruct Significant (volume path, box in voxels
    and voxel size in Å, the iteration and final significance, significant directions per
    image, number of assignments, median and lowest reprojection correlation) and the plots.
    """
    lines = [f"cryosnake run summary: {files.outdir}"]
    for title, sub, parts in _SECTIONS:
        body = [line for part in parts for line in _guard(part, files)]
        if body:
            lines += ["", f"{title} ({files.outdir / sub})", *body]
    plots = [p for p in files.plots if _exists(p)]
    if plots:
        lines += ["", "Plots:", *(f"  {p}" for p in plots)]
    if len(lines) == 1:
        lines.append("(no outputs yet)")
    return "\n".join(lines) + "\n"


def write_run_summary(files: RunFiles, out_txt) -> str:
    """Write :func:`run_summary` of ``files`` to ``out_txt`` (atomically) and return it."""
    text = run_summary(files)
    write_text(out_txt, text)
    return text
