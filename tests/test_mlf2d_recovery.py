"""MLF2D on simulated CTF data (demo generator, defocus 1-3 µm): recovery of the planted
views, sharper averages than ML2D, phase-flipped input, the high-resolution limit, the
limited translation search (V-MLF5/6) and the noise model without CTF (V-MLF1)."""

from __future__ import annotations

import numpy as np
import pytest
from ml2d_sim import rotate_ref, shift_ref
from test_ml2d_recovery import _best_labels, _gauge_errors

from cryosnake import demo
from cryosnake.ctf import CTFParams, apply_ctf
from cryosnake.kernels import cpu
from cryosnake.ml2d import ML2DSettings
from cryosnake.ml2d.run import run_ml2d
from cryosnake.mlf2d import MLF2DSettings
from cryosnake.mlf2d.run import run_mlf2d

SAMPLING = 4.0
BOX = 48
LIMIT = 12.0  # Å: the demo phantom's detail (Gaussians of 1-2 px) lies beyond 20 Å


def simulate_ctf(**demo_settings):
    """Demo particles with CTF (``demo.DemoSettings`` keys; defocus 1-3 µm unless given):
    ``(images, truth table, clean views, CTF parameters)``."""
    s = demo.DemoSettings(**{"ctf": True, "defocus_min": 10000.0, "defocus_max": 30000.0,
                             **demo_settings})
    images, truth, _, views = demo.simulate(s)
    ctf = CTFParams(truth["rlnDefocusU"].to_numpy(), truth["rlnDefocusV"].to_numpy(),
                    truth["rlnDefocusAngle"].to_numpy(), s.voltage, s.spherical_aberration,
                    s.amplitude_contrast)
    return images, truth, views, ctf


@pytest.fixture(scope="module")
def ctf_data():
    images, truth, views, ctf = simulate_ctf(n_particles=300, box=BOX, sampling=SAMPLING,
                                             views=3, snr=0.05, shift_std=1.5, seed=1)
    t = {"theta": -truth["rlnAnglePsi"].to_numpy(),  # demo truth -> hypothesis terms
         "mirror": truth["cryosnakeMirror"].to_numpy(),
         "tx": -truth["rlnOriginXAngst"].to_numpy() / SAMPLING,
         "ty": -truth["rlnOriginYAngst"].to_numpy() / SAMPLING,
         "view": truth["cryosnakeView"].to_numpy() - 1}
    return images, ctf, t, views


@pytest.fixture(scope="module")
def mlf2d_run(ctf_data):
    images, ctf, _, _ = ctf_data
    settings = MLF2DSettings(n_classes=3, phase_flipped=False, seed=1, high_res_limit=LIMIT)
    return run_mlf2d(images.astype(np.float64), ctf, SAMPLING, settings, max_iterations=15)


def _lowpass(img, resolution_A):
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(BOX), np.fft.fftfreq(BOX))) / SAMPLING
    return np.real(np.fft.ifft2(np.fft.fft2(img) * (k <= 1.0 / resolution_A)))


def _aligned_correlation(a, b):
    """Best correlation of ``a`` with ``b`` over in-plane rotations (3°), mirror and cyclic
    shifts (the class average's gauge)."""
    best = -1.0
    y = b - b.mean()
    for mirrored in (a, a[:, (2 * (BOX // 2) - np.arange(BOX)) % BOX]):
        for r in cpu.rotate_images(np.repeat(mirrored[None], 120, 0), np.arange(0, 360, 3.0)):
            x = r - r.mean()
            cc = np.real(np.fft.ifft2(np.conj(np.fft.fft2(x)) * np.fft.fft2(y)))
            best = max(best, cc.max() / np.linalg.norm(x) / np.linalg.norm(y))
    return best


def test_recovers_views_sharper_than_ml2d(ctf_data, mlf2d_run):
    images, _, truth, views = ctf_data
    model, a, _ = mlf2d_run
    est = a["class_number"] - 1
    mapped, purity = _best_labels(truth["view"], est, 3)
    assert purity >= 0.9 and len(np.unique(mapped)) == 3
    ml2d_model, ml2d_a, _ = run_ml2d(images, ML2DSettings(n_classes=3, seed=1),
                                     max_iterations=5)
    for k in range(3):  # the CTF-corrected averages match the clean views (written by the
        # demo) better than ML2D's best class does, in the band MLF2D uses
        view = views[np.bincount(truth["view"][est == k]).argmax()]
        ours = _aligned_correlation(_lowpass(model.references[k], LIMIT), _lowpass(view, LIMIT))
        theirs = max(_aligned_correlation(_lowpass(r, LIMIT), _lowpass(view, LIMIT))
                     for r in ml2d_model.references)
        assert ours >= 0.9 and ours > theirs + 0.05, (k, ours, theirs)
    # poses in the output convention (gauge of each class fitted as for ML2D)
    for k in range(3):
        members = np.flatnonzero(est == k)
        mirror_ok, ang, shift = _gauge_errors(truth, a, members)
        assert mirror_ok >= 0.9
        assert np.mean(ang < 10.0) >= 0.85
        assert np.mean(shift <= 1.5) >= 0.85
    # final noise spectra per defocus group and SSNR per class are in the model
    assert model.noise_spectra.shape == (model.n_groups, BOX // 2) and model.n_groups > 3
    assert (model.ssnr[:, 1:4] > 1).all()


def test_phase_flipped_input_gives_the_same_classes(ctf_data, mlf2d_run):
    """|CTF| on phase-flipped images is the same model as the CTF on the raw images."""
    images, ctf, _, _ = ctf_data
    flipped = apply_ctf(images, ctf, SAMPLING, phase_flip=True)
    settings = MLF2DSettings(n_classes=3, phase_flipped=True, seed=1, high_res_limit=LIMIT)
    model, a, _ = run_mlf2d(flipped, ctf, SAMPLING, settings, max_iterations=15)
    raw_model, raw_a, _ = mlf2d_run
    assert np.mean(a["class_number"] == raw_a["class_number"]) >= 0.99
    assert np.mean(a["psi_deg"] == raw_a["psi_deg"]) >= 0.98
    np.testing.assert_allclose(model.references, raw_model.references,
                               atol=1e-3 * np.abs(raw_model.references).max())


def _band_correlation_at_best_pose(a, b, low, high):
    """Correlation of ``a`` with ``b`` in the band ``low``-``high`` Å, at the pose (rotation
    3°, mirror, cyclic shift) that best aligns their ``high``-Å low-passed versions."""
    best, band_cc = -1.0, 0.0
    lp = _lowpass(b, high)
    y, yb = lp - lp.mean(), lp - _lowpass(b, low)
    for mirrored in (a, a[:, (2 * (BOX // 2) - np.arange(BOX)) % BOX]):
        for r in cpu.rotate_images(np.repeat(mirrored[None], 120, 0), np.arange(0, 360, 3.0)):
            x = _lowpass(r, high)
            xb, x = x - _lowpass(r, low), x - x.mean()
            cc = np.real(np.fft.ifft2(np.conj(np.fft.fft2(x)) * np.fft.fft2(y)))
            if cc.max() / np.linalg.norm(x) / np.linalg.norm(y) > best:
                best = cc.max() / np.linalg.norm(x) / np.linalg.norm(y)
                ccb = np.real(np.fft.ifft2(np.conj(np.fft.fft2(xb)) * np.fft.fft2(yb)))
                band_cc = ccb.flat[cc.argmax()] / np.linalg.norm(xb) / np.linalg.norm(yb)
    return band_cc


def test_forcing_phase_flipped_on_raw_images_loses_fidelity():
    """The demo's images are not phase-flipped (as RELION's). ``phase_flipped: auto`` reads
    that from the input (tests/test_io_import.py) and gives the settings of explicit
    ``false``; forcing ``true`` models |CTF| where the CTF changes sign, so beyond the first
    CTF zero (defocus 2-4 µm: 20-28 Å) its class averages lose the clean views."""
    import pandas as pd

    from cryosnake.pipeline.ml2d import settings_from_config

    cfg = {"classes": 3, "psi_step": 5.0, "mirror": True, "fast": True, "norm": False,
           "noise_std": 1.0, "offset_std": 3.0, "seed": 1, "particle_diameter": 0.0,
           "reseed_fraction": 0.25, "reseed_iterations": 10, "loglik_tolerance": 0.01,
           "fourier": True,
           "ctf_correction": True, "high_res_limit": 10.0}
    table = pd.DataFrame({"rlnCtfDataArePhaseFlipped": [0] * 3})  # what the demo writes
    auto = settings_from_config({**cfg, "phase_flipped": "auto"}, table)
    assert auto == settings_from_config({**cfg, "phase_flipped": False}, table)

    images, _, views, ctf = simulate_ctf(n_particles=300, box=BOX, sampling=SAMPLING, views=3,
                                         snr=1.0, shift_std=1.5, defocus_min=20000.0,
                                         defocus_max=40000.0, seed=1)
    fidelity = {}
    for flipped in (False, True):
        model = run_mlf2d(images.astype(np.float64), ctf, SAMPLING,
                          auto.replace(phase_flipped=flipped), max_iterations=10)[0]
        fidelity[flipped] = np.median([max(_band_correlation_at_best_pose(r, v, 25.0, 10.0)
                                           for r in model.references) for v in views])
    print(f"median 25-10 Å correlation to the clean views: false (= auto) "
          f"{fidelity[False]:.3f}, forced true {fidelity[True]:.3f}")
    assert fidelity[False] >= 0.5 and fidelity[True] < fidelity[False] - 0.3, fidelity


def test_high_res_limit_leaves_the_frequencies_beyond_out(ctf_data):
    """Changing the images beyond 20 Å changes nothing: not the posteriors, not the
    references, not the noise inside the limit; the references have no power beyond it."""
    images, ctf, _, _ = ctf_data
    images, ctf = images[:120].astype(np.float64), ctf.subset(np.arange(120))
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(BOX), np.fft.fftfreq(BOX))) * BOX
    high = np.rint(k) > round(BOX * SAMPLING / 20.0)
    rng = np.random.default_rng(5)
    noise = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(0, 3, images.shape)) * high))
    settings = MLF2DSettings(n_classes=2, phase_flipped=False, precision="double",
                             high_res_limit=20.0)
    m1, a1, _ = run_mlf2d(images, ctf, SAMPLING, settings, max_iterations=2)
    m2, a2, _ = run_mlf2d(images + noise, ctf, SAMPLING, settings, max_iterations=2)
    assert m1.shell_high == 10
    for key in ("class_number", "psi_deg", "origin_x_px", "mirror"):
        np.testing.assert_array_equal(a1[key], a2[key])
    np.testing.assert_allclose(a1["max_posterior"], a2["max_posterior"], rtol=1e-8)
    np.testing.assert_allclose(m1.references, m2.references, atol=1e-6)
    np.testing.assert_allclose(m1.noise_spectra[:, :11], m2.noise_spectra[:, :11], rtol=1e-8)
    spec = np.abs(np.fft.fft2(m1.references)) ** 2
    assert spec[:, high].max() < 1e-10 * spec.max()
    # without the limit the perturbation does change the likelihood
    free = settings.replace(high_res_limit=0.0)
    b1 = run_mlf2d(images, ctf, SAMPLING, free, max_iterations=1)[1]
    b2 = run_mlf2d(images + noise, ctf, SAMPLING, free, max_iterations=1)[1]
    assert not np.allclose(b1["loglik"], b2["loglik"], rtol=1e-6)


def test_translations_follow_the_particles_in_every_quadrant():
    """V-MLF5/V-MLF6: particles at (3, -2) px, beyond the search radius (3 px) around the start
    offset 0, are followed to their true offset in the next iteration -- a translation better
    than every stage-1 hypothesis keeps its weight (Xmipp zeroes it, Decisions) -- with the same
    emitted origin in all four quadrants of the in-plane angle (one physical offset per class
    and mirror family, centre first, then flip)."""
    rng = np.random.default_rng(8)
    view = demo.simulate(demo.DemoSettings(n_particles=1, box=32, views=1, seed=3))[3][0]
    angles = np.repeat([30.0, 120.0, 210.0, 300.0], 8) + rng.uniform(-3, 3, 32)
    clean = np.array([shift_ref(rotate_ref(view, -t), 3.0, -2.0) for t in angles])
    images = clean + rng.normal(0, 0.3 * clean.std(), clean.shape)
    settings = MLF2DSettings(n_classes=1, mirror=False, ctf_correction=False, high_res_limit=0,
                             search_shift=3.0, fast=True)
    history = []
    run_mlf2d(images, None, SAMPLING, settings, references=view[None], max_iterations=3,
              callback=lambda m, a: history.append(a))
    origins = [np.stack([a["origin_x_px"], a["origin_y_px"]], 1) for a in history]
    assert not (origins[0] == (-3, 2)).all(axis=1).any()  # |(3, -2)| > 3: out of reach at first
    for o in origins[1:]:
        assert (o == (-3, 2)).all()  # every particle, every quadrant
    err = np.abs((history[-1]["psi_deg"] + angles + 180) % 360 - 180)  # output psi = -theta
    assert (err < 5.0).all()


def test_noise_spectrum_of_white_noise_without_ctf():
    """V-MLF1: pure white noise, no CTF: the estimated spectrum is flat at N^2 sigma^2."""
    rng = np.random.default_rng(9)
    images = rng.normal(0, 2.0, (200, 32, 32))
    settings = MLF2DSettings(n_classes=2, ctf_correction=False, high_res_limit=0, psi_step=15)
    model = run_mlf2d(images, None, SAMPLING, settings, max_iterations=2)[0]
    assert model.n_groups == 1
    np.testing.assert_allclose(model.noise_spectra[0, 1:], 32**2 * 4.0, rtol=0.1)
    assert model.sigma_noise == pytest.approx(2.0, rel=0.05)


def test_default_fast_search_agrees_with_the_complete_search(ctf_data, mlf2d_run):
    """V-ML5 for MLF2D's own fast constant (``fast_C`` = 1e-5, issue 16): at SNR 0.05 with a
    CTF, from the same model and stored offsets, the default two-stage search gives > 98 % of
    the particles the class of the complete search (spec V-ML5's criterion) and references
    that agree with it (NCC > 0.999), while it prunes far more than ``1e-12`` does."""
    from cryosnake.mlf2d.estep import estep
    from cryosnake.mlf2d.groups import defocus_groups
    from cryosnake.mlf2d.mstep import mstep

    images, ctf, _, _ = ctf_data
    images = images.astype(np.float64)
    model = mlf2d_run[0]
    settings = MLF2DSettings(n_classes=3, phase_flipped=False, seed=1, high_res_limit=LIMIT)
    assert settings.fast_C == 1e-5
    groups, _ = defocus_groups(ctf, len(images), settings.defocus_bin, settings.min_group_size)
    _, _, state = estep(images, model, settings, ctf, groups)  # fresh offsets: complete
    runs = {}
    for name, s in (("default", settings), ("1e-12", settings.replace(fast_C=1e-12)),
                    ("full", settings.replace(fast=False))):
        sums, assignments, _ = estep(images, model, s, ctf, groups, state)
        runs[name] = (mstep(model, sums, s).references, assignments)
    full_refs, full = runs["full"]
    refs, fast = runs["default"]
    same = np.mean(fast["class_number"] == full["class_number"])
    assert same > 0.98, same
    for a, b in zip(refs, full_refs, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999
    kept = fast["search_kept"].mean()
    assert kept < 0.5 * runs["1e-12"][1]["search_kept"].mean(), kept
