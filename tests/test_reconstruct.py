"""Projector and weighted direct Fourier reconstruction (spec §0.5, §3.5, §3.8, V-RS1-3)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import rotate as nd_rotate
from significant_phantom import gaussian_phantom, simulated_averages

from cryosnake.geometry import (
    direction_from_angles,
    euler_to_matrix,
    matrix_to_euler,
)
from cryosnake.significant.sampling import gallery_directions
from cryosnake.volume3d.fsc import fsc
from cryosnake.volume3d.projector import prepare_volume, project, project_polar
from cryosnake.volume3d.reconstruct import reconstruct, shell_sums, volume_from_shell_sums

N = 32


@pytest.fixture(scope="module")
def phantom():
    return gaussian_phantom(N, seed=3)


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_euler_matrix_round_trip(rng):
    ang = rng.uniform([0, 0, 0], [360, 180, 360], (50, 3))
    E = euler_to_matrix(*ang.T)
    assert np.allclose(np.einsum("nij,nkj->nik", E, E), np.eye(3), atol=1e-12)
    r, t, p = matrix_to_euler(E)
    assert np.allclose(euler_to_matrix(r, t, p), E, atol=1e-9)
    # projection direction = third row of E
    assert np.allclose(E[:, 2], direction_from_angles(ang[:, 0], ang[:, 1]))
    r0, t0, p0 = matrix_to_euler(euler_to_matrix(30.0, 0.0, 20.0))
    assert np.allclose(euler_to_matrix(r0, t0, p0), euler_to_matrix(30.0, 0.0, 20.0))


def test_projection_conventions(phantom):
    # (0, 0, 0) is the sum over z of vol[z, y, x]
    p = project(phantom, 0.0, 0.0, 0.0)[0]
    ref = phantom.sum(axis=0)
    assert _corr(p, ref) > 0.999
    assert np.abs(p - ref).max() < 0.05 * ref.max()
    assert p.sum() == pytest.approx(ref.sum(), rel=1e-4)
    # positive psi turns the image like scipy.ndimage.rotate(img, +psi) about N // 2
    p30 = project(phantom, 0.0, 0.0, 30.0)[0]
    assert _corr(p30, nd_rotate(ref, 30, reshape=False, order=3)) > 0.99
    assert _corr(p30, nd_rotate(ref, -30, reshape=False, order=3)) < 0.95
    # tilt 90: looking along +x, image x = -z, image y = y
    p90 = project(phantom, 0.0, 90.0, 0.0)[0]
    side = phantom.sum(axis=2)  # [z, y]
    c = N // 2
    expect = side.T[:, 2 * c - np.arange(1, N)]  # image column j <- z = c - (j - c)
    assert _corr(p90[:, 1:], expect) > 0.999


def _analytic_projection(E, blobs, n):
    yy, xx = np.mgrid[:n, :n] - n // 2
    img = np.zeros((n, n))
    for c, cov in blobs:
        C = E @ cov @ E.T
        m = E @ c
        C2 = C[:2, :2]
        amp = np.sqrt(2 * np.pi * np.linalg.det(C) / np.linalg.det(C2))
        d = np.stack([xx - m[0], yy - m[1]], -1)
        img += amp * np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, np.linalg.inv(C2), d))
    return img


def test_projector_matches_analytic_gaussians(rng):
    g = np.arange(N) - N // 2
    Z, Y, X = np.meshgrid(g, g, g, indexing="ij")
    pos = np.stack([X, Y, Z], -1).astype(float)
    vol = np.zeros((N, N, N))
    blobs = []
    for _ in range(6):
        c = rng.uniform(-6, 6, 3)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        cov = q @ np.diag(rng.uniform(1.2, 2.5, 3) ** 2) @ q.T
        d = pos - c
        vol += np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, np.linalg.inv(cov), d))
        blobs.append((c, cov))
    vft = prepare_volume(vol)
    for ang in ([30.0, 50.0, 70.0], [200.0, 130.0, 10.0], [0.0, 90.0, 45.0]):
        p = project(vft, *ang)[0]
        a = _analytic_projection(euler_to_matrix(*ang), blobs, N)
        assert _corr(p, a) > 0.9995
        assert np.abs(p - a).max() < 0.02 * a.max()
    # polar sampling agrees with the Cartesian transform of the projection at psi = 0
    pol = project_polar(vft, [40.0], [60.0], np.array([3.0]), 8)[0, 0]
    img = project(vft, 40.0, 60.0, 0.0)[0].astype(np.float64)
    c = N // 2
    yy, xx = np.mgrid[:N, :N] - c
    phi = 2 * np.pi * np.arange(8) / 8
    dft = [np.sum(img * np.exp(-2j * np.pi * 3 * (np.cos(f) * xx + np.sin(f) * yy) / N))
           for f in phi]
    assert np.allclose(pol, dft, rtol=0.02, atol=0.02 * np.abs(dft).max())


def test_reconstruction_from_known_angles(phantom):
    imgs, rot, tilt, psi, ox, oy = simulated_averages(phantom, 800, 0, seed=5, max_origin=2.0)
    rec = reconstruct(imgs, rot, tilt, psi, ox, oy)
    _, f = fsc(rec, phantom)
    assert f[: int(0.8 * N // 2) + 1].min() >= 0.9  # >= 0.9 up to 0.8 Nyquist
    assert f[int(0.8 * N // 2)] > 0.95
    r = np.sqrt(((np.mgrid[:N, :N, :N] - N // 2) ** 2).sum(0))
    inside = r < N // 2
    assert rec[inside].mean() == pytest.approx(phantom[inside].mean(), rel=0.02)
    # the projections of the result reproduce the images (absolute scale)
    back = project(rec, rot[:5], tilt[:5], psi[:5])
    clean = project(phantom, rot[:5], tilt[:5], psi[:5])
    assert np.abs(back - clean).max() < 0.03 * np.abs(clean).max()


def test_shell_sums_undo_per_shell_filters(phantom):
    """Slices filtered twice by a per-slice, per-shell factor ``c`` (``num = c^2 P``, the
    ``sum c X`` of CTF-affected images ``X = c P``) with ``den = c^2`` give back the volume:
    the CTF correction of :func:`volume_from_shell_sums`; sums add over halves."""
    imgs, rot, tilt, psi, *_ = simulated_averages(phantom, 800, 0, seed=7)
    rng = np.random.default_rng(8)
    period = rng.uniform(12.0, 30.0, (len(imgs), 1))  # shells; smooth per slice, like |CTF|
    phase = rng.uniform(0.0, 2 * np.pi, (len(imgs), 1))
    c = 0.25 + 0.75 * 0.5 * (1 + np.cos(2 * np.pi * np.arange(N // 2) / period + phase))
    ky = np.fft.fftfreq(N, 1.0 / N)
    shell = np.rint(np.hypot(ky[:, None], np.arange(N // 2 + 1)[None])).astype(int)
    c_grid = np.concatenate([c, c[:, -1:]], axis=1)[:, np.minimum(shell, N // 2)]
    num = np.fft.irfft2(np.fft.rfft2(imgs) * c_grid**2, s=(N, N))
    halves = [shell_sums(num[h::2], c[h::2] ** 2, rot[h::2], tilt[h::2], psi[h::2])
              for h in (0, 1)]
    corrected = volume_from_shell_sums(halves[0][0] + halves[1][0],
                                       halves[0][1] + halves[1][1], N, regularisation=0.0)
    plain = reconstruct(imgs, rot, tilt, psi)
    _, f = fsc(corrected, phantom)
    assert f[: int(0.6 * N // 2) + 1].min() >= 0.98
    # the per-shell weighting is undone: the amplitude of every shell is the unfiltered one
    ratio = _shell_amplitudes(corrected) / _shell_amplitudes(plain)
    assert np.all(np.abs(ratio[1:10] - 1.0) < 0.03), ratio
    assert _corr(corrected, plain) > 0.9995
    # unweighted (den = 1) the filter stays: shells lose about the mean of c^2
    wrong = volume_from_shell_sums(*shell_sums(num, np.ones_like(c), rot, tilt, psi), N, 0.0)
    assert np.all(_shell_amplitudes(wrong)[1:10] / _shell_amplitudes(plain)[1:10] < 0.8)


def _shell_amplitudes(vol):
    """Root-mean-square Fourier amplitude per shell ``round(|k|)`` of a cubic volume."""
    n = vol.shape[0]
    k = np.fft.fftfreq(n, 1.0 / n)
    r = np.rint(np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2
                        + np.arange(n // 2 + 1)[None, None] ** 2)).astype(int).ravel()
    power = np.abs(np.fft.rfftn(vol)).ravel() ** 2
    return np.sqrt(np.bincount(r, power) / np.maximum(np.bincount(r), 1))[: n // 2]


def test_weights_are_scale_free(phantom):
    imgs, rot, tilt, psi, *_ = simulated_averages(phantom, 200, 0, seed=6)
    a = reconstruct(imgs, rot, tilt, psi)
    b = reconstruct(imgs, rot, tilt, psi, weights=np.full(len(rot), 0.3))
    idx = np.concatenate([np.arange(200), np.arange(200)])
    c = reconstruct(imgs, np.tile(rot, 2), np.tile(tilt, 2), np.tile(psi, 2),
                    weights=np.full(400, 0.5), image_index=idx)
    assert np.allclose(a, b, atol=1e-4 * np.abs(a).max())
    assert np.allclose(a, c, atol=1e-4 * np.abs(a).max())
    # zero weights drop rows
    w = np.ones(200)
    w[100:] = 0
    d = reconstruct(imgs, rot, tilt, psi, weights=w)
    e = reconstruct(imgs[:100], rot[:100], tilt[:100], psi[:100])
    assert np.allclose(d, e, atol=1e-4 * np.abs(d).max())


def test_single_projection_is_the_central_section(phantom):
    img = project(phantom, 0.0, 0.0, 0.0)
    rec = reconstruct(img, [0.0], [0.0], [0.0])
    # the only information is the plane kz = 0: the projection of the result at (0, 0, 0)
    # (sum over z of vol[z, y, x]) is the image
    assert _corr(rec.sum(axis=0), img[0]) > 0.999
    assert _corr(project(rec, 0.0, 0.0, 0.0)[0], img[0]) > 0.999
    # V^ = P^(kx, ky) g(kz) with g even: every z-slice is the image, symmetric about N // 2
    c = N // 2
    for dz in (0, 3, N // 4):
        assert _corr(rec[c + dz], img[0]) > 0.999
        assert np.allclose(rec[c + dz], rec[c - dz], atol=1e-3 * np.abs(rec).max())
    # the same image declared at tilt 90 is a section of the plane kx = 0 instead
    rec90 = reconstruct(img, [0.0], [90.0], [0.0])
    assert _corr(project(rec90, 0.0, 90.0, 0.0)[0], img[0]) > 0.999
    # image (y, x_img) <- volume (z = 2c - x_img, y) on the slice x = c
    assert _corr(rec90[:, :, c].T[:, 2 * c - np.arange(1, N)], img[0][:, 1:]) > 0.999


def test_symmetry_expansion_asymmetric_unit(phantom):
    ph4 = gaussian_phantom(N, seed=7, n_blobs=4, fold=4)
    rot_d, tilt_d = gallery_directions("c4", 10.0)
    rng = np.random.default_rng(2)
    k = rng.integers(0, len(rot_d), 300)
    rot = rot_d[k] + rng.uniform(-3, 3, 300)
    tilt = np.clip(tilt_d[k] + rng.uniform(-3, 3, 300), 0, 180)
    psi = rng.uniform(0, 360, 300)
    imgs = project(ph4, rot, tilt, psi)
    rec4 = reconstruct(imgs, rot, tilt, psi, symmetry="c4")
    _, f = fsc(rec4, ph4)
    assert f[: int(0.8 * N // 2) + 1].min() >= 0.9
    # V-RS3: equals the full-sphere c1 reconstruction
    imgs_full, r1, t1, p1, *_ = simulated_averages(ph4, 1200, 0, seed=8)
    rec1 = reconstruct(imgs_full, r1, t1, p1)
    _, f13 = fsc(rec4, rec1)
    assert f13[: int(0.8 * N // 2) + 1].min() > 0.99
