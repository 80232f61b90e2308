"""The ML2D exports for other programs, on synthetic models and tables (the outputs of a real
run are checked against RELION and Xmipp's convention in tests/test_workflow_e2e.py): the
Xmipp pose conversion, the .xmd writer, the per-class STARs and the MLF2D side of model.star."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile

from cryosnake.geometry import wrap_angle
from cryosnake.io import importers, mrc, relion_model, star, xmipp
from cryosnake.mlf2d import MLF2DModel
from cryosnake.pipeline.ml2d import subsets_job


def test_xmipp_alignment_inverts_the_import(rng):
    """Our poses -> Xmipp labels -> the importer's conversion back: the same poses."""
    n = 200
    psi = rng.uniform(-180, 180, n)
    ox, oy = rng.normal(0, 3, n), rng.normal(0, 3, n)
    mirror = rng.integers(0, 2, n)
    table = pd.DataFrame(xmipp.alignment_from_pose(psi, ox, oy, mirror))
    assert set(table["flip"]) == {0, 1}
    importers._xmipp_alignment_to_relion(table)
    np.testing.assert_allclose(wrap_angle(table["rlnAnglePsi"] - psi), 0, atol=1e-9)
    np.testing.assert_allclose(table["cryosnakeOriginXPx"], ox, atol=1e-9)
    np.testing.assert_allclose(table["cryosnakeOriginYPx"], oy, atol=1e-9)
    assert table["cryosnakeMirror"].tolist() == mirror.tolist()


def test_xmipp_metadata_file(tmp_path):
    table = pd.DataFrame({"image": ["000001@a.mrcs", "000002@a.mrcs"], "ref": [1, 2],
                          "anglePsi": [10.25, -3.5], "flip": np.array([0, 1])})
    xmipp.write_metadata(tmp_path / "p.xmd", table)
    text = (tmp_path / "p.xmd").read_text().splitlines()
    assert text[:8] == ["# XMIPP_STAR_1 *", "#", "data_noname", "loop_", " _image", " _ref",
                        " _anglePsi", " _flip"]
    assert text[8] == " 000001@a.mrcs 1 10.250000 0"
    back = star.read_blocks(tmp_path / "p.xmd")["noname"]
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


def test_subsets_with_an_empty_class(tmp_path):
    """One file per class, an empty class included (RELION 3.1 layout, no rows)."""
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"],
                           "rlnImagePixelSize": [2.0], "rlnImageSize": [16],
                           "rlnImageDimensionality": [2]})
    particles = pd.DataFrame({"rlnImageName": [f"{i:06d}@s.mrcs" for i in range(1, 6)],
                              "rlnOpticsGroup": 1, "rlnClassNumber": [3, 1, 3, 1, 3]})
    star.write_particles(tmp_path / "particles.star", particles, optics)
    paths = [tmp_path / f"class_{k:03d}.star" for k in (1, 2, 3)]
    subsets_job(tmp_path / "particles.star", paths)
    sizes = [len(star.read_particles(p)[0]) for p in paths]
    assert sizes == [2, 0, 3]
    third, third_optics = star.read_particles(paths[2])
    assert third["rlnImageName"].tolist() == ["000001@s.mrcs", "000003@s.mrcs", "000005@s.mrcs"]
    assert third_optics["rlnVoltage"].tolist() == [300.0]  # what RELION needs to read it


def _mlf2d_model(n=32, sampling=3.0):
    """Two classes, two defocus groups of white noise (pixel std 0.5 and 2.0); class 1's SSNR
    drops below 1 after shell 6, class 2's at shell 1."""
    shells = n // 2
    ssnr = np.zeros((2, shells))
    ssnr[0, :7] = 5.0
    ssnr[1, :1] = 5.0
    sigma = np.array([0.5, 2.0])
    return MLF2DModel(
        references=np.zeros((2, n, n)), class_fractions=[0.7, 0.3], mirror_fractions=[0, 0],
        sigma_noise=1.0, sigma_offset=1.5, loglik=-10.0, ave_pmax=0.5, sampling=sampling,
        noise_spectra=np.repeat((sigma**2 * n**2)[:, None], shells, axis=1),
        group_defocus=[15000.0, 25000.0], group_sizes=[40, 60], ssnr=ssnr, shell_high=10)


def test_model_star_of_mlf2d():
    n, ts = 32, 3.0
    blocks = relion_model.model_blocks(_mlf2d_model(n, ts), ["000001@c.mrcs", "000002@c.mrcs"])
    general = blocks["model_general"]
    assert general["rlnNrGroups"] == 2 and general["rlnNrClasses"] == 2
    assert general["rlnCurrentResolution"] == pytest.approx(n * ts / 10)
    assert general["rlnSigmaOffsetsAngst"] == pytest.approx(4.5)
    np.testing.assert_allclose(blocks["model_classes"]["rlnEstimatedResolution"],
                               [n * ts / 6, relion_model.UNKNOWN])
    assert len(blocks["model_class_1"]) == n // 2 + 1
    assert blocks["model_groups"]["rlnGroupNrParticles"].tolist() == [40, 60]
    sigma2 = blocks["model_group_2"]["rlnSigma2Noise"].astype(float)
    np.testing.assert_allclose(sigma2, 2.0**2 / (2 * n**2), rtol=1e-6)


@pytest.mark.relion
def test_relion_reads_the_mlf2d_model_star(tmp_path, relion):
    """MlModel::read accepts the MLF2D model.star (two groups), and relion_project draws the
    second group's noise with its pixel std."""
    n = 32
    model = _mlf2d_model(n)
    mrc.write_stack(tmp_path / "c.mrcs", model.references.astype(np.float32), 3.0)
    relion_model.write(tmp_path / "model.star", model, ["000001@c.mrcs", "000002@c.mrcs"])
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"],
                           "rlnImagePixelSize": [3.0], "rlnImageSize": [n],
                           "rlnImageDimensionality": [2]})
    group = starfile.read(tmp_path / "model.star")["model_groups"]["rlnGroupName"].iloc[1]
    angles = pd.DataFrame({"rlnImageName": [f"{i:06d}@c.mrcs" for i in range(1, 101)],
                           "rlnOpticsGroup": 1, "rlnAngleRot": 0.0, "rlnAngleTilt": 0.0,
                           "rlnAnglePsi": 0.0, "rlnGroupName": group})
    star.write_particles(tmp_path / "angles.star", angles, optics)
    mrc.write_volume(tmp_path / "zero.mrc", np.zeros((n, n, n), np.float32), 3.0)
    relion("relion_project", "--i", "zero.mrc", "--ang", "angles.star", "--o", "noise",
           "--add_noise", "--model_noise", "model.star", cwd=tmp_path)
    std = mrc.read(tmp_path / "noise.mrcs").std()
    print(f"\nrelion_project noise of MLF2D group 2: std {std:.4f} (model 2.0)")
    assert abs(std / 2.0 - 1) < 0.05
