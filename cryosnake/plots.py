"""Figures a scientist looks at: one function per figure, from workflow outputs to one PNG.

Every function takes the paths of the files the workflow wrote (formats in ``README.md``,
"Outputs") and the PNG to write, renders with matplotlib's Agg canvas (no pyplot, no global
backend switch, so it is safe in Snakemake jobs, on clusters and inside notebooks), writes the PNG
atomically (:func:`cryosnake.atomic.atomic_path`) at :data:`DPI` dots per inch, and returns the
:class:`matplotlib.figure.Figure` so that tests can count its panels (``fig.axes``).

Image display convention (all figures): an mrcfile array ``[y, x]`` is shown with x to the right
and y **up** (``origin="lower"``), as ChimeraX and IMOD show MRC files; each image has its own
contrast (1st-99th percentile of its pixels), grey colormap, white = high density.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cryosnake.atomic import atomic_path
from cryosnake.io import mrc, star
from cryosnake.io.jsonfile import read_json_series
from cryosnake.io.star import split_image_names

#: Resolution of every PNG (dots per inch); figures are a few inches wide.
DPI = 150

#: ML2D convergence threshold on ``delta_k`` (spec §1.10, Xmipp ``--eps``); the model files hold
#: ``1000 * delta_k`` ("signal change"), so the line is drawn at ``1000 * ML2D_EPS``.
ML2D_EPS = 5e-5


# --- helpers ---------------------------------------------------------------------------------


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png) -> Figure:
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", facecolor="white")
    return fig


def _contrast(img: np.ndarray) -> tuple[float, float]:
    """Display range of one image: its 1st and 99th percentile (never an empty range)."""
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [1.0, 99.0]))
    if not hi > lo:
        lo, hi = float(finite.min()), float(finite.max())
    if not hi > lo:
        lo, hi = lo - 0.5, lo + 0.5
    return lo, hi


def _show(ax, img: np.ndarray, extent=None) -> None:
    lo, hi = _contrast(img)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest",
              extent=extent)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _nan(v) -> float:
    """JSON value -> float (``null`` and missing -> NaN)."""
    return float("nan") if v is None else float(v)


# --- 1. ML2D class averages ------------------------------------------------------------------


def ml2d_gallery(classes_mrcs, classes_star, out_png) -> Figure:
    """All ML2D class averages in a grid, largest class first.

    One panel per class (``K`` panels, no other axes), sorted by ``cryosnakeParticleCount``
    (descending; ties by class number). Panel title: ``class k``; under it the number of particles
    whose best class is k and its percentage of all particles. (Without a count column, or with
    no particle counted, the classes are sorted and labelled by ``rlnClassDistribution``, the
    soft fraction α_k, in %.) Each image has its own contrast, y up. Empty classes (0 particles,
    or an all-zero / constant image) get a red frame and the label "empty". The suptitle gives
    K, the number of particles, the box (px) and pixel size (Å/px).

    The image of class k is the section named in its ``rlnReferenceImage`` (``k@…``), or row k of
    the stack when that index is missing.
    """
    images = mrc.read_stack(classes_mrcs)
    sampling = mrc.header_info(classes_mrcs)["sampling"]
    table = star.read_table(classes_star, "classes").reset_index(drop=True)
    n_classes = len(table)

    if "rlnReferenceImage" in table:
        index, _ = split_image_names(table["rlnReferenceImage"])
        index = np.where(np.isfinite(index), index, np.arange(1, n_classes + 1)).astype(int)
    else:
        index = np.arange(1, n_classes + 1)
    has_counts = "cryosnakeParticleCount" in table
    counts = (table["cryosnakeParticleCount"].to_numpy(dtype=np.int64) if has_counts
              else np.zeros(n_classes, dtype=np.int64))
    total = int(counts.sum())
    if total > 0:
        percent = 100.0 * counts / total
    elif "rlnClassDistribution" in table:
        percent = 100.0 * table["rlnClassDistribution"].to_numpy(dtype=np.float64)
    else:
        percent = np.full(n_classes, np.nan)
    size = counts if total > 0 else np.nan_to_num(percent, nan=0.0)
    order = np.lexsort((np.arange(n_classes), -size))  # largest first, then class number

    n_cols = max(1, min(n_classes, 10, math.ceil(math.sqrt(1.5 * n_classes))))
    n_rows = max(1, math.ceil(n_classes / n_cols))
    panel_in = 1.7 if n_cols <= 6 else 1.3
    fig = _new_figure(max(4.0, panel_in * n_cols), panel_in * 1.18 * n_rows + 0.5)
    box = images.shape[-1]
    fig.suptitle(f"ML2D class averages: {n_classes} classes, {total} particles, largest first\n"
                 f"box {box} px, {sampling:.3g} Å/px", fontsize=10)

    for slot, row in enumerate(order):
        ax = fig.add_subplot(n_rows, n_cols, slot + 1)
        k = int(index[row])
        img = images[k - 1] if 1 <= k <= len(images) else np.zeros(images.shape[1:])
        _show(ax, img)
        ax.set_xticks([])
        ax.set_yticks([])
        finite = img[np.isfinite(img)]
        empty = (has_counts and counts[row] == 0) or finite.size == 0 or not np.ptp(finite) > 0
        ax.set_title(f"class {row + 1}", fontsize=8, pad=2,
                     color="red" if empty else "black")
        label = [f"{counts[row]} ptcl"] if has_counts else []
        if np.isfinite(percent[row]):
            label.append(f"{percent[row]:.1f} %")
        ax.set_xlabel(" · ".join(label), fontsize=7, labelpad=2)
        if empty:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.5)
            ax.text(0.5, 0.5, "empty", transform=ax.transAxes, ha="center", va="center",
                    color="red", fontsize=10, fontweight="bold")
    return _save(fig, out_png)


# --- 2. ML2D convergence ---------------------------------------------------------------------


def ml2d_convergence(model_jsons: Sequence, out_png) -> Figure:
    """ML2D statistics against iteration, one point per ``iter_NNN/model.json``.

    Panels (5, plus one twin axis):

    * log-likelihood ``Σ_i LL_i`` (natural log, summed over images);
    * mean maximum posterior ⟨Pmax⟩ (0-1; near 1 means confident, one-hot assignments);
    * noise standard deviation σ (image grey-level units, left axis) and origin-offset standard
      deviation ξ (px, right twin axis);
    * signal change ``1000 δ_k`` per class (log scale; δ_k is the relative mean-square change of
      reference k, spec §1.10) with the convergence threshold ``1000 · 5·10⁻⁵`` dashed: ML2D has
      converged when every class is below it;
    * class distribution α_k stacked (fractions summing to 1), one colour per class.

    ``null`` values (e.g. no log-likelihood or signal change at iteration 0) are skipped. The first
    iteration whose ``converged`` is true is marked by a vertical dotted line on every panel.
    Iterations with another number of classes than the last one (the one-reference start model)
    are left out of the per-class panels.
    """
    records = read_json_series(model_jsons)
    it = np.array([r.get("iteration", i) for i, r in enumerate(records)], dtype=float)
    loglik = np.array([_nan(r.get("loglik")) for r in records])
    pmax = np.array([_nan(r.get("ave_pmax")) for r in records])
    sigma = np.array([_nan(r.get("sigma_noise")) for r in records])
    xi = np.array([_nan(r.get("sigma_offset")) for r in records])
    n_classes = len(records[-1].get("class_fractions", [])) if records else 0
    per_class = [i for i, r in enumerate(records) if len(r.get("class_fractions", [])) == n_classes]
    converged = [x for x, r in zip(it, records, strict=True) if r.get("converged")]

    fig = _new_figure(10.0, 8.5)
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 1, 1.2])
    ax_ll, ax_pmax = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_sigma, ax_change = fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
    ax_frac = fig.add_subplot(grid[2, :])
    status = (f"converged at iteration {int(converged[0])}" if converged
              else "not converged")
    fig.suptitle(f"ML2D convergence: {len(records)} iterations, {n_classes} classes, {status}",
                 fontsize=11)

    def line(ax, y, **kw):
        ok = np.isfinite(y)
        if ok.any():
            ax.plot(it[ok], y[ok], marker="o", markersize=3, **kw)
        return ok.any()

    if not line(ax_ll, loglik, color="C0"):
        _no_data(ax_ll, "no log-likelihood yet")
    ax_ll.set_title("log-likelihood", fontsize=10)
    ax_ll.set_ylabel("Σ log-likelihood (nats)")
    ax_ll.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)

    if not line(ax_pmax, pmax, color="C1"):
        _no_data(ax_pmax, "no ⟨Pmax⟩ yet")
    ax_pmax.set_title("mean maximum posterior ⟨Pmax⟩", fontsize=10)
    ax_pmax.set_ylabel("⟨Pmax⟩")

    line(ax_sigma, sigma, color="C2", label="σ noise")
    ax_sigma.set_title("noise σ and offset ξ", fontsize=10)
    ax_sigma.set_ylabel("σ (grey levels)", color="C2")
    ax_xi = ax_sigma.twinx()
    line(ax_xi, xi, color="C3", linestyle="--", label="ξ offset")
    ax_xi.set_ylabel("ξ (px)", color="C3")
    ax_sigma.legend(handles=[*ax_sigma.get_lines(), *ax_xi.get_lines()], fontsize=8,
                    loc="best")

    colours = _class_colours(n_classes)
    change = np.array([[_nan(v) for v in records[i].get("signal_change") or [None] * n_classes]
                       for i in per_class]).reshape(len(per_class), n_classes)
    change[change <= 0] = np.nan  # a log axis cannot show 0 (an unchanged reference)
    any_change = False
    for k in range(n_classes):
        ok = np.isfinite(change[:, k])
        if ok.any():
            any_change = True
            ax_change.plot(it[per_class][ok], change[ok, k], marker="o", markersize=2,
                           color=colours[k], linewidth=1)
    if any_change:
        ax_change.set_yscale("log")
        ax_change.axhline(1000 * ML2D_EPS, color="k", linestyle="--", linewidth=1,
                          label=f"threshold 1000·ε (ε = {ML2D_EPS:g})")
        ax_change.legend(fontsize=8, loc="best")
    else:
        _no_data(ax_change, "no signal change yet")
    ax_change.set_title("signal change per class (colours as below)", fontsize=10)
    ax_change.set_ylabel("1000 δ_k (relative)")

    if per_class and n_classes:
        fractions = np.array([[_nan(v) for v in records[i]["class_fractions"]]
                              for i in per_class])
        fractions = np.nan_to_num(fractions, nan=0.0)
        ax_frac.stackplot(it[per_class], fractions.T, colors=colours, alpha=0.85,
                          labels=[f"class {k + 1}" for k in range(n_classes)])
        ax_frac.set_ylim(0, max(1.0, float(fractions.sum(axis=1).max())))
        if n_classes <= 24:
            ax_frac.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
                           ncols=1 if n_classes <= 12 else 2, frameon=False)
    else:
        _no_data(ax_frac, "no class fractions")
    ax_frac.set_title("class distribution α_k (stacked)", fontsize=10)
    ax_frac.set_ylabel("fraction of particles")

    for ax in (ax_ll, ax_pmax, ax_sigma, ax_change, ax_frac):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if len(it):
            ax.set_xlim(it.min() - 0.5, it.max() + 0.5)
        if converged:
            ax.axvline(converged[0], color="0.3", linestyle=":", linewidth=1)
    return _save(fig, out_png)


def _class_colours(n: int) -> list:
    """One colour per class: the default cycle up to 10 classes, then tab20 (repeating)."""
    if n <= 10:
        return [f"C{k}" for k in range(n)]
    cmap = colormaps["tab20"]
    return [cmap(k % 20) for k in range(n)]


# --- 3. Volume ---------------------------------------------------------------------------------


def volume_views(volume_mrc, out_png) -> Figure:
    """Central slices and projections of a volume: 2 × 3 panels (6 axes, nothing else).

    Top row: the central slices (index ``n // 2``) perpendicular to z (x-y plane), y (x-z plane) and
    x (y-z plane). Bottom row: the projections (sums) along z, y and x, i.e. what a particle image
    at (rot, tilt) = (0, 0), (90, 90) and (0, 90) looks like up to in-plane rotation. Axes in Å when
    the header has a voxel size (0 at the box corner), else in voxels; y up, per-panel contrast.
    The suptitle gives the file name, box (voxels), voxel size (Å) and box edge (Å).
    """
    vol = mrc.read(volume_mrc)
    if vol.ndim == 2:
        vol = vol[None]
    sampling = mrc.header_info(volume_mrc)["sampling"]
    nz, ny, nx = vol.shape
    unit = "Å" if sampling > 0 else "px"
    scale = sampling if sampling > 0 else 1.0

    def extent(n_h, n_v):
        return (0.0, n_h * scale, 0.0, n_v * scale)

    # (image [vertical, horizontal], title, horizontal axis, vertical axis, extent)
    views = [
        (vol[nz // 2], f"slice z = {nz // 2}", "x", "y", extent(nx, ny)),
        (vol[:, ny // 2, :], f"slice y = {ny // 2}", "x", "z", extent(nx, nz)),
        (vol[:, :, nx // 2], f"slice x = {nx // 2}", "y", "z", extent(ny, nz)),
        (vol.sum(axis=0), "projection along z (sum)", "x", "y", extent(nx, ny)),
        (vol.sum(axis=1), "projection along y (sum)", "x", "z", extent(nx, nz)),
        (vol.sum(axis=2), "projection along x (sum)", "y", "z", extent(ny, nz)),
    ]
    fig = _new_figure(9.0, 6.6)
    box = f"{nx}³" if nx == ny == nz else f"{nx} × {ny} × {nz}"
    size = (f", {sampling:.3g} Å/voxel, edge {nx * sampling:.1f} Å" if sampling > 0
            else ", voxel size not set")
    fig.suptitle(f"{Path(volume_mrc).name}: box {box} voxels{size}", fontsize=11)
    for i, (img, title, h, v, ext) in enumerate(views):
        ax = fig.add_subplot(2, 3, i + 1)
        _show(ax, img, extent=ext)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{h} ({unit})", fontsize=8)
        ax.set_ylabel(f"{v} ({unit})", fontsize=8)
        ax.tick_params(labelsize=7)
    return _save(fig, out_png)


# --- 4. Angular distribution -----------------------------------------------------------------


def direction_weights(angles: pd.DataFrame) -> pd.DataFrame:
    """Total weight per projection direction of an ``angles.star`` table.

    Rows with the same direction (unit vector ``(sin tilt cos rot, sin tilt sin rot, cos tilt)``
    equal to 10⁻³, so every ``rot`` at ``tilt = 0`` is one direction; psi is ignored) are summed.
    Returns columns ``rot_deg`` (−180…180), ``tilt_deg`` (0…180), ``weight`` (sum of
    ``cryosnakeWeight``, 1 per row when the column is absent) and ``n_images`` (rows); sorted by
    weight, heaviest last (drawn on top).
    """
    rot = np.deg2rad(angles["rlnAngleRot"].to_numpy(dtype=np.float64))
    tilt = np.deg2rad(angles["rlnAngleTilt"].to_numpy(dtype=np.float64))
    weight = (angles["cryosnakeWeight"].to_numpy(dtype=np.float64)
              if "cryosnakeWeight" in angles else np.ones(len(angles)))
    xyz = np.stack([np.sin(tilt) * np.cos(rot), np.sin(tilt) * np.sin(rot), np.cos(tilt)], 1)
    keys = pd.DataFrame(np.round(xyz * 1000).astype(np.int64), columns=["kx", "ky", "kz"])
    keys["weight"] = weight
    keys["n_images"] = 1
    keys[["x", "y", "z"]] = xyz
    grouped = keys.groupby(["kx", "ky", "kz"], sort=False).agg(
        weight=("weight", "sum"), n_images=("n_images", "sum"),
        x=("x", "first"), y=("y", "first"), z=("z", "first"))
    out = pd.DataFrame({
        "rot_deg": np.rad2deg(np.arctan2(grouped["y"], grouped["x"])),
        "tilt_deg": np.rad2deg(np.arccos(np.clip(grouped["z"], -1.0, 1.0))),
        "weight": grouped["weight"].to_numpy(),
        "n_images": grouped["n_images"].to_numpy(),
    })
    return out.sort_values("weight", kind="stable").reset_index(drop=True)


def angular_distribution(angles_star, out_png) -> Figure:
    """Projection directions of the significant assignments on a Mollweide map of the sphere.

    One panel (plus its colour bar, 2 axes): longitude = ``rlnAngleRot`` (−180…180°), latitude =
    90° − ``rlnAngleTilt`` (top views, tilt 0, at the north pole; side views, tilt 90, on the
    equator). One marker per distinct direction; its area and colour are the total
    ``cryosnakeWeight`` of the rows assigned to it (summed over images; psi and shifts ignored).
    The title gives the number of rows (image-direction pairs), images and distinct directions.
    """
    angles = star.read_table(angles_star, "particles")
    dirs = direction_weights(angles)
    n_images = (angles["cryosnakeImageIndex"].nunique() if "cryosnakeImageIndex" in angles
                else angles["rlnImageName"].nunique() if "rlnImageName" in angles else len(angles))

    fig = _new_figure(8.0, 4.3)
    ax = fig.add_subplot(1, 1, 1, projection="mollweide")
    fig.suptitle(f"Angular distribution: {len(angles)} assignments of {n_images} images to "
                 f"{len(dirs)} directions", fontsize=11)
    if len(dirs):
        w = dirs["weight"].to_numpy()
        w_max = float(w.max()) if w.max() > 0 else 1.0
        points = ax.scatter(np.deg2rad(dirs["rot_deg"]), np.deg2rad(90.0 - dirs["tilt_deg"]),
                            s=6 + 90 * w / w_max, c=w, cmap="viridis", vmin=0, vmax=w_max,
                            edgecolors="k", linewidths=0.3, zorder=3, clip_on=False)
        bar = fig.colorbar(points, ax=ax, shrink=0.7, pad=0.03)
        bar.set_label("total weight per direction (Σ cryosnakeWeight)")
    else:
        _no_data(ax, "no assignments")
    ax.set_xlabel("rot (°)")
    ax.set_ylabel("90° − tilt (°)")
    ax.tick_params(labelsize=7, labelcolor="0.35")
    ax.grid(alpha=0.4)
    return _save(fig, out_png)


# --- 5. Reconstruct Significant progress -------------------------------------------------------


def significant_progress(stats_jsons: Sequence, out_png) -> Figure:
    """Reconstruct Significant against iteration, one point per ``iter_NNN/stats.json``.

    (a) relative volume change ``‖V_i − V_{i−1}‖ / ‖V_{i−1}‖`` (dimensionless; log scale when all
        values are positive; iteration 1 has none).
    (b) significant directions per image: mean (line), 25-75 % quantiles (dark band) and min-max
        (light band) over the images, with the significance level ``100 (1 − α)`` % on the right
        twin axis (dashed): as it rises, fewer directions pass and the count should fall.

    3 axes in all (two panels and the twin).
    """
    records = read_json_series(stats_jsons)
    it = np.array([r.get("iteration", i + 1) for i, r in enumerate(records)], dtype=float)
    change = np.array([_nan(r.get("volume_change")) for r in records])
    level = np.array([100.0 * (1.0 - _nan(r.get("alpha"))) for r in records])
    quant = np.full((len(records), 5), np.nan)  # min, q25, mean, q75, max
    for i, r in enumerate(records):
        n = np.asarray([v for v in r.get("n_significant") or [] if v is not None], dtype=float)
        if n.size:
            q0, q25, q75, q100 = np.percentile(n, [0, 25, 75, 100])
            quant[i] = (q0, q25, n.mean(), q75, q100)

    fig = _new_figure(10.0, 4.2)
    ax_change, ax_sig = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    fig.suptitle(f"Reconstruct Significant: {len(records)} iterations", fontsize=11)

    ok = np.isfinite(change)
    if ok.any():
        ax_change.plot(it[ok], change[ok], marker="o", markersize=3, color="C0")
        if (change[ok] > 0).all():
            ax_change.set_yscale("log")
    else:
        _no_data(ax_change, "no volume change yet\n(first iteration)")
    ax_change.set_title("(a) volume change between iterations", fontsize=10)
    ax_change.set_ylabel("‖Vᵢ − Vᵢ₋₁‖ / ‖Vᵢ₋₁‖")

    ok = np.isfinite(quant[:, 2])
    handles = []
    if ok.any():
        x = it[ok]
        handles.append(ax_sig.fill_between(x, quant[ok, 0], quant[ok, 4], color="C0", alpha=0.15,
                                           linewidth=0, label="min-max"))
        handles.append(ax_sig.fill_between(x, quant[ok, 1], quant[ok, 3], color="C0", alpha=0.35,
                                           linewidth=0, label="25-75 %"))
        handles += ax_sig.plot(x, quant[ok, 2], marker="o", markersize=3, color="C0",
                               label="mean")
        ax_sig.set_ylim(bottom=0)
    else:
        _no_data(ax_sig, "no significant directions recorded")
    ax_sig.set_title("(b) significant directions per image", fontsize=10)
    ax_sig.set_ylabel("directions per image")
    ax_level = ax_sig.twinx()
    ok = np.isfinite(level)
    if ok.any():
        handles += ax_level.plot(it[ok], level[ok], color="C3", linestyle="--", marker="s",
                                 markersize=2, label="significance 100(1−α)")
    ax_level.set_ylabel("significance level 100 (1 − α) (%)", color="C3")
    if handles:
        ax_sig.legend(handles=handles, fontsize=8, loc="upper center", ncols=len(handles),
                      bbox_to_anchor=(0.5, -0.16), frameon=False)

    for ax in (ax_change, ax_sig):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if len(it):
            ax.set_xlim(it.min() - 0.5, it.max() + 0.5)
    return _save(fig, out_png)


# --- 6. Reprojections ------------------------------------------------------------------------


def _unit_contrast(img: np.ndarray) -> np.ndarray:
    """``img`` mapped to [0, 1] by its own 1st-99th percentile (clipped)."""
    lo, hi = _contrast(img)
    return np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo), 0.0, 1.0)


def reprojections(reprojections_star, averages_mrcs, reprojections_mrcs, out_png) -> Figure:
    """Each class average beside the volume's projection at its assigned pose, worst first.

    One panel per average (``n`` axes, nothing else): the average (left) and the projection
    (right, the section named by ``cryosnakeReprojectionImage``), each with its own contrast,
    y up, a white gap between them. Panel title: the average's number and stack
    (``rlnImageName``); under it ``cryosnakeReprojectionCC`` (NCC), the correlation in the
    circle of the box. Sorted by that correlation, lowest first; an average without a
    significant direction comes first, labelled "no pose" and framed in red.
    The suptitle gives the number of averages, the median and the lowest correlation. Up to 8
    panels a row, so 100 averages make 13 rows.

    The average of row ``k`` is section ``cryosnakeImageIndex`` of ``averages_mrcs`` (the
    averages at the working grid of Reconstruct Significant).
    """
    table = star.read_table(reprojections_star, "particles").reset_index(drop=True)
    averages = mrc.read_stack(averages_mrcs)
    projections = mrc.read_stack(reprojections_mrcs)
    averages = averages[None] if averages.ndim == 2 else averages
    projections = projections[None] if projections.ndim == 2 else projections
    n = len(table)
    ncc = table["cryosnakeReprojectionCC"].to_numpy(dtype=np.float64)
    order = np.argsort(np.where(np.isfinite(ncc), ncc, -np.inf), kind="stable")
    proj_index, _ = split_image_names(table["cryosnakeReprojectionImage"])
    avg_index = table["cryosnakeImageIndex"].to_numpy(dtype=np.int64)
    name_index, stacks = split_image_names(table["rlnImageName"])

    n_cols = max(1, min(n, 8, math.ceil(math.sqrt(1.5 * n))))
    n_rows = max(1, math.ceil(n / n_cols))
    pair_in = 2.2 if n_cols <= 4 else 1.9
    fig = _new_figure(max(5.0, pair_in * n_cols), 0.62 * pair_in * n_rows + 0.7)
    ok = np.isfinite(ncc)
    stats = (f"median {np.median(ncc[ok]):.3f}, lowest {ncc[ok].min():.3f}" if ok.any()
             else "no average has a pose")
    fig.suptitle(f"Reprojections of the volume: {n} averages, worst first\n"
                 "left: average, right: projection at its assigned pose\n"
                 f"NCC in the circle of the box: {stats}", fontsize=10)
    box = averages.shape[-1]
    gap = np.ones((box, max(1, box // 12)))
    for slot, row in enumerate(order):
        ax = fig.add_subplot(n_rows, n_cols, slot + 1)
        k, j = int(avg_index[row]), int(proj_index[row])
        avg = averages[k - 1] if 1 <= k <= len(averages) else np.zeros((box, box))
        proj = projections[j - 1] if 1 <= j <= len(projections) else np.zeros((box, box))
        pair = np.hstack([_unit_contrast(avg), gap, _unit_contrast(proj)])
        ax.imshow(pair, cmap="gray", vmin=0.0, vmax=1.0, origin="lower",
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        at = f"{int(name_index[row])}@" if np.isfinite(name_index[row]) else ""
        ax.set_title(f"{at}{Path(stacks[row]).name}", fontsize=7, pad=2)
        if np.isfinite(ncc[row]):
            ax.set_xlabel(f"NCC {ncc[row]:.3f}", fontsize=8, labelpad=2)
        else:
            ax.set_xlabel("no pose", fontsize=8, labelpad=2, color="red", fontweight="bold")
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.0)
    return _save(fig, out_png)


__all__ = [
    "DPI",
    "angular_distribution",
    "direction_weights",
    "ml2d_convergence",
    "ml2d_gallery",
    "reprojections",
    "significant_progress",
    "volume_views",
]
