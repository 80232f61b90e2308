"""MLF2D E-step and M-step against an explicit brute-force sum over every hypothesis, on tiny
images with per-particle astigmatic CTFs and two defocus groups (spec §2.4-§2.9).

The brute force is independent of the implementation's Fourier bookkeeping: images and
references are flipped, shifted and rotated in real space (scipy), compared on the **full**
FFT plane (every coefficient counted twice, so sums are halved), with the CTF applied in the
raw frame of the particle.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from ml2d_sim import mirror_ref, rotate_ref

from cryosnake.classify2d.hypotheses import FLIP_MATRICES, INVERSE_FLIP
from cryosnake.classify2d.state import ParticleState
from cryosnake.ctf import CTFParams, ctf_images
from cryosnake.mlf2d import MLF2DModel, MLF2DSettings, estep, mstep

N = 16
TS = 3.0  # Å/px
PSI = np.array([1.75, 31.75, 61.75])  # psi_step 30 (spec §1.3)
L_HIGH = 5  # likelihood on shells 1..5, references and noise on 0..5


def _flip(img, f):
    """(G_f Y)(r) = Y(F_f (r - c) + c), about c = N // 2, wrap (spec §1.3)."""
    c = N // 2
    y, x = np.mgrid[0:N, 0:N] - c
    m = FLIP_MATRICES[f]
    xs = (m[0, 0] * x + m[0, 1] * y + c) % N
    ys = (m[1, 0] * x + m[1, 1] * y + c) % N
    return img[ys, xs]


def _shells():
    k = np.fft.fftfreq(N) * N
    return np.rint(np.hypot(k[None, :], k[:, None])).astype(int)  # full plane, [ky, kx]


def _half_sum(full, shell, upto):
    """Sum over the independent half plane per shell from a full-plane array (DC once)."""
    out = np.zeros(upto + 1)
    for s in range(upto + 1):
        out[s] = full[shell == s].sum() / 2
    out[0] += full[0, 0] / 2
    return out


def _brute(images, model, settings, ctf, groups, offsets):
    K = model.n_classes
    F = settings.n_flips
    shell = _shells()
    s2 = model.noise_spectra[:, np.minimum(shell, N // 2 - 1)]  # [G, N, N]
    in_p = (shell >= 1) & (shell <= L_HIGH)
    in_ext = shell <= L_HIGH
    # reference bank: rotate by -psi (scipy cubic spline, wrap), equalise energy on P u Q
    B = np.array([[rotate_ref(a, -p) for p in PSI] for a in model.references])
    Bhat = np.fft.fft2(B)
    e = np.array([[(np.abs(b[in_ext]) ** 2).sum() + abs(b[0, 0]) ** 2 for b in row]
                  for row in Bhat])
    B *= np.sqrt(e[:, :1] / e)[:, :, None, None]
    ctf_full = ctf_images(ctf, N, TS, half=False)  # [n, N, N], raw frame
    xi = model.sigma_offset
    cg = np.arange(N) - N // 2
    lognorm = np.log(np.exp(-(cg[:, None] ** 2 + cg[None] ** 2) / (2 * xi**2)).sum())
    disc = [(vx, vy) for vy in (-1, 0, 1) for vx in (-1, 0, 1)]  # search_shift 1.5
    out = {"gamma": [], "LL": [], "pmax": [], "best": [], "noise": np.zeros((2, N // 2)),
           "S": np.zeros((K, len(PSI), N, N), complex), "den": np.zeros((K, N // 2)),
           "n_k": np.zeros(K), "n_mir": np.zeros(K), "off": 0.0}
    for i, X in enumerate(images):
        g = groups[i]
        Xhat = np.fft.fft2(X)
        hyp = []
        for k in range(K):
            for f in range(F):
                mu = f // 4
                mp = 1.0 if F == 4 else (model.mirror_fractions[k] if mu else
                                         1 - model.mirror_fractions[k])
                for v in disc:
                    u = (offsets[i, k, mu, 0] + v[0], offsets[i, k, mu, 1] + v[1])
                    for j in range(len(PSI)):
                        # model image in the raw frame: Sh_u[G_f^-1[B_kj]], times the CTF
                        M = np.roll(_flip(B[k, j], INVERSE_FLIP[f]), (u[1], u[0]), axis=(0, 1))
                        r = Xhat - ctf_full[i] * np.fft.fft2(M)
                        res2 = np.abs(r) ** 2 / s2[g]
                        D = res2[in_p].sum() / 2
                        lw = (math.log(model.class_fractions[k]) + math.log(mp)
                              - (u[0] ** 2 + u[1] ** 2) / (2 * xi**2) - lognorm - D)
                        hyp.append((k, f, u, j, lw, np.abs(r) ** 2))
        lw = np.array([h[4] for h in hyp])
        blk = np.array([(h[0] * 8 + h[1]) * 10 + h[3] for h in hyp])
        if settings.fast:  # stage 1 at the stored offsets, significance per (k, mu) (§2.8)
            at0 = np.array([h[2] == tuple(offsets[i, h[0], h[1] // 4]) for h in hyp])
            fam = np.array([h[0] * 2 + h[1] // 4 for h in hyp])
            best = {f: lw[at0 & (fam == f)].max() for f in np.unique(fam)}
            sig = {b for b in blk[at0] if lw[at0 & (blk == b)][0]
                   >= best[fam[blk == b][0]] + math.log(settings.fast_C)}
            lw = np.where([b in sig for b in blk], lw, -np.inf)
        m = lw.max()
        w = np.exp(lw - m)
        for key in np.unique(blk):
            if w[blk == key].max() <= settings.block_skip:
                w[blk == key] = 0.0
        w[w < settings.entry_cutoff] = 0.0
        gam = w / w.sum()
        out["gamma"].append({(h[0], h[1], h[2], h[3]): gam[t] for t, h in enumerate(hyp)})
        out["LL"].append(m + math.log(w.sum()) - np.log(np.pi * s2[g][in_p]).sum() / 2)
        out["pmax"].append(gam.max())
        out["best"].append(hyp[int(np.argmax(lw))][:4])
        CX = np.real(np.fft.ifft2(ctf_full[i] * Xhat))  # the CTF applied in the raw frame
        c2 = np.array([(ctf_full[i][shell == s] ** 2).mean() for s in range(N // 2)])
        for t, h in enumerate(hyp):
            k, f, u, j = h[:4]
            out["noise"][g, : L_HIGH + 1] += gam[t] * _half_sum(h[5], shell, L_HIGH)
            Z = _flip(np.roll(CX, (-u[1], -u[0]), axis=(0, 1)), f)  # G_f Sh_{-u}, CTF-weighted
            out["S"][k, j] += gam[t] * np.where(in_ext, np.fft.fft2(Z) / s2[g], 0.0)
            out["den"][k, : L_HIGH + 1] += gam[t] * c2[: L_HIGH + 1] / model.noise_spectra[
                g, : L_HIGH + 1]
            out["n_mir" if f >= 4 else "n_k"][k] += gam[t]
            out["off"] += gam[t] * (u[0] ** 2 + u[1] ** 2)
    out["M"] = np.array([sum(rotate_ref(np.real(np.fft.ifft2(out["S"][k, j])), p)
                             for j, p in enumerate(PSI)) for k in range(K)])
    return out


@pytest.mark.parametrize("mirror,fast", [(False, False), (True, False), (True, True)])
def test_estep_and_mstep_match_brute_force(mirror, fast):
    """Without ``fast`` every block gets the whole search disc; with it (and a state) only
    the blocks significant at the stored offsets (stage 1) do."""
    rng = np.random.default_rng(11 + mirror)
    K = 2
    refs = rng.normal(size=(K, N, N)) * 0.3
    refs[:, 5:11, 6:10] += 1.5
    refs[1, 3:6, 9:13] += 1.0
    refs = refs.astype(np.float32).astype(np.float64)
    ctf = CTFParams(np.array([9000.0, 14000.0, 11000.0]), np.array([8000.0, 13500.0, 9500.0]),
                    np.array([20.0, 75.0, 140.0]), 300.0, 2.7, 0.1)
    clean = np.empty((3, N, N))
    for i in range(3):
        img = rotate_ref(refs[i % K], 35.0 * i + 10)
        if mirror and i == 2:
            img = mirror_ref(img)
        clean[i] = np.roll(img, (1, -1), axis=(0, 1))
    clean = np.real(np.fft.ifft2(np.fft.fft2(clean) * ctf_images(ctf, N, TS, half=False)))
    images = clean + rng.normal(0, 1.0, clean.shape)
    groups = np.array([0, 1, 0])
    noise = np.array([np.linspace(300, 150, N // 2), np.linspace(250, 200, N // 2)])
    model = MLF2DModel(references=refs, class_fractions=[0.6, 0.4],
                       mirror_fractions=[0.3, 0.55] if mirror else [0, 0], sigma_noise=1.0,
                       sigma_offset=1.3, sampling=TS, noise_spectra=noise,
                       group_defocus=[9000, 14000], group_sizes=[2, 1], shell_high=L_HIGH,
                       iteration=3)
    settings = MLF2DSettings(psi_step=30, mirror=mirror, fast=fast, search_shift=1.5,
                             precision="double", phase_flipped=False, reseed_fraction=0.0,
                             fast_C=1e-3 if fast else 1e-12)  # C large enough to prune here
    state = ParticleState(np.zeros((3, K, 2, 2), np.int32), np.ones(3), np.zeros(3))
    state.offsets[0, 1, 0] = (1, 0)  # stored offsets: the search is around them (§2.7)
    state.offsets[2, 0, 1] = (-1, 1)
    dbg = {}
    sums, assign, new_state = estep(images, model, settings, ctf, groups, state, debug=dbg)
    ref = _brute(images, model, settings, ctf, groups, state.offsets)

    # posteriors of every hypothesis (image, class, flip, physical offset, angle)
    from cryosnake.mlf2d.fourier import search_disc

    disc = search_disc(1.5)
    assert len(disc) == 9
    gam = np.concatenate(dbg["gamma"])
    cols = [np.concatenate(dbg[c]) for c in ("image", "k", "f", "uv")]
    if not fast:
        assert len(cols[0]) == 3 * K * settings.n_flips  # full search: every (i, k, f)
    assert np.min(ref["pmax"]) < 0.9  # spread posteriors: the test is not one-hot
    checked = set()
    for t, (i, k, f, uv) in enumerate(zip(*cols, strict=True)):
        assert {tuple(x - uv[0]) for x in uv} == {tuple(v) for v in disc}  # the search disc
        for v in range(len(disc)):
            for j in range(len(PSI)):
                key = (k, f, tuple(uv[v]), j)
                assert gam[t, v, j] == pytest.approx(ref["gamma"][i][key], abs=1e-10)
                checked.add((i, *key))
    # hypotheses not evaluated have zero weight in the brute force too
    for i, g in enumerate(ref["gamma"]):
        assert all(w == 0 for key, w in g.items() if (i, *key) not in checked)
    if fast:
        assert len(checked) < sum(len(g) for g in ref["gamma"])  # stage 1 pruned blocks
    np.testing.assert_allclose(assign["loglik"], ref["LL"], rtol=1e-11)
    np.testing.assert_allclose(assign["max_posterior"], ref["pmax"], rtol=1e-9)
    for i, (k, f, u, j) in enumerate(ref["best"]):  # pose of the best hypothesis (§1.14)
        assert assign["class_number"][i] == k + 1 and assign["mirror"][i] == int(f >= 4)
        assert (assign["origin_x_px"][i], assign["origin_y_px"][i]) == (-u[0], -u[1])
        assert (assign["psi_deg"][i] + 90 * (f % 4) + PSI[j]) % 360 == pytest.approx(0, abs=1e-9)
    # sufficient statistics
    np.testing.assert_allclose(sums.class_weight, ref["n_k"], atol=1e-12)
    np.testing.assert_allclose(sums.mirror_weight, ref["n_mir"], atol=1e-12)
    assert sums.offset_sum == pytest.approx(ref["off"], rel=1e-10)
    np.testing.assert_allclose(sums.noise_sum, ref["noise"], rtol=1e-9)
    np.testing.assert_allclose(sums.ref_denominator, ref["den"], rtol=1e-10, atol=1e-16)
    np.testing.assert_allclose(sums.ref_sum, ref["M"], atol=1e-9 * np.abs(ref["M"]).max())
    # new stored offsets: the physical offset of the best hypothesis of each (k, mu)
    for i in range(3):
        for k in range(K):
            for mu in range(settings.n_flips // 4):
                best = max((g, key) for key, g in ref["gamma"][i].items()
                           if key[0] == k and key[1] // 4 == mu)[1]
                assert tuple(new_state.offsets[i, k, mu]) == best[2]

    # M-step: CTF-corrected averages under one Wiener filter (§2.9; cryosnake.mlf2d.wiener):
    # SSNR_k = T <|A_prev,k|^2>_l Den_k(l), T = 2; filter from the class-weighted mean SSNR
    new = mstep(model, sums, settings)
    shell = _shells()
    Fk = np.fft.fft2(ref["M"])
    prev = np.abs(np.fft.fft2(refs)) ** 2
    w = ref["n_k"] + ref["n_mir"]
    ssnr = np.array([[2 * prev[k][shell == s].mean() * ref["den"][k, s]
                      for s in range(L_HIGH + 1)] for k in range(K)])
    np.testing.assert_allclose(new.ssnr[:, : L_HIGH + 1], ssnr, rtol=1e-8)
    common = w @ ssnr / w.sum()
    filt = np.where(shell <= L_HIGH, (common / (1 + common))[np.minimum(shell, L_HIGH)], 0.0)
    want_refs = []
    for k in range(K):
        den = ref["den"][k][np.minimum(shell, N // 2 - 1)]
        with np.errstate(divide="ignore", invalid="ignore"):  # den = 0 beyond Nyquist
            avg = np.where(shell <= L_HIGH, Fk[k] / den, 0)
        want_refs.append(np.real(np.fft.ifft2(avg * filt)))
    np.testing.assert_allclose(new.references, want_refs, atol=1e-6 * np.abs(want_refs).max())
    counts = np.array([(shell == s).sum() / 2 + (s == 0) / 2 for s in range(N // 2)])
    want_noise = noise.copy()
    want_noise[:, : L_HIGH + 1] = ref["noise"][:, : L_HIGH + 1] / (
        np.bincount(groups)[:, None] * counts[None, : L_HIGH + 1])
    np.testing.assert_allclose(new.noise_spectra, want_noise, rtol=1e-9)
    np.testing.assert_allclose(new.class_fractions, w / w.sum(), rtol=1e-12)
    assert new.sigma_offset == pytest.approx(math.sqrt(ref["off"] / 6), rel=1e-10)
    assert new.loglik == pytest.approx(sum(ref["LL"]), rel=1e-12)
