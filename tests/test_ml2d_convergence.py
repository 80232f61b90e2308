"""The log-likelihood stop (``loglik_tolerance``,
:func:`cryosnake.classify2d.mstep.likelihood_settled`): a run also converges at the first
iteration whose E-step changes the log-likelihood by less than the tolerance per image, never
earlier, and otherwise computes exactly what the seed's test alone would."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from ml2d_sim import make_views, simulate

from cryosnake.classify2d.mstep import likelihood_settled
from cryosnake.ml2d import ML2DSettings
from cryosnake.ml2d.run import run_ml2d


def _settled(before: float, after: float, n: int, iteration: int, **settings) -> bool:
    model = SimpleNamespace(iteration=iteration, loglik=before)
    sums = SimpleNamespace(loglik_sum=after, n_images=n)
    return likelihood_settled(model, sums, ML2DSettings(**settings))


def test_the_gain_per_image_is_compared_with_the_tolerance():
    plain = dict(loglik_tolerance=0.01, reseed_fraction=0.0)
    assert _settled(-1000.0, -1000.0 + 0.99, 100, 5, **plain)  # 0.0099 per image
    assert not _settled(-1000.0, -1000.0 + 1.01, 100, 5, **plain)  # 0.0101
    assert _settled(-1000.0, -1000.0 - 0.99, 100, 5, **plain)  # a small loss counts too
    assert not _settled(-1000.0, -1000.0 - 1.01, 100, 5, **plain)
    assert not _settled(-1000.0, -1000.0, 100, 0, **plain)  # iteration 0: the start model
    assert not _settled(-1000.0, -1000.0, 100, 5, loglik_tolerance=0.0)  # off
    assert not _settled(float("nan"), -1000.0, 100, 5, **plain)


def test_no_stop_while_classes_may_be_reseeded():
    reseeding = dict(loglik_tolerance=0.01, reseed_fraction=0.25, reseed_iterations=10)
    # the gain of E-step 11 follows M-step 10, which may have re-seeded a class
    assert not _settled(-1000.0, -1000.0, 100, 10, **reseeding)
    assert _settled(-1000.0, -1000.0, 100, 11, **reseeding)
    assert _settled(-1000.0, -1000.0, 100, 3, **(reseeding | {"reseed_fraction": 0.0}))


def test_negative_tolerance_is_rejected():
    with pytest.raises(ValueError, match="loglik_tolerance"):
        ML2DSettings(loglik_tolerance=-0.1)


def test_run_stops_at_the_first_settled_iteration_and_is_otherwise_unchanged():
    rng = np.random.default_rng(11)
    views = make_views(3, 32, rng)
    images, _ = simulate(views, 240, rng, snr=0.1, offset_std=1.0)
    common = dict(n_classes=3, psi_step=15.0, seed=2, reseed_fraction=0.0, eps=1e-12)
    _, _, seed_only = run_ml2d(images, ML2DSettings(**common, loglik_tolerance=0.0),
                               max_iterations=12)
    assert len(seed_only) == 13  # iteration 0 and 1..12: eps = 1e-12 never converges here
    gain = np.abs(np.diff([m.loglik for m in seed_only])) / len(images)  # gain[t-1]: E-step t
    # a tolerance between the gains, so that the stop falls at a known iteration t > 2
    allowed = np.arange(2, 9)  # E-steps whose gain may stop the run (model.iteration >= 1)
    t_stop = int(allowed[np.argmin(gain[allowed - 1])])
    earlier = gain[np.arange(2, t_stop) - 1]
    upper = earlier.min() if earlier.size else 2.0 * gain[t_stop - 1]
    assert gain[t_stop - 1] < upper
    tolerance = 0.5 * (gain[t_stop - 1] + upper)

    model, _, history = run_ml2d(images, ML2DSettings(**common, loglik_tolerance=tolerance),
                                 max_iterations=12)
    assert model.iteration == t_stop and model.converged
    assert not any(m.converged for m in history[:-1])
    for a, b in zip(history, seed_only, strict=False):  # same numbers up to the stop
        np.testing.assert_allclose(a.references, b.references, rtol=0, atol=1e-6)
        assert a.loglik == pytest.approx(b.loglik, rel=1e-9)
