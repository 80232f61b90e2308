"""The whole workflow on a tiny demo: demo -> ML2D -> Reconstruct Significant -> figures ->
summary -> Snakemake report (what reruns after which change: tests/test_workflow_rerun.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
from matplotlib import image as mpimg
from scipy import ndimage

from cryosnake.geometry import wrap_angle
from cryosnake.io import importers, mrc, star
from cryosnake.io.particles import ParticleStack

REPO = Path(__file__).resolve().parents[1]
CONFIG = """
demo: {n_particles: 150, box: 32, views: 3, snr: 1.0, seed: 3}
ml2d: {classes: 3, max_iterations: 3, write_subsets: true}
significant: {iterations: 3, angular_sampling: 15.0}
compute: {chunk_size: 75, threads: 1}
"""

pytestmark = pytest.mark.slow


def snakemake(folder, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args,
           "--cores", "2", "--configfile", "config.yaml"]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    (folder / "config.yaml").write_text(CONFIG)
    proc = snakemake(folder)
    return folder, proc.stdout + proc.stderr


@pytest.mark.parametrize("png,min_panels", [
    ("ml2d/gallery.png", 3), ("ml2d/convergence.png", 5), ("significant/volume.png", 6),
    ("significant/angular_distribution.png", 1), ("significant/progress.png", 2),
    ("significant/reprojections.png", 3),
])
def test_figures_from_a_real_run(run_folder, png, min_panels):
    folder, _ = run_folder
    img = mpimg.imread(folder / "results" / png)
    assert img.ndim == 3 and 300 <= img.shape[0] <= 3000 and 300 <= img.shape[1] <= 3000
    assert img[..., :3].var() > 1e-3  # not blank


def test_volume_and_summary(run_folder):
    folder, log = run_folder
    vol = mrc.read(folder / "results" / "significant" / "volume.mrc")
    assert vol.shape == (32, 32, 32) and np.isfinite(vol).all() and vol.std() > 0
    assert mrc.header_info(folder / "results" / "significant" / "volume.mrc")["sampling"] == 4.0
    summary = (folder / "results" / "summary.txt").read_text()
    assert "classes: 3" in summary and "volume: results/significant/volume.mrc" in summary
    assert "cryosnake run summary" in log  # printed on the console too
    # intermediates are temporary without keep_intermediate; stats are kept for the plots
    sig = folder / "results" / "significant"
    assert not (sig / "iter_001" / "volume.mrc").exists()
    assert (sig / "iter_001" / "stats.json").exists()


def test_demo_check_scores_the_run_against_the_truth(run_folder):
    """On the built-in demo the run is scored against its truth: 3 easy views (SNR 1) are
    recovered exactly; the volume from 3 averages is weak but real (FSC-0.5 short of the
    box)."""
    import json

    folder, _ = run_folder
    check = json.loads((folder / "results" / "demo" / "check.json").read_text())
    print(check)
    assert check["classes"]["ari"] == 1.0 and check["classes"]["views_found"] == 3
    assert check["classes"]["median_view_ncc"] > 0.9
    assert 2 * 4.0 <= check["volume"]["fsc05_A"] < 32 * 4.0
    summary = (folder / "results" / "summary.txt").read_text()
    assert "Demo check: the run against the demo's truth" in summary
    assert "adjusted Rand index 1.000 against the true views, 3 of 3 views found" in summary


def test_reprojections(run_folder):
    """One row per average that went into Reconstruct Significant, each with a pose and a
    correlation; the projections beside them; the median and lowest in the summary."""
    folder, log = run_folder
    sig = folder / "results" / "significant"
    info = json.loads((sig / "input" / "info.json").read_text())
    table = star.read_particles(sig / "reprojections.star")[0]
    assert table["rlnImageName"].tolist() == info["names"]
    ncc = table["cryosnakeReprojectionCC"].to_numpy()
    print(f"\nreprojection NCC of the e2e run: {np.round(ncc, 3)}")
    assert np.isfinite(ncc).all() and (ncc > 0.5).all()
    assert mrc.read(sig / "reprojections.mrcs").shape == (info["n_images"], 32, 32)
    summary = (folder / "results" / "summary.txt").read_text()
    low = int(np.argmin(ncc))
    assert (f"median {np.median(ncc):.3f}, lowest {ncc[low]:.3f} "
            f"({info['names'][low]})") in summary


def test_report_builds(run_folder):
    folder, _ = run_folder
    snakemake(folder, "--report", "report.html")
    html = (folder / "report.html").read_text(errors="replace")
    assert len(html) > 50_000
    for name in ("gallery.png", "convergence.png", "volume.png", "angular_distribution.png",
                 "progress.png", "reprojections.png", "summary.txt"):
        assert name in html


# --- what RELION and Xmipp make of the ML2D outputs -------------------------------------------


def _ml2d(folder):
    """``(particles, optics, class averages)`` of the run."""
    ml2d = folder / "results" / "ml2d"
    particles, optics = star.read_particles(ml2d / "particles.star")
    return particles, optics, mrc.read(ml2d / "classes.mrcs")


def _disc_ncc(a, b) -> float:
    """Normalised cross-correlation inside the disc of radius N/2 - 2 (RELION's
    --apply_transformation fills the corners with 0 where our transforms wrap around)."""
    n = a.shape[-1]
    y, x = np.mgrid[:n, :n] - n // 2
    disc = x**2 + y**2 <= (n // 2 - 2) ** 2
    a, b = a[disc] - a[disc].mean(), b[disc] - b[disc].mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _class_nccs(images, class_number, classes, select=None) -> dict[int, float]:
    """NCC of the mean of each class's ``images`` (rows ``select``) with its class average."""
    select = np.ones(len(images), bool) if select is None else np.asarray(select)
    out = {}
    for k in range(1, len(classes) + 1):
        rows = (np.asarray(class_number) == k) & select
        if rows.any():
            out[k] = round(_disc_ncc(images[rows].mean(axis=0), classes[k - 1]), 4)
    return out


@pytest.mark.relion
def test_relion_applies_our_poses(run_folder, relion):
    """RELION's relion_stack_create --apply_transformation on the non-mirrored particles gives
    images that average to our class averages (NCC >= 0.99 for every class of >= 50 particles);
    with psi or the origin negated they do not: our columns mean what they mean to RELION
    (shift by +origin, then rotate by -psi)."""
    folder, _ = run_folder
    particles, optics, classes = _ml2d(folder)
    plain = particles[particles["cryosnakeMirror"] == 0].reset_index(drop=True)
    variants = {
        "ours": plain,
        "psi negated": plain.assign(rlnAnglePsi=-plain["rlnAnglePsi"]),
        "origin negated": plain.assign(rlnOriginXAngst=-plain["rlnOriginXAngst"],
                                       rlnOriginYAngst=-plain["rlnOriginYAngst"]),
    }
    (folder / "relion_poses").mkdir(exist_ok=True)
    star.write_particles(folder / "relion_poses" / "plain.star",
                         pd.concat(variants.values(), ignore_index=True), optics)
    relion("relion_stack_create", "--i", "relion_poses/plain.star", "--o",
           "relion_poses/aligned", "--apply_transformation", cwd=folder)
    aligned = mrc.read(folder / "relion_poses" / "aligned.mrcs")
    aligned = aligned.reshape(len(variants), len(plain), *aligned.shape[1:])
    sizes = particles["rlnClassNumber"].value_counts()
    big = [k for k in range(1, len(classes) + 1) if sizes.get(k, 0) >= 50]
    assert big, sizes
    for (name, table), images in zip(variants.items(), aligned, strict=True):
        ncc = _class_nccs(images, table["rlnClassNumber"], classes)
        print(f"\nRELION-aligned non-mirrored particles vs class averages, {name}: {ncc} "
              f"(class sizes {sizes.sort_index().to_dict()})")
        if name == "ours":
            assert min(ncc[k] for k in big) >= 0.99
        else:
            assert max(ncc[k] for k in big) < 0.9


def _xmipp_align(image, psi_deg, shift_x, shift_y, flip):
    """The aligned image by Xmipp's convention, written out here without cryosnake's code:
    ``out(A r) = in(r)`` with ``A = [[L, b], [0, 1]]``, ``L = diag(-1, 1)^flip R(psi)``,
    ``R(psi) = [[cos, sin], [-sin, cos]]``, ``b = (shiftX, shiftY)`` on centred
    ``(x, y) = (column, row) - N//2`` (geo2TransformationMatrix + applyGeometry IS_NOT_INV);
    cubic B-splines, periodic (Xmipp wraps by default)."""
    n = image.shape[-1]
    c, s = np.cos(np.deg2rad(psi_deg)), np.sin(np.deg2rad(psi_deg))
    L = np.array([[c, s], [-s, c]]) * (np.array([[-1.0], [1.0]]) if flip else 1.0)
    pull = np.linalg.inv(L)[::-1, ::-1]  # out(r) = in(L^-1 (r - b)), in (row, column) order
    centre = np.array([n // 2, n // 2], dtype=float)
    offset = centre - pull @ (centre + np.array([shift_y, shift_x]))
    return ndimage.affine_transform(image, pull, offset=offset, order=3, mode="grid-wrap")


def test_xmipp_poses_align_particles_onto_class_averages(run_folder, monkeypatch):
    """particles.xmd applied to each particle by Xmipp's convention (flip included) gives
    images that average to our class averages, mirrored particles alone too; psi negated on
    the mirrored ones does not."""
    folder, _ = run_folder
    monkeypatch.chdir(folder)  # image paths are relative to the run folder, as RELION's
    particles, _, classes = _ml2d(folder)
    xmd = star.read_blocks(Path("results/ml2d/particles.xmd"))["noname"]
    assert xmd["image"].tolist() == particles["rlnImageName"].tolist()
    with ParticleStack("results/ml2d/particles.star") as ps:
        images = ps.read(np.arange(ps.n))
    flip = xmd["flip"].to_numpy()
    assert 0 < flip.sum() < len(flip)
    for name, sign in (("xmipp", 1.0), ("psi negated", -1.0)):
        aligned = np.stack([_xmipp_align(img, sign * row.anglePsi, row.shiftX, row.shiftY,
                                         row.flip)
                            for img, row in zip(images, xmd.itertuples(), strict=True)])
        every = _class_nccs(aligned, xmd["ref"], classes)
        mirrored = _class_nccs(aligned, xmd["ref"], classes, flip == 1)
        print(f"\nparticles.xmd ({name}) vs class averages: all particles {every}, "
              f"mirrored only {mirrored}")
        many = [k for k in mirrored if ((xmd["ref"] == k) & (flip == 1)).sum() >= 15]
        assert many
        if name == "xmipp":
            assert min(every.values()) >= 0.99
            assert min(mirrored[k] for k in many) >= 0.98
        else:
            assert max(mirrored[k] for k in many) < 0.9


def test_xmipp_export_reads_back(run_folder):
    """particles.xmd read by our own Xmipp importer gives back the poses of particles.star."""
    folder, _ = run_folder
    ml2d = folder / "results" / "ml2d"
    particles, _, _ = _ml2d(folder)
    back, optics, _ = importers.read_xmd(ml2d / "particles.xmd")
    assert back["rlnImageName"].tolist() == particles["rlnImageName"].tolist()
    for column in ("rlnClassNumber", "cryosnakeMirror"):
        assert back[column].tolist() == particles[column].tolist()
    np.testing.assert_allclose(optics["rlnImagePixelSize"], 4.0)
    np.testing.assert_allclose(wrap_angle(back["rlnAnglePsi"] - particles["rlnAnglePsi"]), 0,
                               atol=1e-5)
    for axis in "XY":
        np.testing.assert_allclose(back[f"cryosnakeOrigin{axis}Px"] * 4.0,
                                   particles[f"rlnOrigin{axis}Angst"], atol=1e-5)
    np.testing.assert_allclose(back["pMax"], particles["rlnMaxValueProbDistribution"],
                               atol=1e-6)
    assert back["itemId"].tolist() == list(range(1, len(particles) + 1))


@pytest.mark.relion
def test_model_star_is_read_by_relion(run_folder, relion):
    """model.star passes RELION's own MlModel::read (relion_project --model_noise, which also
    reads every class image), and the noise RELION draws from our spectra has our sigma."""
    folder, _ = run_folder
    ml2d = folder / "results" / "ml2d"
    blocks = starfile.read(ml2d / "model.star", always_dict=True)
    general, table = blocks["model_general"], blocks["model_classes"]
    assert general["rlnReferenceDimensionality"] == 2 and general["rlnNrClasses"] == 3
    assert general["rlnOriginalImageSize"] == 32 and general["rlnPixelSize"] == 4.0
    classes_star = starfile.read(ml2d / "classes.star")
    assert table["rlnReferenceImage"].tolist() == classes_star["rlnReferenceImage"].tolist()
    np.testing.assert_allclose(table["rlnClassDistribution"].sum(), 1.0, atol=1e-5)
    assert {f"model_class_{k}" for k in (1, 2, 3)} <= set(blocks)

    particles, optics, _ = _ml2d(folder)
    out = folder / "relion_model"
    out.mkdir(exist_ok=True)
    group = blocks["model_groups"]["rlnGroupName"].iloc[0]
    angles = particles[["rlnImageName", "rlnOpticsGroup"]].assign(
        rlnAngleRot=0.0, rlnAngleTilt=0.0, rlnAnglePsi=0.0, rlnGroupName=group)
    star.write_particles(out / "angles.star", angles, optics)
    mrc.write_volume(out / "zero.mrc", np.zeros((32, 32, 32), np.float32), 4.0)
    relion("relion_project", "--i", "relion_model/zero.mrc", "--ang", "relion_model/angles.star",
           "--o", "relion_model/noise", "--add_noise", "--model_noise",
           "results/ml2d/model.star", cwd=folder)
    noise = mrc.read(out / "noise.mrcs")
    sigma = json.loads((ml2d / "model.json").read_text())["sigma_noise"]
    print(f"\nnoise drawn by relion_project from model.star: std {noise.std():.4f}, "
          f"ML2D sigma {sigma:.4f}")
    assert noise.shape == (len(particles), 32, 32)
    assert abs(noise.std() / sigma - 1) < 0.05


def test_class_subsets_partition_the_particles(run_folder):
    """ml2d.write_subsets: class_NNN.star hold each particle of particles.star exactly once,
    in the file of its class, with the optics table."""
    folder, _ = run_folder
    ml2d = folder / "results" / "ml2d"
    particles, optics, classes = _ml2d(folder)
    subsets = []
    for k in range(1, len(classes) + 1):
        subset, sub_optics = star.read_particles(ml2d / f"class_{k:03d}.star")
        assert (subset["rlnClassNumber"] == k).all()
        pd.testing.assert_frame_equal(sub_optics, optics)
        subsets.append(subset)
    merged = pd.concat(subsets, ignore_index=True)
    assert sorted(merged["rlnImageName"]) == sorted(particles["rlnImageName"])
    merged = merged.set_index("rlnImageName").loc[particles["rlnImageName"]].reset_index()
    pd.testing.assert_frame_equal(merged[particles.columns], particles)


@pytest.mark.relion
def test_relion_reads_a_class_subset(run_folder, relion):
    folder, _ = run_folder
    subset, _ = star.read_particles(folder / "results" / "ml2d" / "class_001.star")
    (folder / "relion_subset").mkdir(exist_ok=True)
    relion("relion_stack_create", "--i", "results/ml2d/class_001.star", "--o",
           "relion_subset/class_001", cwd=folder)
    assert mrc.read(folder / "relion_subset" / "class_001.mrcs").shape == (len(subset), 32, 32)
