"""E-step posteriors, LL_i, per-image updates and M-step sums against an explicit brute-force
sum over every hypothesis, in real space, float64 (spec §1.5-§1.9, §1.13; V-ML4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ml2d_sim import mirror_ref, rotate_ref

from cryosnake.classify2d.state import ParticleState
from cryosnake.ml2d import ML2DModel, ML2DSettings, estep, mstep

N = 16
PSI = np.array([1.75, 31.75, 61.75])  # psi_step 30 (spec §1.3)
W = 2  # translations -2..2


def _bank(refs):
    """§1.5 with scipy: rotate by -psi_j, fill r > N/2 with the mean over r >= N/2, equalise."""
    c = N // 2
    y, x = np.mgrid[0:N, 0:N] - c
    r2 = x**2 + y**2
    out = np.empty((len(refs), len(PSI), N, N))
    for k, a in enumerate(refs):
        fill = a[r2 >= (N / 2) ** 2].mean()
        for j, p in enumerate(PSI):
            b = rotate_ref(a, -p)
            b[r2 > (N / 2) ** 2] = fill
            out[k, j] = b
        e = (out[k] ** 2).sum(axis=(1, 2))
        out[k] *= np.sqrt(e[0] / e)[:, None, None]
    return out


def _flip(img, f):
    """G_f X: rotate by 90 q (exact, about N//2, wrap), after a mirror for f >= 4."""
    if f >= 4:
        img = mirror_ref(img)
    return _rot90(img, f % 4)


def _rot90(img, q):
    c = N // 2
    out = img
    for _ in range(q):  # Rot_90[I](x, y) = I(-y, x)
        i, j = np.mgrid[0:N, 0:N]
        x, y = j - c, i - c
        out = out[(x + c) % N, (-y + c) % N]
    return out


def _brute(images, model, settings, scale, bg):
    refs = model.references
    B = _bank(refs)
    K = len(refs)
    F = 8 if settings.mirror else 4
    sig2 = model.sigma_noise**2
    xi = model.sigma_offset
    cgrid = np.arange(N) - N // 2
    lognorm = np.log(np.exp(-(cgrid[:, None] ** 2 + cgrid[None] ** 2) / (2 * xi**2)).sum())
    D = N * N
    out = {"gamma": [], "LL": [], "pmax": [], "best": [], "s_new": [], "b_new": []}
    S = np.zeros((K, len(PSI), N, N))
    n_k = np.zeros(K)
    n_mir = np.zeros(K)
    den = np.zeros(K)
    bgsum = np.zeros(K)
    e_noise = e_off = 0.0
    for i, X in enumerate(images.astype(np.float64)):
        s_i, b_i = scale[i], bg[i]
        hyp = []
        for k in range(K):
            for j in range(len(PSI)):
                for f in range(F):
                    GX = _flip(X, f)
                    mp = (
                        1.0
                        if F == 4
                        else (
                            model.mirror_fractions[k] if f >= 4 else 1 - model.mirror_fractions[k]
                        )
                    )
                    for sy in range(-W, W + 1):
                        for sx in range(-W, W + 1):
                            Y = np.roll(GX, (-sy, -sx), axis=(0, 1))  # Y(p) = GX(p + s)
                            d = 0.5 * ((Y - b_i - s_i * B[k, j]) ** 2).sum()
                            lw = (
                                math.log(model.class_fractions[k])
                                + math.log(mp)
                                - (sx * sx + sy * sy) / (2 * xi**2)
                                - lognorm
                                - d / sig2
                            )
                            hyp.append((k, j, f, sx, sy, d, lw, Y))
        lw = np.array([h[6] for h in hyp])
        m = lw.max()
        w = np.exp(lw - m)
        # skip rule (global max variant): blocks (k, j, f) whose max weight <= 1e-8
        blk = np.array([(h[0] * 10 + h[1]) * 10 + h[2] for h in hyp])
        for key in np.unique(blk):
            if w[blk == key].max() <= settings.block_skip:
                w[blk == key] = 0.0
        w[w < settings.entry_cutoff] = 0.0
        Wt = w.sum()
        g = w / Wt
        out["gamma"].append({(h[0], h[1], h[2], h[3], h[4]): g[t] for t, h in enumerate(hyp)})
        out["LL"].append(m + math.log(Wt) - D * math.log(math.sqrt(2 * math.pi * sig2)))
        out["pmax"].append(g.max())
        out["best"].append(hyp[int(np.argmax(lw))][:5])
        if settings.norm:  # joint ML (s, b) given gamma
            EA2 = sum(g[t] * (B[h[0], h[1]] ** 2).sum() for t, h in enumerate(hyp))
            EB = sum(g[t] * B[h[0], h[1]].sum() for t, h in enumerate(hyp))
            Ec = sum(g[t] * (h[7] * B[h[0], h[1]]).sum() for t, h in enumerate(hyp))
            sol = np.linalg.solve([[EA2, EB], [EB, D]], [Ec, X.sum()])
            s_new, b_new = sol
        else:
            s_new, b_new = 1.0, 0.0
        out["s_new"].append(s_new)
        out["b_new"].append(b_new)
        for t, h in enumerate(hyp):
            k, j, f = h[:3]
            S[k, j] += g[t] * s_new * h[7]
            if f >= 4:
                n_mir[k] += g[t]
            else:
                n_k[k] += g[t]
            den[k] += g[t] * (s_new**2 if settings.norm else 1.0)
            bgsum[k] += g[t] * s_new * b_new
            e_noise += g[t] * 2 * h[5]
            e_off += g[t] * (h[3] ** 2 + h[4] ** 2)
    # M_k = sum_j MaskFill(Rot_{+psi_j}[S_kj]) - background term
    c = N // 2
    y, x = np.mgrid[0:N, 0:N] - c
    r2 = x**2 + y**2
    M = np.zeros((K, N, N))
    for k in range(K):
        for j, p in enumerate(PSI):
            fill = S[k, j][r2 >= (N / 2) ** 2].mean()
            r = rotate_ref(S[k, j], p)
            r[r2 > (N / 2) ** 2] = fill
            M[k] += r
        if settings.norm:
            M[k] -= bgsum[k]
    out.update(S=M, n_k=n_k, n_mir=n_mir, den=den, e_noise=e_noise, e_off=e_off)
    return out


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("norm", [False, True])
def test_estep_matches_brute_force(mirror, norm):
    rng = np.random.default_rng(7 + 2 * mirror + norm)
    K = 2
    refs = rng.normal(size=(K, N, N)) * 0.5
    refs[:, 4:12, 5:10] += 2.0
    refs = refs.astype(np.float32).astype(np.float64)
    images = np.empty((3, N, N))
    for i in range(3):
        img = rotate_ref(refs[i % K], 40.0 * i + 10) if i else refs[0].copy()
        if mirror and i == 2:
            img = mirror_ref(img)
        images[i] = np.roll(img, (1, -1), axis=(0, 1)) + rng.normal(0, 1.5, (N, N))
    settings = ML2DSettings(
        psi_step=30,
        mirror=mirror,
        norm=norm,
        fast=False,
        max_shift_px=W,
        precision="double",
        reseed_fraction=0.0,  # the M-step of the spec, not the re-seeding option
        offset_std=1.2,
    )
    model = ML2DModel(
        references=refs,
        class_fractions=[0.6, 0.4],
        mirror_fractions=[0.3, 0.55] if mirror else [0, 0],
        sigma_noise=3.0,
        sigma_offset=1.2,
        norm_scale_mean=1.25 if norm else 1.0,
    )
    state = ParticleState.initial(3, K, settings)
    if norm:
        state.norm_scale[:] = [1.25, 1.0, 1.5]  # effective s = stored / model.norm_scale_mean
        state.background[:] = [0.1, -0.2, 0.3]
    scale = state.norm_scale / model.norm_scale_mean if norm else np.ones(3)
    bg = state.background if norm else np.zeros(3)
    dbg = {}
    sums, assign, new_state = estep(images, model, settings, state, debug=dbg)
    ref = _brute(images, model, settings, scale, bg)

    # posteriors of every hypothesis
    gam = np.concatenate(dbg["gamma"])
    cols = [np.concatenate(dbg[c]) for c in ("image", "k", "j", "f")]
    assert len(cols[0]) == 3 * K * len(PSI) * settings.n_flips  # full search: every block
    assert np.min(ref["pmax"]) < 0.9  # spread posteriors: the test is not one-hot
    for b, (i, k, j, f) in enumerate(zip(*cols, strict=True)):
        for a in range(2 * W + 1):
            for c in range(2 * W + 1):
                want = ref["gamma"][i][(k, j, f, c - W, a - W)]
                assert gam[b, a, c] == pytest.approx(want, abs=1e-10)
    np.testing.assert_allclose(assign["loglik"], ref["LL"], rtol=1e-12)
    np.testing.assert_allclose(assign["max_posterior"], ref["pmax"], rtol=1e-9)
    np.testing.assert_allclose(assign["norm_scale"], ref["s_new"], rtol=1e-9)
    np.testing.assert_allclose(assign["background"], ref["b_new"], atol=1e-9)
    np.testing.assert_allclose(sums.ref_sum, ref["S"], atol=1e-9)
    np.testing.assert_allclose(sums.class_weight, ref["n_k"], atol=1e-12)
    np.testing.assert_allclose(sums.mirror_weight, ref["n_mir"], atol=1e-12)
    np.testing.assert_allclose(sums.ref_denominator, ref["den"], rtol=1e-12)
    assert sums.noise_sum == pytest.approx(ref["e_noise"], rel=1e-12)
    assert sums.offset_sum == pytest.approx(ref["e_off"], rel=1e-10, abs=1e-12)
    # best pose: psi = -(90 q + psi_j), origin = -F_f s
    for i, (k, j, f, sx, sy) in enumerate(ref["best"]):
        assert assign["class_number"][i] == k + 1
        assert assign["mirror"][i] == int(f >= 4)
        tx, ty = [(sx, sy), (-sy, sx), (-sx, -sy), (sy, -sx)][f % 4]  # t = F_q s, F_q = R(-90q)
        if f >= 4:
            tx = -tx  # F_{4+q} = diag(-1, 1) F_q
        assert (assign["origin_x_px"][i], assign["origin_y_px"][i]) == (-tx, -ty)
        theta = 90 * (f % 4) + PSI[j]
        assert (assign["psi_deg"][i] + theta) % 360 == pytest.approx(0, abs=1e-9)

    # M-step from these sums
    new = mstep(model, sums, settings)
    w = ref["n_k"] + ref["n_mir"]
    want = ref["S"] / ref["den"][:, None, None]
    if norm:
        want *= np.mean(ref["s_new"])
    np.testing.assert_allclose(new.references, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new.class_fractions, w / w.sum(), rtol=1e-12)
    assert new.sigma_noise == pytest.approx(math.sqrt(ref["e_noise"] / (3 * N * N)), rel=1e-12)
    assert new.sigma_offset == pytest.approx(math.sqrt(ref["e_off"] / 6), rel=1e-10)
    assert new.loglik == pytest.approx(sum(ref["LL"]), rel=1e-12)
