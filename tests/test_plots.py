"""Figures and run summary, rendered from small synthetic workflow outputs (README "Outputs")."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import starfile

from cryosnake import plots
from cryosnake.io import mrc
from cryosnake.summary import RunFiles, run_summary

BOX = 32
SAMPLING = 2.5  # Å/px
COUNTS = [40, 0, 250, 110, 600]  # class 2 is empty; class 5 is the largest


# --- synthetic outputs -------------------------------------------------------------------------


def blob(n: int, centre, sigma: float) -> np.ndarray:
    """A Gaussian blob on an ``n``-pixel grid (2D or 3D by the length of ``centre``)."""
    grids = np.meshgrid(*[np.arange(n)] * len(centre), indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
    return np.exp(-r2 / (2 * sigma**2))


def write_ml2d(outdir: Path, rng, n_iterations: int = 3) -> Path:
    folder = outdir / "ml2d"
    k = len(COUNTS)
    images = np.stack([blob(BOX, (16 + 2 * i, 12 + 3 * i), 3 + i) for i in range(k)])
    images += 0.05 * rng.standard_normal(images.shape)
    images[1] = 0.0  # the empty class
    mrc.write_stack(folder / "classes.mrcs", images, SAMPLING)
    counts = np.array(COUNTS)
    starfile.write({"classes": pd.DataFrame({
        "rlnReferenceImage": [f"{i + 1:06d}@{folder}/classes.mrcs" for i in range(k)],
        "rlnClassDistribution": counts / counts.sum(),
        "cryosnakeParticleCount": counts,
        "cryosnakeClassWeight": counts.astype(float),
        "cryosnakeMirrorFraction": np.full(k, 0.5),
    })}, folder / "classes.star", overwrite=True)
    for it in range(n_iterations):
        fractions = (1 - it / n_iterations) / k + (it / n_iterations) * counts / counts.sum()
        model = {
            "iteration": it,
            "loglik": None if it == 0 else -1.0e6 + 5.0e4 * it,
            "ave_pmax": None if it == 0 else 0.5 + 0.1 * it,
            "sigma_noise": 1.0 - 0.1 * it,
            "sigma_offset": 3.0 - 0.5 * it,
            "class_fractions": fractions.tolist(),
            "mirror_fractions": [0.5] * k,
            "signal_change": [None] * k if it == 0 else [10.0 ** -it, None, 0.3, 0.02, 1.0],
            "converged": it == n_iterations - 1,
            "n_classes": k,
            "image_size": BOX,
        }
        (folder / f"iter_{it:03d}").mkdir(parents=True, exist_ok=True)
        (folder / f"iter_{it:03d}" / "model.json").write_text(json.dumps(model))
    return folder


def write_significant(outdir: Path, rng, n_iterations: int = 4, n_images: int = 10) -> Path:
    folder = outdir / "significant"
    vol = blob(BOX, (16, 14, 18), 4.0) + 0.6 * blob(BOX, (10, 20, 16), 2.5)
    mrc.write_volume(folder / "volume.mrc", vol, SAMPLING)
    rows = []
    for image in range(1, n_images + 1):
        for _ in range(5):  # five significant directions per image
            rows.append({
                "rlnImageName": f"{image:06d}@ml2d/classes.mrcs",
                "rlnAngleRot": rng.choice([0.0, 45.0, 90.0, 200.0, 300.0]),
                "rlnAngleTilt": rng.choice([0.0, 30.0, 90.0, 150.0]),
                "rlnAnglePsi": rng.uniform(0, 360),
                "rlnOriginXAngst": 0.0,
                "rlnOriginYAngst": 0.0,
                "cryosnakeWeight": rng.uniform(0, 1),
                "cryosnakeCC": rng.uniform(0.5, 0.9),
                "cryosnakeImageIndex": image,
            })
    starfile.write({"particles": pd.DataFrame(rows)}, folder / "angles.star", overwrite=True)
    for it in range(1, n_iterations + 1):
        alpha = 0.2 - (0.2 - 0.005) * (it - 1) / n_iterations
        stats = {
            "iteration": it,
            "alpha": alpha,
            "n_images": n_images,
            "n_significant": rng.integers(1, 1 + int(200 * alpha), n_images).tolist(),
            "volume_change": None if it == 1 else 0.5 / it**2,
        }
        (folder / f"iter_{it:03d}").mkdir(parents=True, exist_ok=True)
        (folder / f"iter_{it:03d}" / "stats.json").write_text(json.dumps(stats))
    return folder


@pytest.fixture
def run_dir(tmp_path, rng) -> Path:
    write_ml2d(tmp_path, rng)
    write_significant(tmp_path, rng)
    return tmp_path


def check_png(path: Path, min_px: int = 400, max_px: int = 3000) -> np.ndarray:
    """The PNG reads back, has a sensible size and is not blank; returns its pixels."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    h, w = img.shape[:2]
    assert min_px <= w <= max_px and min_px <= h <= max_px, (w, h)
    assert img[..., :3].var() > 1e-3
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary file left behind
    return img


# --- figures -----------------------------------------------------------------------------------


def test_ml2d_gallery(run_dir):
    out = run_dir / "plots" / "ml2d_gallery.png"
    fig = plots.ml2d_gallery(run_dir / "ml2d/classes.mrcs", run_dir / "ml2d/classes.star", out)
    check_png(out)
    assert len(fig.axes) == len(COUNTS)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["class 5", "class 3", "class 4", "class 1", "class 2"]  # largest first
    total = sum(COUNTS)
    assert fig.axes[0].get_xlabel() == f"600 ptcl · {100 * 600 / total:.1f} %"
    marked = [ax.get_title() for ax in fig.axes if any(t.get_text() == "empty" for t in ax.texts)]
    assert marked == ["class 2"]
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in fig.axes)


def test_ml2d_gallery_marks_an_all_zero_image_with_particles(tmp_path, rng):
    folder = write_ml2d(tmp_path, rng)
    images = mrc.read(folder / "classes.mrcs")
    images[2] = 0.0  # class 3 has 250 particles but a blank average
    mrc.write_stack(folder / "classes.mrcs", images, SAMPLING)
    fig = plots.ml2d_gallery(folder / "classes.mrcs", folder / "classes.star", tmp_path / "g.png")
    marked = {ax.get_title() for ax in fig.axes if any(t.get_text() == "empty" for t in ax.texts)}
    assert marked == {"class 2", "class 3"}


def test_ml2d_convergence(run_dir):
    out = run_dir / "plots" / "ml2d_convergence.png"
    models = sorted((run_dir / "ml2d").glob("iter_*/model.json"), reverse=True)  # any order
    fig = plots.ml2d_convergence(models, out)
    check_png(out)
    assert len(fig.axes) == 6  # LL, <Pmax>, sigma (+ xi twin), signal change, class fractions
    ll_line = fig.axes[0].get_lines()[0]
    np.testing.assert_array_equal(ll_line.get_xdata(), [1, 2])  # iteration 0 has no LL
    assert "converged at iteration 2" in fig.get_suptitle()
    frac_axis = next(ax for ax in fig.axes if "class distribution" in ax.get_title())
    assert len(frac_axis.collections) == len(COUNTS)  # one stacked band per class


def test_ml2d_convergence_single_iteration_without_values(tmp_path, rng):
    folder = write_ml2d(tmp_path, rng, n_iterations=1)
    out = tmp_path / "c.png"
    model = json.loads((folder / "iter_000/model.json").read_text())
    model["converged"] = False
    (folder / "iter_000/model.json").write_text(json.dumps(model))
    fig = plots.ml2d_convergence([folder / "iter_000/model.json"], out)
    check_png(out)
    assert fig.get_suptitle().endswith("not converged")
    by_title = {ax.get_title(): ax for ax in fig.axes}
    for title, text in (("log-likelihood", "no log-likelihood"),
                        ("mean maximum posterior ⟨Pmax⟩", "no ⟨Pmax⟩"),
                        ("signal change per class (colours as below)", "no signal change")):
        assert any(text in t.get_text() for t in by_title[title].texts), title


def test_volume_views(run_dir):
    out = run_dir / "plots" / "volume.png"
    fig = plots.volume_views(run_dir / "significant/volume.mrc", out)
    check_png(out)
    assert len(fig.axes) == 6
    assert f"{BOX}³" in fig.get_suptitle() and f"{SAMPLING:.3g} Å/voxel" in fig.get_suptitle()
    assert all(ax.get_title() for ax in fig.axes)
    # slices and projections are of the volume as stored: the z-slice is vol[BOX // 2]
    vol = mrc.read(run_dir / "significant/volume.mrc")
    np.testing.assert_allclose(fig.axes[0].get_images()[0].get_array(), vol[BOX // 2])
    np.testing.assert_allclose(fig.axes[4].get_images()[0].get_array(), vol.sum(axis=1),
                               rtol=1e-5)


def test_direction_weights_sums_rows_of_one_direction():
    angles = pd.DataFrame({
        "rlnAngleRot": [10.0, 10.0, 123.0, 50.0],
        "rlnAngleTilt": [60.0, 60.0, 0.0, 0.0],  # both tilt-0 rows are the north pole
        "rlnAnglePsi": [0.0, 90.0, 0.0, 0.0],
        "cryosnakeWeight": [0.5, 0.25, 1.0, 2.0],
    })
    dirs = plots.direction_weights(angles)
    assert len(dirs) == 2
    np.testing.assert_allclose(dirs["weight"], [0.75, 3.0])
    np.testing.assert_allclose(dirs["n_images"], [2, 2])
    np.testing.assert_allclose(dirs[["rot_deg", "tilt_deg"]].iloc[0], [10.0, 60.0], atol=1e-9)


def test_angular_distribution(run_dir):
    out = run_dir / "plots" / "angular_distribution.png"
    fig = plots.angular_distribution(run_dir / "significant/angles.star", out)
    check_png(out)
    assert len(fig.axes) == 2  # the map and its colour bar
    assert fig.axes[0].name == "mollweide"
    angles = starfile.read(run_dir / "significant/angles.star")
    points = fig.axes[0].collections[0]
    n_dirs = len(plots.direction_weights(angles))
    assert len(points.get_offsets()) == n_dirs
    np.testing.assert_allclose(points.get_array().sum(), angles["cryosnakeWeight"].sum())
    assert "50 assignments of 10 images" in fig.get_suptitle()


def test_significant_progress(run_dir):
    out = run_dir / "plots" / "progress.png"
    stats = sorted((run_dir / "significant").glob("iter_*/stats.json"))
    fig = plots.significant_progress(stats, out)
    check_png(out)
    assert len(fig.axes) == 3  # volume change, significant directions and the alpha twin
    change = fig.axes[0].get_lines()[0]
    np.testing.assert_array_equal(change.get_xdata(), [2, 3, 4])  # iteration 1 has no change
    level = fig.axes[2].get_lines()[0]
    alphas = [json.loads(f.read_text())["alpha"] for f in stats]
    np.testing.assert_allclose(level.get_ydata(), [100 * (1 - a) for a in alphas])
    assert level.get_ydata()[0] == pytest.approx(80.0)
    mean = fig.axes[1].get_lines()[0]
    first = json.loads(stats[0].read_text())["n_significant"]
    assert mean.get_ydata()[0] == pytest.approx(np.mean(first))


# --- summary -----------------------------------------------------------------------------------


def run_files(outdir: Path, ml2d_iteration: int = 2, significant_iteration: int = 4) -> RunFiles:
    """The final outputs of a synthetic run; ``ml2d/model.json`` is a copy of the model of
    ``ml2d_iteration`` (as the final rule writes it)."""
    ml2d = outdir / "ml2d"
    model = ml2d / f"iter_{ml2d_iteration:03d}" / "model.json"
    if model.is_file():
        (ml2d / "model.json").write_text(model.read_text())
    return RunFiles.of(
        outdir, ml2d_model=ml2d / "model.json", classes=ml2d / "classes.mrcs",
        classes_star=ml2d / "classes.star", volume=outdir / "significant/volume.mrc",
        angles=outdir / "significant/angles.star",
        significant_stats=outdir / f"significant/iter_{significant_iteration:03d}/stats.json",
        plots=[outdir / "plots/volume.png", outdir / "plots/missing.png"])


def test_run_summary(run_dir):
    plots.volume_views(run_dir / "significant/volume.mrc", run_dir / "plots/volume.png")
    text = run_summary(run_files(run_dir))
    total = sum(COUNTS)
    for k, n in enumerate(COUNTS):
        assert f"{k + 1:5d}  {n:>9}  {100 * n / total:7.1f}" in text
    assert "(empty)" in text
    assert f"{total} particles" in text
    assert "classes from iteration 2 (iter_002), converged" in text
    assert "final log-likelihood: -900000" in text
    assert f"box {BOX}^3 voxels, {SAMPLING:.4g} Å/voxel (edge {BOX * SAMPLING:.1f} Å)" in text
    assert str(run_dir / "significant/volume.mrc") in text
    assert "volume from iteration 4 (iter_004)" in text
    assert "50 assignments of 10 images" in text
    assert str(run_dir / "plots/volume.png") in text and "missing.png" not in text
    assert "phase flipped" not in text  # ML2D: no CTF, no line
    files = run_files(run_dir)
    files.phase_flip = "false (auto: rlnCtfDataArePhaseFlipped = 0 in the input)"
    assert ("  phase flipped: false (auto: rlnCtfDataArePhaseFlipped = 0 in the input)\n"
            in run_summary(files))
    files.significant_info = run_dir / "info.json"  # the 2D -> 3D selection (prepare job)
    files.significant_info.write_text(json.dumps({
        "n_images": 4, "classes_rule": {"min_share": 0.25}, "classes_left_out": [
            {"class": 2, "particles": 0, "why": "empty"}]}))
    assert ("  averages: 4 ML2D classes (significant.classes: {'min_share': 0.25}), 1 left "
            "out:\n    class 2 (0 particles): empty\n") in run_summary(files)
    files.demo_check = run_dir / "check.json"  # the built-in demo's truth (demo_check job)
    files.demo_check.write_text(json.dumps({
        "classes": {"ari": 0.91234, "views": 12, "views_found": 11, "median_view_ncc": 0.95,
                    "classes_used": 12},
        "volume": {"fsc05_A": 14.26, "fsc0143_A": 11.0, "nyquist_A": 8.0, "mirrored": True,
                   "cc": 0.9}}))
    text = run_summary(files)
    assert "Demo check: the run against the demo's truth" in text
    assert ("  2D classes: adjusted Rand index 0.912 against the true views, 11 of 12 views "
            "found, median NCC of the best class average to each clean view 0.950") in text
    assert ("FSC-0.5 14.3 Å, FSC-0.143 11.0 Å (Nyquist 8.0 Å), mirrored hand") in text


def test_run_summary_describes_the_final_files_not_the_newest_folder(run_dir):
    # max_iterations lowered from 2 to 1: iter_002 is still on disk, the classes come from 1
    text = run_summary(run_files(run_dir, ml2d_iteration=1, significant_iteration=3))
    assert "classes from iteration 1 (iter_001), not converged" in text
    assert "final log-likelihood: -950000" in text
    assert "volume from iteration 3 (iter_003)" in text


def test_run_summary_skips_what_is_missing(tmp_path, rng):
    assert "no outputs yet" in run_summary(run_files(tmp_path))
    write_significant(tmp_path, rng)
    (tmp_path / "significant/angles.star").unlink()
    text = run_summary(run_files(tmp_path))
    assert "ML2D" not in text and "angles:" not in text
    assert f"box {BOX}^3 voxels" in text
    (tmp_path / "significant/iter_004/stats.json").write_text("{broken")
    assert "could not read part of" in run_summary(run_files(tmp_path))
