"""The reprojection check of a Reconstruct Significant volume (cryosnake.significant.reprojection,
cryosnake.pipeline.reprojection, plots.reprojections).

The projections must follow exactly the convention the alignment used to assign the angles:
checked against the demo's independent real-space projector, and on the poses that
Reconstruct Significant itself assigns to exact projections of a phantom.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg

from cryosnake import demo, plots
from cryosnake.geometry import wrap_angle
from cryosnake.io import mrc, star
from cryosnake.pipeline.reprojection import reprojection_job, reprojection_table
from cryosnake.pipeline.significant import write_angles
from cryosnake.significant import SignificantSettings, run_iteration
from cryosnake.significant.reprojection import (
    best_rows,
    circular_mask,
    masked_ncc,
    reproject,
)
from cryosnake.significant.sampling import gallery_directions
from cryosnake.summary import RunFiles, run_summary
from cryosnake.volume3d.volume_ops import fourier_resize

BOX = 32


@pytest.fixture(scope="module")
def phantom():
    return demo.phantom_volume(BOX, seed=2).astype(np.float32)


def random_poses(rng, n):
    """Random directions, psi and origins of 1.5-3 px in x and y (either sign)."""
    rot = rng.uniform(0.0, 360.0, n)
    tilt = np.rad2deg(np.arccos(rng.uniform(-0.95, 0.95, n)))
    psi = rng.uniform(0.0, 360.0, n)
    ox, oy = rng.uniform(1.5, 3.0, (2, n)) * rng.choice([-1.0, 1.0], (2, n))
    return rot, tilt, psi, ox, oy


def real_space_averages(volume, rot, tilt, psi, ox, oy):
    """Averages by the demo's real-space projector (trilinear, independent of the Fourier
    projector), moved by -origin (RELION: the particle sits at box centre - origin)."""
    return np.stack([demo.shift_image(demo.project(volume, r, t, p), -x, -y)
                     for r, t, p, x, y in zip(rot, tilt, psi, ox, oy, strict=True)]
                    ).astype(np.float32)


def test_best_rows_takes_the_highest_cc_then_the_highest_weight():
    image = np.array([0, 0, 0, 2, 2, 2, 3])
    cc = np.array([0.5, 0.9, 0.7, 0.8, 0.8, 0.8, 0.1])
    weight = np.array([1.0, 0.2, 0.9, 0.3, 0.6, 0.6, 0.5])
    best = best_rows(image, cc, weight, 5)
    # image 1 and 4 have no row; image 2: equal cc, equal best weight -> the first of them
    assert best.tolist() == [1, -1, 4, 6, -1]
    assert best_rows([], [], [], 2).tolist() == [-1, -1]


def test_masked_ncc_is_blind_to_scale_and_offset_and_sees_only_the_circle(rng):
    a = rng.normal(size=(3, BOX, BOX))
    assert np.allclose(masked_ncc(a, 2.5 * a + 7.0), 1.0)
    b = a.copy()
    b[:, ~circular_mask(BOX)] = rng.normal(size=(3, int((~circular_mask(BOX)).sum())))
    assert np.allclose(masked_ncc(a, b), 1.0)  # outside the circle: ignored
    assert circular_mask(BOX)[BOX // 2, 0] and not circular_mask(BOX)[0, 0]
    assert np.isnan(masked_ncc(np.ones((1, BOX, BOX)), a[:1]))[0]


def test_reprojections_match_an_independent_real_space_projector(phantom):
    """(a) Exact projections at known poses reproject at > 0.99; psi + 90 or the opposite
    origin sign do not (< 0.9)."""
    rot, tilt, psi, ox, oy = random_poses(np.random.default_rng(5), 8)
    averages = real_space_averages(phantom, rot, tilt, psi, ox, oy)
    right = masked_ncc(averages, reproject(phantom, rot, tilt, psi, ox, oy))
    wrong_psi = masked_ncc(averages, reproject(phantom, rot, tilt, psi + 90.0, ox, oy))
    wrong_shift = masked_ncc(averages, reproject(phantom, rot, tilt, psi, -ox, -oy))
    print(f"\nNCC right {np.round(right, 4)}\n    psi+90 {np.round(wrong_psi, 3)}"
          f"\n    -origin {np.round(wrong_shift, 3)}")
    assert right.min() > 0.99
    assert wrong_psi.max() < 0.9
    assert wrong_shift.max() < 0.9


def test_poses_assigned_by_reconstruct_significant_reproject(tmp_path, phantom):
    """The convention end to end: Reconstruct Significant aligns exact projections (at gallery
    directions, random psi and origins) to the phantom; its angles.star, read back, reprojects
    each average at > 0.99 from the best row, and at < 0.9 with psi + 90."""
    rng = np.random.default_rng(11)
    rot_d, tilt_d = gallery_directions("c1", 15.0, 0.0, 180.0)
    pick = rng.choice(len(rot_d), 6, replace=False)
    _, _, psi, ox, oy = random_poses(rng, 6)
    averages = real_space_averages(phantom, rot_d[pick], tilt_d[pick], psi, ox, oy)
    # no Fisher pre-selection: several significant rows per average to choose from
    settings = SignificantSettings(angular_sampling=15.0, iterations=1, alpha0=97.0,
                                   alphaF=97.0, fisher=False)
    _, angles = run_iteration(averages, phantom, settings, 1, sampling_A=3.0)
    info = {"names": [f"{k + 1:06d}@averages.mrcs" for k in range(6)], "sampling": 3.0,
            "input_sampling": 3.0, "input_box": BOX}
    write_angles(tmp_path / "angles.star", angles, info)
    table = star.read_particles(tmp_path / "angles.star")[0]
    result, _ = reprojection_table(phantom, averages, table, info["names"], 3.0)
    ncc = result["cryosnakeReprojectionCC"].to_numpy()
    rows = result["cryosnakeSignificantRows"].to_numpy()
    print(f"\nsignificant rows per average {rows.tolist()}, NCC at the best row "
          f"{np.round(ncc, 4)}")
    assert rows.min() >= 2  # the best row was chosen among several
    assert ncc.min() > 0.99
    # the best row is the true pose: the direction itself, psi and origins
    assert np.allclose(result[["rlnAngleRot", "rlnAngleTilt"]], np.c_[rot_d[pick], tilt_d[pick]])
    assert np.abs(wrap_angle(result["rlnAnglePsi"] - psi)).max() < 2.0
    assert np.abs(result["rlnOriginXAngst"] / 3.0 - ox).max() < 0.3
    assert np.abs(result["rlnOriginYAngst"] / 3.0 - oy).max() < 0.3
    table["rlnAnglePsi"] += 90.0
    wrong, _ = reprojection_table(phantom, averages, table, info["names"], 3.0)
    print(f"psi + 90: {np.round(wrong['cryosnakeReprojectionCC'].to_numpy(), 3)}")
    assert wrong["cryosnakeReprojectionCC"].max() < 0.9


def write_inputs(folder, phantom, rng, psi_offset=0.0):
    """Files of a Significant run with a working grid (32 px, 3 Å/px) smaller than the input
    (48 px, 2 Å/px): the volume at the input box, 5 averages, one of them without a row, and
    for each other a true row plus a decoy (psi + 90) with a lower cc but a higher weight."""
    n = 5
    rot, tilt, psi, ox, oy = random_poses(rng, n)
    averages = real_space_averages(phantom, rot, tilt, psi, ox, oy)
    mrc.write_volume(folder / "volume.mrc", fourier_resize(phantom, 48), 2.0)
    mrc.write_stack(folder / "averages.mrcs", averages, 3.0)
    info = {"names": [f"{k + 1:06d}@classes.mrcs" for k in range(n)], "n_images": n,
            "input_box": 48, "input_sampling": 2.0, "box": BOX, "sampling": 3.0}
    (folder / "info.json").write_text(json.dumps(info))
    posed = np.arange(n - 1)  # the last average has no significant row
    true = pd.DataFrame({"image": posed, "direction": posed, "rot": rot[posed],
                         "tilt": tilt[posed], "psi": psi[posed] + psi_offset,
                         "origin_x_px": ox[posed], "origin_y_px": oy[posed],
                         "weight": 0.5, "cc": 0.95, "imed": 1.0})
    decoy = true.assign(psi=true["psi"] + 90.0, direction=true["direction"] + 10, weight=0.9,
                        cc=0.6)
    angles = pd.concat([decoy, true], ignore_index=True)
    angles["origin_x_A"] = angles["origin_x_px"] * 3.0
    angles["origin_y_A"] = angles["origin_y_px"] * 3.0
    write_angles(folder / "angles.star", angles, info)
    return averages


def run_job(folder):
    return reprojection_job(folder / "volume.mrc", folder / "angles.star",
                            folder / "averages.mrcs", folder / "info.json",
                            folder / "reprojections.star", folder / "reprojections.mrcs",
                            folder / "reprojections.png")


def test_job_on_files(tmp_path, phantom):
    """The job on files: the volume resized to the working grid, origins in Å at the working
    pixel size, the true row chosen over the decoy, one row per average, the figure and the
    summary lines."""
    averages = write_inputs(tmp_path, phantom, np.random.default_rng(3))
    table = run_job(tmp_path)
    ncc = table["cryosnakeReprojectionCC"].to_numpy()
    print(f"\nNCC per average {np.round(ncc, 4)}")
    read = star.read_particles(tmp_path / "reprojections.star")[0]
    assert len(read) == len(averages) == 5
    assert read["rlnImageName"].tolist() == [f"{k + 1:06d}@classes.mrcs" for k in range(5)]
    assert (ncc[:4] > 0.99).all() and np.isnan(ncc[4])
    assert read["cryosnakeDirection"].tolist() == [1, 2, 3, 4, 0]  # not the decoys (11-14)
    assert read["cryosnakeSignificantRows"].tolist() == [2, 2, 2, 2, 0]
    proj = mrc.read(tmp_path / "reprojections.mrcs")
    assert proj.shape == (5, BOX, BOX) and not proj[4].any()
    assert np.allclose(masked_ncc(averages[:4], proj[:4]), ncc[:4], atol=1e-4)
    png = mpimg.imread(tmp_path / "reprojections.png")
    assert png[..., :3].var() > 1e-3

    text = run_summary(RunFiles.of(tmp_path, reprojections=tmp_path / "reprojections.star"))
    low = int(np.nanargmin(ncc))
    print(text)
    assert (f"median {np.nanmedian(ncc):.3f}, lowest {ncc[low]:.3f} "
            f"({low + 1:06d}@classes.mrcs)") in text
    assert "1 of 5 averages without a significant direction" in text


def test_job_with_wrong_angles_reports_low_correlations(tmp_path, phantom):
    write_inputs(tmp_path, phantom, np.random.default_rng(3), psi_offset=90.0)
    ncc = run_job(tmp_path)["cryosnakeReprojectionCC"].to_numpy()
    print(f"\nNCC with psi + 90 {np.round(ncc, 3)}")
    assert np.nanmax(ncc) < 0.9


@pytest.mark.parametrize("n", [3, 100])
def test_figure_layout(tmp_path, rng, n):
    """One panel per average, worst first, for 3 to 100 averages; the PNG stays readable."""
    images = rng.normal(size=(n, BOX, BOX)).astype(np.float32)
    mrc.write_stack(tmp_path / "a.mrcs", images, 3.0)
    mrc.write_stack(tmp_path / "p.mrcs", images + rng.normal(size=images.shape), 3.0)
    ncc = rng.uniform(0.3, 1.0, n)
    ncc[1] = np.nan
    table = pd.DataFrame({"rlnImageName": [f"{k + 1:06d}@c.mrcs" for k in range(n)],
                          "cryosnakeImageIndex": np.arange(n) + 1,
                          "cryosnakeReprojectionCC": ncc,
                          "cryosnakeReprojectionImage": [f"{k + 1:06d}@p.mrcs"
                                                         for k in range(n)]})
    star.write_table(tmp_path / "r.star", table, "particles")
    fig = plots.reprojections(tmp_path / "r.star", tmp_path / "a.mrcs", tmp_path / "p.mrcs",
                              tmp_path / "r.png")
    assert len(fig.axes) == n
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert labels[0] == "no pose" and labels[1] == f"NCC {np.nanmin(ncc):.3f}"
    values = [float(t.split()[1]) for t in labels[1:]]
    assert values == sorted(values)
    png = mpimg.imread(tmp_path / "r.png")
    print(f"\n{n} averages: {png.shape[1]} x {png.shape[0]} px")
    assert 300 <= png.shape[0] <= 3000 and 300 <= png.shape[1] <= 3000
