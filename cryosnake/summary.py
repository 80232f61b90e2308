"""The plain-text run summary: what a run produced, read back from its output folder.

:func:`run_summary` looks at ``{outdir}`` (layout in ``README.md``, "Outputs") and reports
whatever is there; a stage that has not run (or a file that is missing) is left out, and a file
that cannot be read is named with the reason instead of stopping the summary.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from cryosnake.atomic import write_text
from cryosnake.io import mrc

_ITER = re.compile(r"iter_(\d{3,})$")


def _iteration_files(folder: Path, name: str) -> list[tuple[int, Path]]:
    """``(NNN, folder/iter_NNN/name)`` for every iteration folder holding ``name``, in order."""
    found = []
    if folder.is_dir():
        for sub in folder.iterdir():
            m = _ITER.match(sub.name)
            if m and sub.is_dir() and (sub / name).is_file():
                found.append((int(m.group(1)), sub / name))
    return sorted(found)


def _table(path: Path, block: str) -> pd.DataFrame:
    tables = {k: v for k, v in starfile.read(path, always_dict=True).items()
              if isinstance(v, pd.DataFrame)}
    return tables.get(block, next(iter(tables.values())) if len(tables) == 1 else pd.DataFrame())


def _fmt(x, spec: str = ".6g") -> str:
    return "n/a" if x is None else format(float(x), spec)


def _ml2d_iterations(folder: Path) -> list[str]:
    lines = []
    iterations = _iteration_files(folder, "model.json")
    if iterations:
        last_n, last_path = iterations[-1]
        model = json.loads(last_path.read_text())
        state = ("converged" if model.get("converged")
                 else "not converged (stopped at the last iteration)")
        lines.append(f"  iterations run: {len(iterations)} (last: iter_{last_n:03d}), {state}")
        lines.append(f"  final log-likelihood: {_fmt(model.get('loglik'))}, "
                     f"<Pmax> {_fmt(model.get('ave_pmax'), '.4f')}, "
                     f"sigma {_fmt(model.get('sigma_noise'), '.4g')}, "
                     f"xi {_fmt(model.get('sigma_offset'), '.3g')} px")
    return lines


def _ml2d_classes(folder: Path) -> list[str]:
    lines = []
    classes_star, classes_mrcs = folder / "classes.star", folder / "classes.mrcs"
    if classes_star.is_file():
        table = _table(classes_star, "classes")
        counts = (table["cryosnakeParticleCount"].to_numpy(dtype=np.int64)
                  if "cryosnakeParticleCount" in table else None)
        header = f"  classes: {len(table)}"
        if classes_mrcs.is_file():
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


def _significant_volume(folder: Path) -> list[str]:
    lines = []
    volume = folder / "volume.mrc"
    if volume.is_file():
        info = mrc.header_info(volume)
        nz, ny, nx = info["shape"]
        box = f"{nx}^3" if nx == ny == nz else f"{nx} x {ny} x {nz}"
        s = info["sampling"]
        size = f", {s:.4g} Å/voxel (edge {nx * s:.1f} Å)" if s > 0 else ", voxel size not set"
        lines.append(f"  volume: {volume}, box {box} voxels{size}")
    return lines


def _significant_iterations(folder: Path) -> list[str]:
    lines = []
    iterations = _iteration_files(folder, "stats.json")
    if iterations:
        last_n, last_path = iterations[-1]
        stats = json.loads(last_path.read_text())
        text = f"  iterations run: {len(iterations)} (last: iter_{last_n:03d})"
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


def _significant_angles(folder: Path) -> list[str]:
    lines = []
    angles = folder / "angles.star"
    if angles.is_file():
        table = _table(angles, "particles")
        n_images = (table["cryosnakeImageIndex"].nunique()
                    if "cryosnakeImageIndex" in table else "?")
        lines.append(f"  angles: {angles}, {len(table)} assignments of {n_images} images")
    return lines


_SECTIONS = (
    ("ML2D 2D classification", "ml2d", (_ml2d_iterations, _ml2d_classes)),
    ("Reconstruct Significant", "significant",
     (_significant_volume, _significant_iterations, _significant_angles)),
)


def _guard(part, folder: Path) -> list[str]:
    try:
        return part(folder)
    except Exception as err:  # a summary names a broken file, it does not stop the run
        return [f"  (could not read part of {folder}: {type(err).__name__}: {err})"]


def run_summary(outdir) -> str:
    """A short plain-text summary of the run in ``outdir``.

    Sections (each only when its files exist): ML2D (iterations run = number of
    ``ml2d/iter_NNN/model.json``, converged or not, final log-likelihood, ⟨Pmax⟩, σ, ξ; the
    classes with particle count, % of particles and α_k, empty ones flagged), Reconstruct
    Significant (volume path, box in voxels and voxel size in Å, iterations, final significance,
    significant directions per image, number of assignments) and the PNG plots found anywhere
    under ``outdir``.
    """
    outdir = Path(outdir)
    lines = [f"cryosnake run summary: {outdir}"]
    for title, sub, parts in _SECTIONS:
        folder = outdir / sub
        body = [line for part in parts for line in _guard(part, folder)] if folder.is_dir() else []
        if body:
            lines += ["", f"{title} ({outdir / sub})", *body]
    plots = sorted(p for p in outdir.rglob("*.png") if not p.name.startswith("."))
    if plots:
        lines += ["", "Plots:", *(f"  {p}" for p in plots)]
    if len(lines) == 1:
        lines.append("(no outputs yet)")
    return "\n".join(lines) + "\n"


def write_run_summary(outdir, out_txt) -> str:
    """Write :func:`run_summary` of ``outdir`` to ``out_txt`` (atomically) and return it."""
    text = run_summary(outdir)
    write_text(out_txt, text)
    return text
