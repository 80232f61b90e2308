"""Re-seeding of near-empty classes (``reseed_fraction``, :mod:`cryosnake.ml2d.reseed`).

The planted situation: four views, references for two of them, one reference that is the
blend of the other two, and one far-off reference that no particle takes. Without re-seeding
the far-off class stays empty and two views share the blend class; with re-seeding the empty
class restarts from the blend (the largest class) and the pair splits into the two views."""

from __future__ import annotations

import numpy as np
import pytest
from ml2d_sim import make_views, simulate
from test_ml2d_recovery import _best_labels

from cryosnake.ml2d import ML2DSettings, reseed
from cryosnake.ml2d.run import run_ml2d
from cryosnake.mlf2d import MLF2DSettings
from cryosnake.mlf2d.run import run_mlf2d

N = 40
SAMPLING = 4.0


def test_pairs_take_the_emptiest_classes_and_halve_the_largest():
    # mean weight 40, threshold 0.3 * 40 = 12: classes 2 (0) and 1 (5) are small
    assert reseed.pairs(np.array([100.0, 5.0, 0.0, 50.0, 45.0]), 0.3) == [(2, 0), (1, 0)]
    # a large class must hold twice the threshold: 23 < 2 * 12 stops the pairing
    assert reseed.pairs(np.array([23.0, 23.0, 23.0, 23.0, 23.0, 23.0, 23.0, 0.0]),
                        0.6) == []
    assert reseed.pairs(np.array([10.0, 0.0]), 0.0) == []
    assert reseed.pairs(np.array([10.0, 10.0, 10.0]), 0.5) == []


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(5)
    views = make_views(4, N, rng)
    images, truth = simulate(views, 400, rng, snr=0.3, offset_std=1.0)
    far = np.zeros((N, N))
    far[2:6, 2:6] = 30.0  # a bright corner: no particle looks like it
    refs = np.stack([views[0], views[1], 0.5 * (views[2] + views[3]), far])
    return images, truth, refs


def _run(planted, fourier: bool, reseed_fraction: float):
    images, truth, refs = planted
    common = dict(n_classes=4, psi_step=10.0, seed=3, reseed_fraction=reseed_fraction,
                  reseed_iterations=4)
    if fourier:
        settings = MLF2DSettings(**common, ctf_correction=False, high_res_limit=0.0)
        model, a, _ = run_mlf2d(images, None, SAMPLING, settings, references=refs,
                                max_iterations=8)
    else:
        model, a, _ = run_ml2d(images, ML2DSettings(**common), references=refs,
                               max_iterations=8)
    counts = np.bincount(a["class_number"] - 1, minlength=4)
    return counts, _best_labels(truth["class"], a["class_number"] - 1, 4)[1]


@pytest.mark.parametrize("fourier", [False, True], ids=["ml2d", "mlf2d"])
def test_reseeding_splits_the_blend_and_recovers_every_view(planted, fourier):
    counts, purity = _run(planted, fourier, 0.0)
    assert counts[3] == 0  # the seed's behaviour: an emptied class stays empty
    assert purity < 0.85  # two views share a class: at most 1 - 82/400 = 0.795
    counts, purity = _run(planted, fourier, 0.3)
    assert counts.min() >= 60  # 100 particles per view
    assert purity >= 0.97


def test_class_selection_leaves_out_the_small_classes(tmp_path):
    """significant.min_class_share: classes below that share of the mean class size are left
    out of the 2D -> 3D handoff (empty ones always; the largest class always stays)."""
    import pandas as pd

    from cryosnake.io import mrc, star
    from cryosnake.pipeline.significant import read_averages

    counts = np.array([400, 3, 0, 150, 40, 7])  # mean class size 100
    images = np.random.default_rng(0).normal(size=(6, 8, 8))
    images[2] = 0.0
    mrc.write_stack(tmp_path / "classes.mrcs", images, 2.0)
    star.write_blocks(tmp_path / "classes.star",
                      {"classes": pd.DataFrame({"cryosnakeParticleCount": counts})})
    kept = {0.0: [1, 2, 4, 5, 6], 0.25: [1, 4, 5], 0.5: [1, 4], 1.0: [1, 4]}
    for share, classes in kept.items():
        got, names, sampling = read_averages(tmp_path / "classes.mrcs",
                                             tmp_path / "classes.star", None, share)
        assert [int(n.split("@")[0]) for n in names] == classes
        np.testing.assert_array_equal(got, images[np.array(classes) - 1].astype(np.float32))
        assert sampling == 2.0
