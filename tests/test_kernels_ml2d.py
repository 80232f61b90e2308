"""ML2D E-step kernels against slow references (spec §1.6, §1.7, §1.12; kernels/cpu/ml2d.py,
dft.py, fastexp.py).

The fast kernels (fused correlation windows, permuted spectra, compact posteriors, shifted
projections) must reproduce the plain definitions: ``np.roll`` sums in real space, FFTs of
explicitly permuted images, and a log-sum-exp written out in numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from cryosnake.classify2d.hypotheses import FLIP_MATRICES
from cryosnake.kernels import cpu

TRANSPOSE = np.array([[0, 1], [1, 0]])


def _correlation_windows(x, b, blk_x, blk_b, w):
    """``c[t, a, cc] = sum_p B(p) Y(p + s)``, ``s = (cc - w, a - w)``, by explicit rolls."""
    W = 2 * w + 1
    out = np.empty((len(blk_x), W, W))
    for t, (i, j) in enumerate(zip(blk_x, blk_b, strict=True)):
        for a in range(W):
            for cc in range(W):
                y = np.roll(x[i].astype(np.float64), (-(a - w), -(cc - w)), (0, 1))
                out[t, a, cc] = (b[j] * y).sum()
    return out


@pytest.mark.parametrize(
    "n, w",
    [(16, 2), (16, 7), (12, 3), (20, 0), (18, 8), (9, 4), (15, 3), (2, 0), (50, 6)],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_correlations_match_explicit_sums(rng, n, w, dtype):
    # even sizes (radix 4 and 2, Nyquist column packed), other radices (3, 5) and odd sizes
    x = rng.normal(size=(3, n, n)).astype(dtype)
    b = rng.normal(size=(4, n, n)).astype(dtype)
    blk_x = rng.integers(0, 3, 21)  # an odd count: the last group of blocks is partial
    blk_b = rng.integers(0, 4, 21)
    got = cpu.ml2d_block_correlations(
        cpu.ml2d_image_operands(x), cpu.ml2d_reference_operands(b, w), blk_x, blk_b, w
    )
    assert got.dtype == dtype and got.shape == (21, 2 * w + 1, 2 * w + 1)
    want = _correlation_windows(x, b.astype(np.float64), blk_x, blk_b, w)
    tol = 1e-11 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(got, want, atol=tol * np.abs(want).max())


def _two_step_windows(x, b, blk_x, blk_b, w):
    """Spectral products ``conj(B^) Y^`` times the window phase, then the full inverse real FFT
    cut to the leading ``W x W`` corner (numpy, float64)."""
    n = x.shape[-1]
    W = 2 * w + 1
    bc = np.conj(np.fft.rfft2(b.astype(np.float64))) * cpu.ml2d_window_phase(n, w)
    prod = np.fft.rfft2(x.astype(np.float64))[blk_x] * bc[blk_b]
    return np.fft.irfft2(prod, s=(n, n))[:, :W, :W]


def test_block_correlations_agree_with_the_two_step_path(rng):
    # the fused kernel equals products + windowed inverse FFT (a size too large for explicit sums)
    n, w = 64, 16
    x = rng.normal(size=(5, n, n)).astype(np.float32)
    b = rng.normal(size=(7, n, n)).astype(np.float32)
    blk_x = rng.integers(0, 5, 37)
    blk_b = rng.integers(0, 7, 37)
    want = _two_step_windows(x, b, blk_x, blk_b, w)
    out = np.full((37, 2 * w + 1, 2 * w + 1), np.nan, np.float32)
    got = cpu.ml2d_block_correlations(
        cpu.ml2d_image_operands(x), cpu.ml2d_reference_operands(b, w), blk_x, blk_b, w, out=out
    )
    assert got is out
    np.testing.assert_allclose(got, want, atol=2e-6 * np.abs(want).max())
    with pytest.raises(ValueError):
        cpu.ml2d_block_correlations(
            cpu.ml2d_image_operands(x),
            cpu.ml2d_reference_operands(b, w),
            blk_x,
            blk_b,
            w,
            out=np.empty((37, 2 * w + 1, 2 * w + 1)),  # wrong dtype
        )


@pytest.mark.parametrize("n", [8, 9, 16])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_permuted_spectra_and_operands(rng, n, dtype):
    x = rng.normal(size=(3, n, n)).astype(dtype)
    mats = np.concatenate([FLIP_MATRICES, FLIP_MATRICES @ TRANSPOSE])
    flipped = cpu.permute_images(x, mats)  # [3, 16, n, n]
    tol = 1e-12 if dtype == np.float64 else 1e-5
    want = cpu.rfft2(flipped.reshape(-1, n, n)).reshape(3, len(mats), n, n // 2 + 1)
    got = cpu.permute_spectra(cpu.rfft2(x), mats, n)
    np.testing.assert_allclose(got, want, atol=tol * np.abs(want).max())
    want_ops = cpu.ml2d_image_operands(flipped.reshape(-1, n, n))
    got_ops = cpu.ml2d_permuted_operands(cpu.rfft2(x), mats, n)
    assert got_ops.dtype == dtype
    np.testing.assert_allclose(got_ops, want_ops, atol=tol * np.abs(want_ops).max())


def test_permute_images_matches_explicit_pull_back(rng):
    n = 7
    img = rng.normal(size=(2, n, n))
    out = cpu.permute_images(img, FLIP_MATRICES)
    c = n // 2
    for f, m in enumerate(FLIP_MATRICES):
        for i in range(n):
            for j in range(n):
                x, y = j - c, i - c
                xs, ys = m @ (x, y)
                assert out[1, f, i, j] == img[1, (ys + c) % n, (xs + c) % n]


def _posteriors_reference(c, const, scale, img_ptr, lp, lps, r2, sigma2, skip, cutoff):
    d = const[:, None, None] - scale[:, None, None] * c.astype(np.float64)
    lw = lp[:, None, None] + lps[None] - d / sigma2
    out = {"gamma": np.zeros_like(lw), "logmax": lw.max(axis=(1, 2))}
    out["argmax"] = lw.reshape(len(lw), -1).argmax(axis=1)  # first index of the maximum
    for name in ("logsum", "noise", "offset", "pmax", "best_block"):
        out[name] = []
    for b0, b1 in zip(img_ptr[:-1], img_ptr[1:], strict=True):
        if b1 == b0:
            continue
        m = lw[b0:b1].max()
        keep = np.exp(lw[b0:b1].max(axis=(1, 2)) - m) > skip
        wts = np.exp(lw[b0:b1] - m) * keep[:, None, None]
        wts[wts < cutoff] = 0.0
        g = wts / wts.sum()
        out["gamma"][b0:b1] = g
        out["logsum"].append(m + np.log(wts.sum()))
        out["noise"].append((g * 2 * d[b0:b1]).sum())
        out["offset"].append((g * r2[None]).sum())
        out["pmax"].append(1.0 / wts.sum())
        out["best_block"].append(b0 + int(np.argmax(lw[b0:b1].max(axis=(1, 2)))))
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_posteriors_match_log_sum_exp(rng, dtype):
    W = 5
    nb = 9
    c = rng.uniform(-10, 10, size=(nb, W, W)).astype(dtype)
    c[2, 1, 3] = c[2, 3, 0] = c[2].max() + 5.0  # a tie: the argmax is the first flat index
    const = rng.uniform(20, 40, nb)
    const[4] += 200.0  # far below the rest: skipped
    scale = rng.uniform(0.5, 1.5, nb)
    img_ptr = np.array([0, 3, 3, 9])  # the second image has no block
    lp = np.log(rng.uniform(0.1, 1, nb))
    lps = np.log(rng.uniform(0.1, 1, (W, W)))
    lps[1, 3] = lps[3, 0] = 0.0
    r2 = rng.uniform(0, 8, (W, W))
    args = (c, const, scale, img_ptr, lp, lps, r2, 4.0)
    buffer = np.full((nb, W, W), np.nan)
    res = cpu.ml2d_block_posteriors(*args, block_skip=1e-8, entry_cutoff=1e-6, gamma_buffer=buffer)
    assert np.shares_memory(res.gamma, buffer)
    ref = _posteriors_reference(*args, 1e-8, 1e-6)
    assert 4 not in res.kept and res.count[4] == 0 and res.wsum[4] == 0.0
    assert res.argmax[2] == 1 * W + 3
    np.testing.assert_array_equal(res.argmax, ref["argmax"])
    np.testing.assert_allclose(res.logmax, ref["logmax"], rtol=1e-12)
    full = np.zeros((nb, W, W))
    full[res.kept] = res.gamma
    np.testing.assert_allclose(full, ref["gamma"], rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(res.count, (full > 0).sum(axis=(1, 2)))
    np.testing.assert_allclose(res.wsum, full.sum(axis=(1, 2)), rtol=1e-12)
    live = [0, 2]
    for key in ("logsum", "noise", "offset", "pmax"):
        np.testing.assert_allclose(getattr(res, key)[live], ref[key], rtol=1e-12)
    np.testing.assert_array_equal(res.best_block[live], ref["best_block"])
    np.testing.assert_array_equal(res.best_shift[live], res.argmax[res.best_block[live]])
    assert res.logsum[1] == -np.inf and res.best_block[1] == -1 and res.pmax[1] == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_ref", [1, 6, 7])
def test_shifted_projections(rng, dtype, n_ref):
    n = 12
    x = rng.normal(size=(5, n, n)).astype(dtype)
    refs = rng.normal(size=(n_ref, n, n)).astype(dtype)
    index = rng.integers(0, 5, 10)  # 10 images: the last group of 4 is partial
    shifts = rng.integers(-2 * n, 2 * n, (10, 2))
    ops = cpu.ml2d_projection_operands(refs, dtype)
    got = cpu.ml2d_shifted_projections(x, index, shifts, ops)
    want = np.empty((10, n_ref))
    for p in range(10):
        y = np.roll(x[index[p]].astype(np.float64), (shifts[p, 1], shifts[p, 0]), (0, 1))
        want[p] = (refs.astype(np.float64) * y[None]).sum(axis=(1, 2))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, want, atol=tol * np.abs(want).max())
    assert cpu.ml2d_shifted_projections(x, index[:0], shifts[:0], ops).shape == (0, n_ref)


def test_vectorisable_exp_matches_libm():
    from numba import njit

    from cryosnake.kernels.cpu.fastexp import fast_exp

    @njit
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = fast_exp(x[i])

    x = np.concatenate([np.linspace(-760.0, 700.0, 200_001), [-np.inf, 0.0, -745.1, -708.5]])
    got = np.empty_like(x)
    run(x, got)
    want = np.exp(x)
    normal = want > 1e-300
    np.testing.assert_allclose(got[normal], want[normal], rtol=5e-16, atol=0)
    np.testing.assert_allclose(got[~normal], want[~normal], rtol=0, atol=1e-306)
    np.testing.assert_array_equal(got == 0, want == 0)


@pytest.mark.parametrize("n, w", [(16, 2), (12, 5), (9, 4), (15, 0), (50, 6)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_accumulate_windows_matches_explicit_sums(rng, n, w, dtype):
    # adjoint of the correlation: S_key += scale * sum_s gamma(s) Y(. + s), via rows of gamma
    W = 2 * w + 1
    imgs = rng.normal(size=(3, n, n)).astype(dtype)
    nb = 19  # more blocks per key than one group of blocks, and a key with none
    gamma = rng.uniform(0, 1, (nb + 2, W, W))
    rows = rng.permutation(nb + 2)[:nb]
    key = rng.choice([0, 1, 3], nb)
    bx = rng.integers(0, 3, nb)
    sc = rng.uniform(0.5, 2, nb)
    want = np.zeros((4, n, n))
    for b in range(nb):
        for a in range(W):
            for c in range(W):
                y = np.roll(imgs[bx[b]].astype(np.float64), (-(a - w), -(c - w)), (0, 1))
                want[key[b]] += sc[b] * gamma[rows[b], a, c] * y
    acc = cpu.ml2d_window_accumulator(4, n)
    ops = cpu.ml2d_image_operands(imgs)
    cpu.ml2d_accumulate_windows(acc, gamma, ops, key, bx, sc, w, gamma_rows=rows)
    got = cpu.ml2d_window_sums(acc, w)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(got, want, atol=tol * np.abs(want).max())
    # the real-space path gives the same sums
    direct = np.zeros((4, n, n))
    cpu.ml2d_accumulate_direct(direct, imgs.astype(np.float64), gamma[rows], key, bx, sc, w)
    np.testing.assert_allclose(direct, want, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("n_groups, n_rows", [(1, 7), (4, 200), (9, 3), (5, 0)])
def test_add_rows_matches_add_at(rng, n_groups, n_rows):
    """``host.add_rows`` (a bincount per column) sums repeated rows as ``np.add.at`` does;
    groups that no row names keep their values. Both sum in float64, in another association
    (the rows first, then the target): within the bound of recursive summation."""
    from cryosnake.kernels.host import add_rows

    target = rng.normal(size=(n_groups, 6))
    rows = rng.integers(0, max(1, n_groups - 1), size=n_rows)  # the last group gets nothing
    values = rng.normal(size=(n_rows, 6))
    want = target.copy()
    np.add.at(want, rows, values)
    got = target.copy()
    add_rows(got, rows, values)
    bound = (n_rows + 1) * 2.0**-53 * (np.abs(target) + np.abs(values).sum(axis=0))
    assert np.all(np.abs(got - want) <= bound)
    if n_groups > 1:
        np.testing.assert_array_equal(got[-1], target[-1])
