"""MLF2D building blocks: Fourier points and flips, resolution shells, defocus groups, the
Wiener filter, model/sums files, settings and configuration (spec §2.3-§2.6, V-MLF4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ml2d_sim import mirror_ref, rotate_ref

from cryosnake import config as cs_config
from cryosnake.classify2d.hypotheses import FLIP_MATRICES
from cryosnake.ctf import CTFParams
from cryosnake.errors import InputError
from cryosnake.io.classify2d import read_model, read_sums, write_model, write_sums
from cryosnake.mlf2d import (
    MLF2DModel,
    MLF2DSettings,
    MLF2DSums,
    defocus_groups,
    particle_ctf,
    start_model,
    start_statistics,
)
from cryosnake.mlf2d.fourier import (
    PointSet,
    independent_points,
    scatter_points,
    search_disc,
    shell_counts,
    shell_of_resolution,
)
from cryosnake.mlf2d.wiener import wiener_average


def test_independent_points_count_each_coefficient_once():
    n = 16
    kx, ky = independent_points(n)
    full = {(x, y) for x, y in zip(kx, ky, strict=True)} | {
        (-x, -y) for x, y in zip(kx, ky, strict=True)}
    assert len(full) == 2 * len(kx) - 1  # only DC is its own partner
    assert np.rint(np.hypot(kx, ky)).max() == n // 2 - 1  # Nyquist and corners left out
    assert shell_counts(n)[0] == 1 and shell_counts(n).sum() == len(kx)
    # scatter -> irfft2 -> rfft2 returns exactly the coefficients (Hermitian partners filled)
    rng = np.random.default_rng(0)
    vals = rng.normal(size=len(kx)) + 1j * rng.normal(size=len(kx))
    vals[0] = vals[0].real
    img = np.fft.irfft2(scatter_points(vals, kx, ky, n), s=(n, n))
    np.testing.assert_allclose(np.fft.rfft2(img)[np.mod(ky, n), kx], vals, atol=1e-12)


@pytest.mark.parametrize("n", [16, 15])
def test_flip_tables_match_real_space_flips_and_shifts(n):
    """FT(G_f Sh_{-u} X)(k) from the tables equals the FFT of the image flipped and shifted in
    real space (spec §2.7: centre first, then flip), for all 8 flips."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, n))
    pts = PointSet.build(n, 5, 6)
    t = pts.flip_tables(8)
    xp = np.fft.rfft2(X)[np.mod(pts.ky, n), pts.kx]
    c = n // 2
    y, x = np.mgrid[0:n, 0:n] - c
    u = (2, -1)
    for f, m in enumerate(FLIP_MATRICES):
        Y = np.roll(X, (-u[1], -u[0]), axis=(0, 1))
        Y = Y[(m[1, 0] * x + m[1, 1] * y + c) % n, (m[0, 0] * x + m[0, 1] * y + c) % n]
        want = np.fft.rfft2(Y)[np.mod(pts.ky, n), pts.kx]
        got = np.where(t["conj"][f], np.conj(xp[t["src"][f]]), xp[t["src"][f]])
        got = got * t["phase0"][f] * np.exp(2j * np.pi * (t["fx"][f] * u[0] + t["fy"][f] * u[1])
                                            / n)
        np.testing.assert_allclose(got, want, atol=1e-9)


def test_point_sets_search_disc_and_resolution_shells():
    pts = PointSet.build(32, 4, 7)
    assert (pts.shell[: pts.n_prob] >= 1).all() and (pts.shell[: pts.n_prob] <= 4).all()
    assert sorted(set(pts.shell[pts.n_prob:])) == [0, 5, 6, 7]  # Q: DC and 5..7
    assert len(search_disc(3)) == 29 and tuple(search_disc(3)[0]) == (0, 0)  # spec §2.7
    assert len(search_disc(0)) == 1
    # V-MLF4: Ts = 2 Å, N = 64, 20 Å -> l_high = round(128 / 20) = 6; 0 Å = no limit
    assert shell_of_resolution(20.0, 64, 2.0) == 6
    assert shell_of_resolution(0.0, 64, 2.0) == 31
    assert shell_of_resolution(3.0, 64, 2.0) == 31  # beyond Nyquist: clamped


def test_defocus_groups_bins_merge_small_groups_and_are_deterministic():
    rng = np.random.default_rng(3)
    du = np.r_[rng.uniform(10000, 30000, 300), 45000.0]  # one isolated particle at the top
    ctf = CTFParams(du, du - 200, 0.0, 300.0, 2.7, 0.1)
    labels, centres = defocus_groups(ctf, len(du), 1000.0, 20)
    counts = np.bincount(labels)
    assert counts.min() >= 20  # no group of size 1 (trap 5)
    assert len(centres) == len(counts) >= 8
    assert np.all(np.diff(centres) > 0)  # groups ordered by defocus
    mean = du - 100
    for g in range(len(centres)):  # groups are contiguous defocus ranges
        assert mean[labels == g].max() < mean[labels == g + 1].min() if g + 1 < len(
            centres) else True
    again, _ = defocus_groups(ctf.subset(np.arange(len(du))), len(du), 1000.0, 20)
    np.testing.assert_array_equal(labels, again)
    # no CTF correction: one group
    labels, centres = defocus_groups(None, 10, 1000.0, 20)
    assert (labels == 0).all() and len(centres) == 1


def test_particle_ctf_needs_the_ctf_columns():
    import pandas as pd

    table = pd.DataFrame({"rlnDefocusU": [1e4], "rlnVoltage": [300.0]})
    with pytest.raises(InputError, match="rlnSphericalAberration, rlnAmplitudeContrast are "
                                         "missing.*ctf_correction: false"):
        particle_ctf(table, MLF2DSettings())
    assert particle_ctf(table, MLF2DSettings(ctf_correction=False)) is None


def test_wiener_filter_is_shared_and_follows_the_ssnr():
    """A = (F / Den) SSNR / (1 + SSNR) with SSNR_k = 2 <|A_prev|^2> Den_k and the
    class-weighted mean SSNR as the common filter (cryosnake.mlf2d.wiener)."""
    shell = np.array([0, 1, 1, 2, 2, 2])
    den = np.array([[4.0, 2.0, 1.0], [4.0, 2.0, 1.0]])
    prev = np.array([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [2.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    num = np.ones((2, 6)) * 8.0
    avg, ssnr = wiener_average(num, den, prev, np.array([1.0, 3.0]), shell)
    np.testing.assert_allclose(ssnr[:, 0], [2 * 1 * 4, 2 * 4 * 4])
    np.testing.assert_allclose(ssnr[:, 2], 0.0)  # no signal in the previous references
    common = (8 + 3 * 32) / 4
    np.testing.assert_allclose(avg[:, 0], 8.0 / 4.0 * common / (1 + common))
    np.testing.assert_allclose(avg[:, 3:], 0.0)
    np.testing.assert_allclose(avg[0, 1], avg[1, 1])  # one filter for every class


def _small_model(rng, n=16, k=2):
    images = rng.normal(size=(40, n, n))
    images[:, 5:11, 6:10] += 2.0
    du = rng.uniform(12000, 20000, 40)
    ctf = CTFParams(du, du, 0.0, 300.0, 2.7, 0.1)
    settings = MLF2DSettings(n_classes=k, psi_step=30, high_res_limit=12.0, min_group_size=10)
    groups, centres = defocus_groups(ctf, 40, settings.defocus_bin, settings.min_group_size)
    stats = start_statistics(images, ctf, groups, len(centres), 3.0, settings)
    # chunked statistics add up to those of all images at once
    half = (start_statistics(images[:15], ctf.subset(np.arange(15)), groups[:15], len(centres),
                             3.0, settings)
            + start_statistics(images[15:], ctf.subset(np.arange(15, 40)), groups[15:],
                               len(centres), 3.0, settings))
    np.testing.assert_allclose(half.numerator, stats.numerator, atol=1e-9)
    return images, ctf, groups, settings, start_model(stats, settings, 3.0, 16, centres)


def test_start_model_noise_and_files_round_trip(tmp_path):
    images, ctf, groups, settings, model = _small_model(np.random.default_rng(4))
    assert model.iteration == -1 and model.n_classes == 1
    assert model.shell_high == round(16 * 3.0 / 12.0)
    assert model.noise_spectra.shape == (model.n_groups, 8) and (model.noise_spectra > 0).all()
    # white noise of std 1 has sigma^2 = N^2 per coefficient beyond the particle's signal
    np.testing.assert_allclose(model.noise_spectra[:, 6:], 256.0, rtol=0.15)
    # the reference is band-limited to l_high (up to its float32 rounding)
    spec = np.abs(np.fft.fft2(model.references[0]))
    k = np.fft.fftfreq(16) * 16
    beyond = np.rint(np.hypot(k[None], k[:, None])) > model.shell_high
    assert spec[beyond].max() < 1e-6 * spec.max()
    write_model(model, tmp_path / "model.json", tmp_path / "refs.mrcs", 3.0)
    back = read_model(tmp_path / "model.json", MLF2DModel)
    np.testing.assert_array_equal(back.references, model.references)
    np.testing.assert_array_equal(back.noise_spectra, model.noise_spectra)
    assert (back.shell_high, back.sampling) == (model.shell_high, model.sampling)
    d = json.loads((tmp_path / "model.json").read_text())
    for key in ("noise_spectra", "ssnr", "group_defocus", "group_sizes", "shell_frequency",
                "resolution_limit_A", "sigma_noise", "class_fractions"):
        assert key in d
    assert d["fourier"] is True and len(d["shell_frequency"]) == 8


def test_sums_add_save_and_load(tmp_path):
    rng = np.random.default_rng(5)
    a = MLF2DSums.zeros(3, 16, 2)
    b = MLF2DSums(rng.normal(size=(3, 16, 16)), rng.random((3, 8)), np.zeros((3, 0)),
                  rng.random(3),
                  rng.random(3), rng.random((2, 8)), np.array([4.0, 6.0]), 1.5, -3.0, 2.0,
                  np.array([3.0, 0.0, 7.0]), 10)
    total = sum([a, b, b])
    np.testing.assert_allclose(total.ref_sum, 2 * b.ref_sum)
    assert total.n_images == 20 and total.offset_sum == 3.0
    write_sums(tmp_path / "s.npz", total)
    back = read_sums(tmp_path / "s.npz", MLF2DSums)
    np.testing.assert_array_equal(back.noise_sum, total.noise_sum)
    np.testing.assert_array_equal(back.best_count, [6.0, 0.0, 14.0])
    assert back.loglik_sum == -6.0 and isinstance(back.n_images, int)
    with pytest.raises(ValueError, match="shapes"):
        _ = a + MLF2DSums.zeros(2, 16, 2)


def test_settings_and_configuration():
    with pytest.raises(ValueError, match="norm is not available with MLF2D"):
        MLF2DSettings(norm=True)
    with pytest.raises(ValueError, match="high_res_limit"):
        MLF2DSettings(high_res_limit=-1)
    cfg = {"particles": "demo", "demo": {}, "ml2d": {"fourier": True}, "significant": {}}
    cs_config.validate(cfg, "config/schema.yaml")
    cs_config.check(cfg)  # MLF2D is accepted
    cfg["ml2d"]["norm"] = True
    with pytest.raises(InputError, match="ml2d.norm: true is not available with ml2d.fourier"):
        cs_config.check(cfg)


def test_e_step_sums_add_up_over_chunks():
    """Chunked E-steps give the same sums as one E-step (the workflow's chunking)."""
    from cryosnake.mlf2d import estep

    rng = np.random.default_rng(6)
    images, ctf, groups, settings, model = _small_model(rng)
    # double precision: the chunks change how the matrix products are blocked, so only the
    # summation order differs; each D_h sums ~ 10^2 products, so its relative error is
    # ~ 10^2 x 2^-53 ~ 1e-14, and the tolerances below hold on any CPU (in single precision
    # the same reordering moves LL by ~ 10^2 x 2^-24 ~ 1e-5 relative)
    settings = settings.replace(precision="double")
    images = images.copy()
    images[::2] = [mirror_ref(rotate_ref(im, 40.0)) for im in images[::2]]
    labels = np.arange(40) % 2
    whole = estep(images, model, settings, ctf, groups, group_labels=labels)[0]
    parts = [estep(images[a:b], model, settings, ctf.subset(np.arange(a, b)), groups[a:b],
                   group_labels=labels[a:b])[0] for a, b in ((0, 13), (13, 40))]
    total = sum(parts)
    for name in ("ref_sum", "ref_denominator", "class_weight", "noise_sum", "group_count"):
        np.testing.assert_allclose(getattr(total, name), getattr(whole, name), rtol=1e-5,
                                   atol=1e-6 * np.abs(getattr(whole, name)).max())
    assert total.loglik_sum == pytest.approx(whole.loglik_sum, rel=1e-9)


def test_per_class_wiener_filter_is_the_map_average():
    """``class_filter``: each class ``F_k / (Den_k + 1 / tau2_k)`` with ``tau2_k = T <|A_prev|^2>``
    of its own previous reference; the shared filter uses the weighted mean SSNR."""
    rng = np.random.default_rng(2)
    shell = np.array([0, 1, 1, 2, 2, 2])
    num = rng.normal(size=(2, 6)) + 1j * rng.normal(size=(2, 6))
    den = rng.uniform(0.5, 2.0, (2, 3))
    prev = rng.normal(size=(2, 6)) + 1j * rng.normal(size=(2, 6))
    weights = np.array([3.0, 1.0])
    tau2 = np.stack([[2.0 * np.mean(np.abs(prev[k, shell == s]) ** 2) for s in range(3)]
                     for k in range(2)])
    got, ssnr = wiener_average(num, den, prev, weights, shell, per_class=True)
    np.testing.assert_allclose(got, num / (den + 1.0 / tau2)[:, shell], rtol=1e-12)
    np.testing.assert_allclose(ssnr, tau2 * den, rtol=1e-12)
    common = (weights @ (tau2 * den)) / weights.sum()
    shared, _ = wiener_average(num, den, prev, weights, shell)
    np.testing.assert_allclose(shared, num / den[:, shell] * (common / (1 + common))[shell],
                               rtol=1e-12)


def test_adaptive_resolution_limits():
    """``adaptive_resolution`` (:mod:`cryosnake.mlf2d.resolution`): start at
    ``initial_resolution``; then the first shell whose weighted mean SSNR drops below 1 ends
    ``l_prob``, at least ``floor``, at most ``l_high``; ``l_ext = l_prob + extension``."""
    from cryosnake.mlf2d.resolution import data_ssnr, initial_limits, next_limits

    s = MLF2DSettings(high_res_limit=8.0, adaptive_resolution=True, initial_resolution=32.0,
                      extension_shells=3)
    assert initial_limits(s, 64, 2.0) == (16, 4, 7)  # 64*2/8, 64*2/32, +3
    assert initial_limits(s.replace(adaptive_resolution=False), 64, 2.0) == (16, -1, -1)
    ssnr = np.array([[9.0, 5.0, 3.0, 2.0, 0.5, 4.0, 0.0],
                     [9.0, 1.0, 1.0, 0.5, 0.5, 0.0, 0.0]])
    # weights 3:1 -> mean SSNR 9, 4, 2.5, 1.625, 0.5, 3, 0: shells 1-3 >= 1, shell 4 < 1
    assert next_limits(ssnr, np.array([3.0, 1.0]), 16, 1, 3) == (3, 6)
    assert next_limits(ssnr, np.array([3.0, 1.0]), 5, 1, 3) == (3, 5)  # l_ext capped
    assert next_limits(ssnr, np.array([3.0, 1.0]), 16, 4, 3) == (4, 7)  # floor
    assert next_limits(ssnr, np.array([0.0, 1.0]), 16, 1, 2) == (2, 4)  # 1.0 counts
    np.testing.assert_allclose(data_ssnr(np.array([[2.0, 0.1]]), np.array([[1.0, 4.0]])),
                               [[1.0, 0.0]])


def test_ring_ctf2_is_the_mean_over_the_ring_at_each_points_radius():
    """:func:`~cryosnake.mlf2d.groups.ring_ctf2` against a 3600-angle brute-force mean of
    CTF^2 over the full circle through each point (astigmatic CTFs up to 5000 Å apart). The
    32-angle rule is exact for the ring harmonics below 64; the rest are Bessel terms
    ``J_m(2 delta)``, ``delta = pi lambda |DU - DV| / 2 k^2 <= 3.9`` here, below 1e-6."""
    from cryosnake.ctf import ctf_from_frequencies
    from cryosnake.mlf2d.groups import ring_ctf2

    n, sampling = 32, 2.0
    kx, ky = independent_points(n)
    du = np.array([8000.0, 20000.0, 30000.0])
    ctf = CTFParams(du, du - np.array([0.0, 1000.0, 5000.0]), np.array([0.0, 30.0, 110.0]),
                    300.0, 2.7, 0.1)
    got = ring_ctf2(ctf, kx, ky, n, sampling)
    theta = np.linspace(0.0, 2 * np.pi, 3600, endpoint=False)
    r = np.hypot(kx, ky) / (n * sampling)
    c = ctf_from_frequencies(np.cos(theta)[:, None] * r, np.sin(theta)[:, None] * r,
                             ctf.defocus_u, ctf.defocus_v, ctf.defocus_angle, 300.0, 2.7, 0.1)
    np.testing.assert_allclose(got, (c**2).mean(axis=1), atol=1e-6)
    # without astigmatism it is CTF^2 at the point itself
    at_point = ctf_from_frequencies(kx / (n * sampling), ky / (n * sampling), 8000.0, 8000.0,
                                    0.0, 300.0, 2.7, 0.1)
    np.testing.assert_allclose(got[0], at_point**2, atol=1e-12)
    assert ring_ctf2(None, kx, ky, n, sampling).shape == (1, len(kx))


def test_point_denominator_sums_each_particles_ring_ctf2():
    """``point_denominator``: with fixed class labels (every particle's weight 1 in its class)
    the E-step's per-point denominator is ``sum_{i in k} <CTF_i^2>_ring(|p|) / sigma^2_g(l(p))``
    (explicit sum), its shell mean is the shell denominator, and the M-step divides by it."""
    from cryosnake.mlf2d import estep, mstep
    from cryosnake.mlf2d.groups import ring_ctf2

    rng = np.random.default_rng(8)
    images, ctf, groups, settings, model = _small_model(rng)
    settings = settings.replace(precision="double", point_denominator=True)
    labels = np.arange(40) % 2
    sums = estep(images, model, settings, ctf, groups, group_labels=labels)[0]
    pts = PointSet.build(16, model.likelihood_shell, model.extension_shell)
    c2 = ring_ctf2(ctf, pts.kx, pts.ky, 16, 3.0) / model.noise_spectra[groups][:, pts.shell]
    want = np.stack([c2[labels == k].sum(axis=0) for k in range(2)])
    got = sums.point_denominator[:, np.mod(pts.ky, 16), pts.kx]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # outside the points (beyond l_ext) it is zero
    assert sums.point_denominator.shape == (2, 16, 9)
    assert np.count_nonzero(sums.point_denominator) <= 2 * (pts.n_points + 8)
    # chunks add up
    parts = [estep(images[a:b], model, settings, ctf.subset(np.arange(a, b)), groups[a:b],
                   group_labels=labels[a:b])[0] for a, b in ((0, 13), (13, 40))]
    np.testing.assert_allclose(sum(parts).point_denominator, sums.point_denominator,
                               rtol=1e-12)
    # the option changes the M-step's references; without CTF it changes nothing
    off = mstep(model, sums, settings.replace(point_denominator=False))
    on = mstep(model, sums, settings)
    assert np.abs(on.references - off.references).max() > 1e-3 * np.abs(off.references).max()
    flat = settings.replace(ctf_correction=False)
    s0 = estep(images, model, flat, None, groups, group_labels=labels)[0]
    np.testing.assert_allclose(mstep(model, s0, flat).references,
                               mstep(model, s0, flat.replace(point_denominator=False)).references,
                               rtol=1e-9, atol=1e-9 * np.abs(s0.ref_sum).max())


def test_mstep_job_runs_without_kernels_or_star_libraries(tmp_path):
    """An M-step job (issue 16) gives the M-step's model without importing numba, scipy's
    FFTs, pandas or starfile: its Python start-up is most of its time, 30 times in a run."""
    import subprocess
    import sys

    import yaml

    from cryosnake.classify2d.strategy import classifier
    from cryosnake.mlf2d import estep

    images, ctf, groups, settings, model = _small_model(np.random.default_rng(8))
    sums = estep(images, model, settings, ctf, groups, group_labels=np.arange(40) % 2)[0]
    write_model(model, tmp_path / "model.json", tmp_path / "refs.mrcs", 3.0)
    write_sums(tmp_path / "sums.npz", sums)
    with open("config/config.yaml") as f:
        cfg = yaml.safe_load(f)["ml2d"] | {"fourier": True, "classes": 2}
    strategy = classifier(True)
    expected = strategy.mstep(model, sums, strategy.settings(cfg))
    code = (
        "import sys\n"
        "from cryosnake.pipeline.runtime import set_threads\n"
        "set_threads(1, whole_process=True)\n"
        "from cryosnake.pipeline.data import read_summary\n"
        "from cryosnake.pipeline.ml2d import mstep_job\n"
        f"d = {str(tmp_path)!r}\n"
        f"mstep_job(d + '/model.json', [d + '/sums.npz'], {cfg!r}, 3.0, d + '/new.json',\n"
        "          d + '/new.mrcs')\n"
        "print(sorted(m for m in ('numba', 'scipy.fft', 'pandas', 'starfile') "
        "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    new = read_model(tmp_path / "new.json", MLF2DModel)
    np.testing.assert_array_equal(new.references, expected.references.astype(np.float32))
    np.testing.assert_array_equal(new.noise_spectra, expected.noise_spectra)
    assert new.iteration == expected.iteration == 0


def test_estep_job_reads_the_particle_index_without_star_libraries(tmp_path):
    """An E-step job (issue 16) reads its particles from the run's particle index, not the
    STAR: the same sums as the E-step in process on the same images and CTF, without importing
    pandas or starfile (a quarter of a second of every job's start, 30 times in a run)."""
    import subprocess
    import sys

    import pandas as pd
    import starfile
    import yaml

    from cryosnake.classify2d.strategy import classifier
    from cryosnake.io import mrc
    from cryosnake.io.classify2d import write_defocus_groups
    from cryosnake.io.particles import ParticleStack, write_particle_index
    from cryosnake.kernels import get_backend
    from cryosnake.mlf2d import estep
    from cryosnake.mlf2d.groups import DefocusGroups
    from cryosnake.mlf2d.strategy import CTFGroups
    from cryosnake.pipeline.ml2d import estep_with_progress

    images, ctf, groups, settings, model = _small_model(np.random.default_rng(10))
    images = images.astype(np.float32)
    with open("config/config.yaml") as f:
        cfg = yaml.safe_load(f)["ml2d"] | {"fourier": True, "classes": 2, "psi_step": 30,
                                           "high_res_limit": 12.0, "phase_flipped": "auto"}
    strategy = classifier(True)
    settings = strategy.settings(cfg | {"phase_flipped": False})
    sums = estep(images, model, settings, ctf, groups, group_labels=np.arange(40) % 2)[0]
    model = strategy.mstep(model, sums, settings)  # two classes
    write_model(model, tmp_path / "model.json", tmp_path / "refs.mrcs", 3.0)
    _, centres = defocus_groups(ctf, 40, settings.defocus_bin, settings.min_group_size)
    write_defocus_groups(tmp_path / "groups.npz", DefocusGroups(groups, centres))
    # two stacks, the particles alternating between them
    mrc.write_stack(tmp_path / "a.mrcs", images[0::2], 3.0)
    mrc.write_stack(tmp_path / "b.mrcs", images[1::2], 3.0)
    names = [f"{i // 2 + 1:06d}@{'ab'[i % 2]}.mrcs" for i in range(40)]
    starfile.write({"optics": pd.DataFrame({
        "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"], "rlnImagePixelSize": [3.0],
        "rlnImageSize": [16], "rlnImageDimensionality": [2], "rlnVoltage": [300.0],
        "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]}),
        "particles": pd.DataFrame({
            "rlnImageName": names, "rlnOpticsGroup": 1, "rlnDefocusU": ctf.defocus_u,
            "rlnDefocusV": ctf.defocus_v, "rlnDefocusAngle": 0.0})},
        tmp_path / "particles.star")
    with ParticleStack(tmp_path / "particles.star") as ps:
        np.testing.assert_array_equal(ps.read(np.arange(40)), images)
        star_ctf = strategy.particle_ctf(ps.table, settings)  # as the STAR's text rounds it
        write_particle_index(tmp_path / "index.npz", ps, star_ctf, settings.phase_flipped)
    # what the job does with the index's particles, here with the STAR's
    model = read_model(tmp_path / "model.json", MLF2DModel)
    expected = estep_with_progress(strategy, images, model, settings, None,
                                   CTFGroups(star_ctf, groups), None, get_backend("cpu"), "E")[0]

    code = (
        "import sys\n"
        "from cryosnake.pipeline.runtime import set_threads\n"
        "set_threads(1, whole_process=True)\n"
        "from cryosnake.pipeline.ml2d import estep_job\n"
        f"d = {str(tmp_path)!r}\n"
        f"estep_job(d + '/index.npz', 0, 40, 1, {cfg!r}, 'cpu', d + '/model.json', None,\n"
        "          d + '/sums.npz', d + '/state.npz', d + '/assignments.npz', d + '/groups.npz')\n"
        "print(sorted(m for m in ('pandas', 'starfile') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    got = read_sums(tmp_path / "sums.npz", MLF2DSums)
    # The same operations on the same numbers, but the posteriors come from single-precision
    # distances D (precision: single; |D| up to ~1e3 here), whose vectorised sums may add in
    # another order from one process to another: a rounding of ~1e3 x 6e-8 moves a weight by
    # up to ~1e-4 of itself (seen on one machine: 3e-7 of the largest sum). One particle or
    # CTF read wrongly moves the sums by ~1/40 of their size, 250 times the bound.
    np.testing.assert_allclose(got.ref_sum, expected.ref_sum, rtol=0,
                               atol=1e-4 * np.abs(expected.ref_sum).max())
    np.testing.assert_allclose(got.noise_sum, expected.noise_sum, rtol=1e-4)
    assert got.loglik_sum == pytest.approx(expected.loglik_sum, rel=1e-5)


def test_a_prepared_context_gives_the_same_e_step():
    """Sub-batches of a job share one prepared reference bank (issue 16): the same sums,
    bit for bit, as preparing it in every call; a context of the other kind is refused."""
    from cryosnake.mlf2d import estep, mstep
    from cryosnake.mlf2d.estep import prepare

    images, ctf, groups, settings, model = _small_model(np.random.default_rng(9))
    sums, _, state = estep(images, model, settings, ctf, groups, group_labels=np.arange(40) % 2)
    model = mstep(model, sums, settings)  # two classes; state: zero offsets
    for st in (None, state):
        shared = prepare(model, settings, st is None)
        for a, b in ((0, 17), (17, 40)):
            sub = None if st is None else st.subset(slice(a, b))
            args = (images[a:b], model, settings, ctf.subset(np.arange(a, b)), groups[a:b], sub)
            own, reused = estep(*args)[0], estep(*args, context=shared)[0]
            for name in ("ref_sum", "ref_denominator", "noise_sum", "class_weight"):
                np.testing.assert_array_equal(getattr(reused, name), getattr(own, name))
            assert reused.loglik_sum == own.loglik_sum
        with pytest.raises(ValueError, match="context"):
            estep(images[:5], model, settings, ctf.subset(np.arange(5)), groups[:5],
                  state.subset(slice(0, 5)) if st is None else None, context=shared)
