"""User-provided ML2D references: MRC stack or STAR of images; K from the file; box checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile

from cryosnake.errors import InputError
from cryosnake.io import mrc
from cryosnake.io.classify2d import read_model
from cryosnake.ml2d import ML2DModel
from cryosnake.pipeline.ml2d import read_references, start_job


def test_stack_and_star_references_and_box_mismatch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refs = np.random.default_rng(0).normal(size=(4, 24, 24)).astype(np.float32)
    mrc.write_stack(tmp_path / "refs.mrcs", refs, 2.0)
    np.testing.assert_array_equal(read_references(tmp_path / "refs.mrcs", 24), refs)
    starfile.write(pd.DataFrame({"rlnReferenceImage": ["3@refs.mrcs", "1@refs.mrcs"]}),
                   tmp_path / "refs.star")
    np.testing.assert_array_equal(read_references(tmp_path / "refs.star", 24), refs[[2, 0]])
    with pytest.raises(InputError, match=r"references are 24×24 px but the particles are 32×32"):
        read_references(tmp_path / "refs.mrcs", 32)


def test_user_references_set_k_in_the_start_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    imgs = np.random.default_rng(1).normal(size=(10, 24, 24)).astype(np.float32)
    mrc.write_stack(tmp_path / "p.mrcs", imgs, 2.0)
    starfile.write({"optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [2.0],
                                            "rlnImageSize": [24]}),
                    "particles": pd.DataFrame({"rlnImageName": [f"{i + 1}@p.mrcs"
                                                                for i in range(10)],
                                               "rlnOpticsGroup": 1})}, tmp_path / "p.star")
    mrc.write_stack(tmp_path / "refs.mrcs", imgs[:5], 2.0)
    cfg = {"classes": 3, "references": "refs.mrcs", "psi_step": 30.0, "mirror": True,
           "fast": True, "norm": False, "noise_std": 1.0, "offset_std": 1.0,
           "particle_diameter": 0.0, "reseed_fraction": 0.0, "reseed_iterations": 10,
           "loglik_tolerance": 0.01,
           "max_iterations": 2, "seed": 1, "fourier": False}
    start_job(tmp_path / "p.star", cfg, 5, tmp_path / "m.json", tmp_path / "r.mrcs",
              tmp_path / "i.npz")
    model = read_model(tmp_path / "m.json", ML2DModel)
    assert model.n_classes == 5  # K = number of references, not `classes`
    np.testing.assert_allclose(model.references, imgs[:5], atol=1e-6)
    np.testing.assert_allclose(model.class_fractions, 0.2)
