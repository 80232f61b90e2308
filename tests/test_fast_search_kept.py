"""The fraction of hypotheses the fast search keeps (``search_kept`` of the E-step
assignments, issue 16): counted from the blocks the E-step actually evaluated."""

from __future__ import annotations

import numpy as np
from ml2d_sim import make_views, simulate

from cryosnake.ml2d import ML2DSettings
from cryosnake.ml2d.estep import estep
from cryosnake.ml2d.initial import initial_model_from_references
from cryosnake.mlf2d import MLF2DSettings
from cryosnake.mlf2d.estep import estep as mlf2d_estep
from cryosnake.mlf2d.initial import start_model, start_statistics


def _data():
    rng = np.random.default_rng(11)
    views = make_views(3, 32, rng)
    images, _ = simulate(views, 60, rng, snr=0.3, offset_std=1.0)
    return views, images


def test_ml2d_search_kept_is_the_fraction_of_evaluated_blocks():
    views, images = _data()
    for fast in (False, True):
        settings = ML2DSettings(n_classes=3, psi_step=15.0, fast=fast, seed=2)
        model = initial_model_from_references(views, settings, 4.0)
        _, _, state = estep(images, model, settings)  # iteration 1: fresh offsets
        debug: dict = {}
        _, a, _ = estep(images, model, settings, state, debug=debug)
        blocks = model.n_classes * len(np.arange(0.0, 90.0, 15.0)) * 8  # K x psi in [0, 90) x flips
        evaluated = np.bincount(np.concatenate(debug["image"]), minlength=len(images))
        np.testing.assert_array_equal(a["search_kept"], evaluated / blocks)
        if fast:  # easy data: most blocks are pruned, none of the images keeps nothing
            assert 0.0 < a["search_kept"].min() and a["search_kept"].mean() < 0.5
        else:
            assert np.all(a["search_kept"] == 1.0)


def test_mlf2d_search_kept_full_and_fast():
    views, images = _data()
    for fast in (False, True):
        settings = MLF2DSettings(n_classes=3, psi_step=15.0, fast=fast, seed=2,
                                 ctf_correction=False, high_res_limit=0.0)
        stats = start_statistics(images, None, np.zeros(len(images), int), 1, 4.0, settings)
        model = start_model(stats, settings, 4.0, 32, [0.0], references=views)
        _, _, state = mlf2d_estep(images, model, settings)
        _, a, _ = mlf2d_estep(images, model, settings, state=state)
        if fast:
            assert 0.0 < a["search_kept"].min() and a["search_kept"].mean() < 0.5
        else:
            assert np.all(a["search_kept"] == 1.0)
