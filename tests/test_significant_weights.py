"""Alpha schedule, CDFs, Fisher, neighbourhood and final weights (spec §3.3, §3.6-3.7)."""

from __future__ import annotations

import numpy as np
import pytest

from cryosnake.significant import SignificantSettings
from cryosnake.significant.weights import (
    alpha_percent,
    check_alpha_symmetry,
    direction_weights,
    image_weights,
    rank_cdf,
    significance_level,
    significant_weights,
)


def test_alpha_schedule_is_linear_and_reaches_alphaF():
    a = [alpha_percent(80, 99.5, it, 50) for it in range(1, 51)]
    assert a[0] == 80 and a[-1] == pytest.approx(99.5)
    assert np.allclose(np.diff(a), (99.5 - 80) / 49)
    assert alpha_percent(80, 99.5, 1, 1) == 99.5
    assert significance_level(80, 99.5, 1, 50) == pytest.approx(0.2)
    assert significance_level(80, 99.5, 50, 50) == pytest.approx(0.005)
    # scaled by the rotation-group order (asymmetric-unit gallery)
    assert significance_level(80, 99.5, 50, 50, "c4") == pytest.approx(0.02)
    with pytest.raises(ValueError):
        alpha_percent(80, 99.5, 51, 50)


def test_alpha_versus_symmetry_error_names_the_fix():
    check_alpha_symmetry(80, "c4")
    check_alpha_symmetry(75, "c4")
    with pytest.raises(ValueError, match=r"alpha0 = 70.*'c4'.*alpha0 >= 75"):
        check_alpha_symmetry(70, "c4")
    with pytest.raises(ValueError, match=r"alpha0 >= 98.33"):
        check_alpha_symmetry(80, "i1")
    with pytest.raises(ValueError, match="alpha0"):
        SignificantSettings(symmetry="d4", alpha0=80)
    assert SignificantSettings(symmetry="d4", alpha0=90).alpha0 == 90


def test_settings_defaults_and_config():
    st = SignificantSettings()
    assert (st.symmetry, st.angular_sampling, st.tilt_min, st.tilt_max, st.max_shift) == \
        ("c1", 5.0, 0.0, 180.0, -1.0)
    assert (st.alpha0, st.alphaF, st.iterations, st.imed, st.strict_direction) == \
        (80.0, 99.5, 50, True, False)
    assert (st.angular_neighborhood, st.fisher, st.target_resolution) == (10.0, True, 0.0)
    st2 = SignificantSettings.from_config({"symmetry": "c2", "fisher": False, "other": 1})
    assert st2.symmetry == "c2" and st2.fisher is False
    with pytest.raises(ValueError, match="unknown"):
        SignificantSettings.from_config({"simmetry": "c2"}, strict=True)
    with pytest.raises(ValueError, match="valid Xmipp names"):
        SignificantSettings(symmetry="q3")


def test_rank_cdf_ascending_with_ties():
    v = np.array([[0.1, 0.5, 0.5, 0.9]])
    assert np.allclose(rank_cdf(v), [[0.25, 0.75, 0.75, 1.0]])
    assert np.allclose(rank_cdf(v.T, axis=0), rank_cdf(v).T)


def test_counts_follow_alpha(rng):
    """V-RS5: ~alpha N_dir significant directions; alpha = 1/N_dir keeps exactly the best."""
    cc = rng.uniform(0.2, 0.9, (30, 500))
    for alpha in (0.2, 0.05):
        _, sig = image_weights(cc, None, alpha, fisher=False)
        assert np.all(sig.sum(axis=1) == int(round(alpha * 500)))
    _, sig = image_weights(cc, None, 1.0 / 500, fisher=False)
    assert np.all(sig.sum(axis=1) == 1)
    assert np.all(sig[np.arange(30), cc.argmax(axis=1)])
    # more significant directions at alpha0 than at alphaF
    w0 = significant_weights(cc, None, 0.2, fisher=False)
    wf = significant_weights(cc, None, 0.005, fisher=False)
    assert (w0 > 0).sum() > 10 * (wf > 0).sum() > 0


def test_fisher_preselection():
    cc = np.array([[0.95, 0.94, 0.90, 0.50, 0.2] + [0.1] * 5])
    _, sig_off = image_weights(cc, None, 0.5, fisher=False)
    _, sig_on = image_weights(cc, None, 0.5, fisher=True, n_pix=64 * 64)
    # cc_low = tanh(atanh(0.95 * 0.5) - 2.96 / 64) ~ 0.44: keeps 0.95, 0.94, 0.90, 0.50
    assert sig_off[0, :5].all()
    assert sig_on[0, :4].all() and not sig_on[0, 4]
    with pytest.raises(ValueError, match="n_pix"):
        image_weights(cc, None, 0.5, fisher=True)


def test_image_weight_formula_with_imed():
    cc = np.array([[0.9, 0.8, 0.3, 0.2]])
    imed = np.array([[1.0, 2.0, 3.0, 4.0]])
    w1, sig = image_weights(cc, imed, 0.5, fisher=False)
    F_cc = np.array([1.0, 0.75])
    F_im = np.array([0.25, 0.5])
    expect = F_cc * cc[0, :2] / 0.9 * (1 - F_im) * (1.0 / imed[0, :2])
    assert np.allclose(w1[0, :2], expect)
    assert np.all(w1[0, 2:] == 0)


def test_direction_weights_neighbourhood_and_strict():
    # 3 images x 3 directions; direction 1 has neighbour 2 with higher correlations
    cc = np.array([[0.5, 0.6, 0.9],
                   [0.4, 0.5, 0.8],
                   [0.3, 0.7, 0.2]])
    w1 = np.ones_like(cc)
    alone = direction_weights(cc, w1, 0.5)
    # no neighbourhood: F_dir = rank in the column, cc*_d = column max
    assert alone[2, 1] == pytest.approx(1.0 * 0.7 / 0.7 * 1.0)
    assert alone[1, 1] == pytest.approx(0.5 / 0.7 * 1 / 3)
    nb = (np.array([0, 1, 3, 5]), np.array([0, 1, 2, 1, 2]))
    pooled = direction_weights(cc, w1, 0.5, neighbours=nb)
    # pool of direction 1 = cc[:, 1] and cc[:, 2]: cc* = 0.9, rank of 0.7 = 4 of 6
    assert pooled[2, 1] == pytest.approx(0.7 / 0.9 * 4 / 6)
    assert pooled[2, 1] < alone[2, 1]
    strict = direction_weights(cc, w1, 0.3, strict=True)
    assert (strict > 0).sum() == 3  # only the best image of each direction survives
    # negative correlations never give rows
    assert np.all(direction_weights(-cc, w1, 0.5) == 0)
