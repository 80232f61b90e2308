"""CUDA twins of the MLF2D, volume, alignment and matrix-product kernels against the CPU ones
(issue #8 B).

Runs on a GPU where there is one, else under numba's CUDA simulator (tests/conftest.py), which
executes every CUDA thread in Python: sizes are tiny (8^3 volumes, 8-16 px images).

Tolerances: the kernels compute in float64 as their CPU twins do, so most results agree to
rounding; ``fourier_insert`` accumulates float32 per-thread partials on the CPU (float64
atomics on the GPU), hence its float32-level bound whatever the input precision.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil

import numpy as np
import pytest
import scipy.fft
from ml2d_sim import mirror_ref, rotate_ref
from scipy.spatial.transform import Rotation
from significant_phantom import gaussian_phantom, simulated_averages

from cryosnake.classify2d.state import ParticleState
from cryosnake.ctf import CTFParams, ctf_images
from cryosnake.kernels import cpu
from cryosnake.kernels.interface import KernelBackend, TriplePosteriors, kernel_names
from cryosnake.mlf2d import MLF2DModel, MLF2DSettings, estep
from cryosnake.mlf2d.fourier import PointSet, translation_table
from cryosnake.significant import SignificantSettings, run_iteration
from cryosnake.volume3d.symmetry import symmetry_matrices

MODULES = ("mlf2d", "volume", "align", "linalg")  # image, ml2d: tests/test_cuda_ml2d.py


def _rel(a, b) -> float:
    """Largest absolute difference relative to the largest magnitude of the reference."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _params(f) -> list[str]:
    return list(inspect.signature(getattr(f, "py_func", f)).parameters)


@pytest.mark.parametrize("name", MODULES)
def test_cuda_modules_export_the_cpu_interface(cuda_backend, name):
    gpu_mod = importlib.import_module(f"cryosnake.kernels.cuda.{name}")
    cpu_mod = importlib.import_module(f"cryosnake.kernels.cpu.{name}")
    assert gpu_mod.__all__ == cpu_mod.__all__
    for fn in cpu_mod.__all__:
        assert _params(getattr(gpu_mod, fn)) == _params(getattr(cpu_mod, fn)), fn
        assert getattr(cuda_backend, fn) is getattr(gpu_mod, fn)
        # only the host-only context manager is shared; every numerical kernel is a twin
        shared = getattr(gpu_mod, fn) is getattr(cpu_mod, fn)
        assert shared == (fn == "blas_single_thread"), fn


def _parameters(f) -> list[tuple]:
    """Names and defaults of the parameters of ``f`` (of its Python function when jitted)."""
    return [(p.name, p.default)
            for p in inspect.signature(getattr(f, "py_func", f)).parameters.values()]


@pytest.mark.parametrize("backend_name", ["cpu", "cuda"])
def test_backends_provide_the_kernel_interface(cuda_backend, backend_name):
    """Each backend module has every kernel of ``kernels.interface.KernelBackend``, with its
    parameter names and defaults, and its families export nothing else."""
    backend = cpu if backend_name == "cpu" else cuda_backend
    names = kernel_names()
    exported = [fn for family in ("image", "ml2d", *MODULES) for fn in importlib.import_module(
        f"cryosnake.kernels.{backend_name}.{family}").__all__]
    assert sorted(exported) == sorted(names)
    for fn in names:
        assert callable(getattr(backend, fn)), fn
        protocol = _parameters(getattr(KernelBackend, fn))[1:]  # without ``self``
        assert _parameters(getattr(backend, fn)) == protocol, fn


# numba building blocks inlined into the CPU kernels (no kernels of their own, not exported)
CPU_BUILDING_BLOCKS = {"dft", "fastexp"}


def test_every_kernel_module_has_an_interface_test():
    modules = {m.name for m in pkgutil.iter_modules(cpu.__path__)} - CPU_BUILDING_BLOCKS
    assert modules == {"image", "ml2d", *MODULES}
    assert not any(hasattr(cpu, name) for name in ("inverse_dft_passes", "fast_exp"))


@pytest.fixture(params=["whole", "chunked"])
def kernels(request, monkeypatch, cuda_backend):
    """The cuda backend, with the device memory it sees as is (one chunk per call at these
    sizes) or reported as 512 bytes, so that every call runs its chunked path."""
    if request.param == "chunked":
        from cryosnake.kernels.cuda import runtime

        monkeypatch.setattr(runtime, "free_memory_bytes", lambda: 512)
        assert len(runtime.chunk_ranges(4, 300)) == 4
    return cuda_backend


# -- volume -------------------------------------------------------------------------------------


def _rotations(n: int, seed: int) -> np.ndarray:
    return Rotation.random(n, random_state=seed).as_matrix()


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_fourier_slice_sample_matches_cpu(kernels, rng, dtype):
    P = 16
    vol_ft = (rng.normal(size=(P, P, P // 2 + 1))
              + 1j * rng.normal(size=(P, P, P // 2 + 1))).astype(dtype)
    coords = rng.uniform(-8.0, 8.0, size=(30, 2))  # some beyond P/2 - 1: zero
    rot = _rotations(3, 1)
    got = kernels.fourier_slice_sample(vol_ft, rot, coords)
    want = cpu.fourier_slice_sample(vol_ft, rot, coords)
    assert got.dtype == np.complex64 and got.shape == (3, 30)
    assert np.count_nonzero(want == 0) > 0 and np.count_nonzero(want) > 40
    assert _rel(got, want) < 1e-6


def _half_plane(P: int, radius: float) -> np.ndarray:
    ky, kx = np.meshgrid(np.arange(-P // 2 + 1, P // 2), np.arange(P // 2), indexing="ij")
    keep = ((kx > 0) | (ky >= 0)) & (np.hypot(kx, ky) <= radius)
    return np.stack([kx[keep], ky[keep]], axis=1).astype(np.float64)


@pytest.mark.parametrize("dtype,density", [(np.complex64, True), (np.complex128, False)])
def test_fourier_insert_matches_cpu(kernels, rng, dtype, density):
    P = 12
    coords = _half_plane(P, P / 2 - 1)
    m = len(coords)
    values = (rng.normal(size=(2, m)) + 1j * rng.normal(size=(2, m))).astype(dtype)
    idx = np.array([0, 1, 1, 0])
    rot = _rotations(4, 2)
    shifts = rng.normal(0, 1.5, size=(4, 2))
    weights = np.array([1.0, 0.7, 0.0, -1.0])  # rows with w <= 0 are skipped
    sym = symmetry_matrices("c2")
    ramp = np.maximum(np.hypot(coords[:, 0], coords[:, 1]), 0.5) if density else None
    num, den = kernels.fourier_insert(values, coords, idx, rot, shifts, weights, sym, P,
                                           ramp)
    want_num, want_den = cpu.fourier_insert(values, coords, idx, rot, shifts, weights, sym, P,
                                            ramp)
    assert num.dtype == np.complex128 and den.dtype == np.float64
    assert num.shape == den.shape == (P, P, P // 2 + 1)
    assert _rel(num, want_num) < 2e-6 and _rel(den, want_den) < 2e-6
    # the skipped rows really are skipped: only rows 0 and 1 (2 copies each) carry weight
    total = (1.0 + 0.7) * 2 * (ramp.sum() if density else m)
    assert want_den.sum() == pytest.approx(total, rel=1e-5)
    assert den.sum() == pytest.approx(total, rel=1e-9 if not density else 1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rotate_volume_matches_cpu(kernels, rng, dtype):
    vol = rng.normal(size=(8, 8, 8)).astype(dtype)
    mats = _rotations(3, 3)
    shifts = rng.normal(0, 1.0, size=(3, 3))
    got = kernels.rotate_volume_batch(vol, mats, shifts)
    want = cpu.rotate_volume_batch(vol, mats, shifts)
    assert got.dtype == np.float32 and got.shape == (3, 8, 8, 8)
    assert np.count_nonzero(want == 0) > 0  # corners fall outside
    assert _rel(got, want) < 1e-6
    one = kernels.rotate_volume(vol, mats[1], shifts[1])
    assert _rel(one, cpu.rotate_volume(vol, mats[1], shifts[1])) < 1e-6


# -- matrix products ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.complex64, np.float32, np.float64])
def test_batched_matmul_matches_cpu(kernels, rng, dtype):
    def draw(*shape):
        x = rng.normal(size=shape) + (1j * rng.normal(size=shape) if dtype == np.complex64 else 0)
        return x.astype(dtype)

    tol = 1e-6 if dtype in (np.float32, np.complex64) else 1e-13
    # Significant's shape (n_m, rows, R) @ (n_m, R, n_dir), the gallery one handle for two blocks
    gallery = draw(5, 4, 6)
    handle = kernels.device_operand(gallery)
    assert kernels.runtime.is_device_array(handle) and cpu.device_operand(gallery) is gallery
    for rows in (7, 3):
        a = draw(5, rows, 4)
        got = kernels.batched_matmul(a, handle)
        want = cpu.batched_matmul(a, gallery)
        assert got.dtype == want.dtype == dtype and got.shape == want.shape == (5, rows, 6)
        assert _rel(got, want) < tol
    # MLF2D's: 2D, a device left operand, a transposed host operand, sliced handle columns,
    # a stack broadcast against a matrix, promotion to float64
    a, bt = draw(6, 4), draw(9, 4).T
    cases = [((kernels.device_operand(a), bt), (a, bt)),
             ((a, handle[2][:, :3]), (a, gallery[2][:, :3])),
             ((a, gallery), (a, gallery)),
             ((gallery, np.ones((6, 2))), (gallery, np.ones((6, 2))))]
    for (ga, gb), (ca, cb) in cases:
        got, want = kernels.batched_matmul(ga, gb), cpu.batched_matmul(ca, cb)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert _rel(got, want) < (1e-13 if want.dtype == np.float64 else tol)
    # empty products, and operands that do not chain
    assert not kernels.batched_matmul(np.ones((3, 0), dtype), np.ones((0, 2), dtype)).any()
    assert kernels.batched_matmul(np.ones((0, 4), dtype), bt).shape == (0, 9)
    for be, b in ((kernels, handle), (cpu, gallery)):
        with pytest.raises(ValueError):
            be.batched_matmul(a, b[0, :3])


# -- MLF2D kernels -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,n_points", [(np.complex64, None), (np.complex128, "prob")])
def test_mlf2d_centred_matches_cpu(kernels, rng, dtype, n_points):
    n, n_flips = 8, 8
    pts = PointSet.build(n, 3, 3)
    tables, tw = pts.flip_tables(n_flips), translation_table(n)
    xp = rng.normal(size=(2, pts.n_points)) + 1j * rng.normal(size=(2, pts.n_points))
    cw = rng.uniform(0.1, 1.0, size=(2, n_flips, pts.n_points))
    img = np.array([0, 1, 1, 0, 1])
    flip = np.array([0, 3, 5, 7, 2])
    u = np.array([[0, 0], [1, -2], [-3, 1], [4, 4], [-1, -4]])
    cols = pts.n_prob if n_points == "prob" else None
    got = kernels.mlf2d_centred(xp, cw, img, flip, u, tables, tw, cols, dtype=dtype)
    want = cpu.mlf2d_centred(xp, cw, img, flip, u, tables, tw, cols, dtype=dtype)
    assert got.dtype == dtype and got.shape == want.shape == (5, cols or pts.n_points)
    assert _rel(got, want) < (1e-6 if dtype == np.complex64 else 1e-13)


def _weights_problem(rng):
    """Four images: 3 triples, none, 4 triples (two tied blocks), 2 triples fully masked."""
    img_ptr = np.array([0, 3, 3, 7, 9])
    nt, nv, npsi = 9, 4, 3
    D = rng.uniform(0.0, 25.0, size=(nt, nv, npsi))
    D[3:7] += 10.0
    D[4, :, 1] = D[5, :, 1] = 0.5  # the best blocks of image 2 tie: the first one must win
    mask = rng.uniform(size=(nt, npsi)) > 0.25
    mask[4, 1] = mask[5, 1] = True
    mask[7:] = False
    trip_lp = np.log(rng.uniform(0.2, 1.0, nt))
    trip_lp[5] = trip_lp[4]
    entry_lp = -rng.uniform(0.0, 3.0, size=(nt, nv))
    entry_lp[5] = entry_lp[4]
    entry_lp[0, 2] = -np.inf  # an impossible translation
    return D, mask, trip_lp, entry_lp, img_ptr


@pytest.mark.parametrize("block_skip,entry_cutoff", [(1e-8, 0.0), (1e-3, 1e-4), (0.0, 0.0)])
def test_mlf2d_weights_match_cpu(kernels, rng, block_skip, entry_cutoff):
    args = _weights_problem(rng)
    got = kernels.mlf2d_weights(*args, block_skip, entry_cutoff)
    want = cpu.mlf2d_weights(*args, block_skip, entry_cutoff)
    assert type(got) is type(want) is TriplePosteriors
    for key in ("argmax", "best_t", "best_v", "best_j"):
        g, w = getattr(got, key), getattr(want, key)
        assert g.dtype == w.dtype == np.int64, key
        np.testing.assert_array_equal(g, w, err_msg=key)
    assert want.best_t[1] == want.best_t[3] == -1 and want.best_t[2] == 4
    for key in ("gamma", "wsum", "logmax", "logsum", "pmax"):
        g, w = getattr(got, key), getattr(want, key)
        assert g.dtype == w.dtype == np.float64, key
        finite = np.isfinite(w)
        np.testing.assert_array_equal(np.isfinite(g), finite, err_msg=key)
        np.testing.assert_array_equal(g[~finite], w[~finite], err_msg=key)
        assert np.abs(g[finite] - w[finite]).max() <= 1e-12 * max(1.0, np.abs(w[finite]).max())
    per_image = np.add.reduceat(got.gamma.sum(axis=(1, 2)), [0, 3, 7])  # images 0, 2, 3
    np.testing.assert_allclose(per_image, [1.0, 1.0, 0.0], rtol=1e-12)


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_mlf2d_weights_float32_gamma(request, rng, backend):
    """``gamma_dtype=float32`` (the single-precision E-step): every posterior is the float64
    one rounded twice (the weight on store, then its normalisation by ``1 / sum w`` computed in
    float64), so within 2 ulp of float32 (plus the float32 underflow); every other result, all
    computed in float64, is unchanged."""
    kernels = cpu if backend == "cpu" else request.getfixturevalue("cuda_backend")
    args = _weights_problem(rng)
    want = cpu.mlf2d_weights(*args, 1e-8, 0.0)
    got = kernels.mlf2d_weights(*args, 1e-8, 0.0, gamma_dtype=np.float32)
    assert got.gamma.dtype == np.float32 and got.gamma.shape == want.gamma.shape
    err = np.abs(got.gamma.astype(np.float64) - want.gamma)
    assert np.all(err <= 2.0 * 2.0**-24 * (1 + 1e-6) * np.abs(want.gamma) + 2.0**-126)
    assert np.any(err > 0)  # the rounding is there: this is not the float64 result
    tol = 0.0 if backend == "cpu" else 1e-12
    for key in ("wsum", "logmax", "logsum", "pmax", "argmax", "best_t", "best_v", "best_j"):
        g, w = getattr(got, key), getattr(want, key)
        assert g.dtype == w.dtype, key
        finite = np.isfinite(w)
        np.testing.assert_array_equal(g[~finite], w[~finite], err_msg=key)
        assert np.abs(g[finite] - w[finite]).max() <= tol * max(1.0, np.abs(w[finite]).max())


# -- alignment ----------------------------------------------------------------------------------


def _peaked_coefficients(rng, n_img, n_dir, n_phi):
    """Ring coefficients of correlations peaked at ``psi0`` and a sub-grid shift per pair:
    ``C_m[t] = A_t r_m exp(i m psi0)``, ``A_t`` a quadratic of the 3 x 3 shift grid peaked
    at ``(x0, y0)`` (the fit recovers it exactly), plus a little noise."""
    n_m = n_phi // 2 + 1
    psi0 = rng.uniform(0, 2 * np.pi, size=(n_img, n_dir))
    x0, y0 = rng.uniform(-0.8, 0.8, size=(2, n_img, n_dir))
    t = np.arange(9)
    tx, ty = t % 3 - 1, t // 3 - 1
    amp = 2.0 - ((tx[None, :, None] - x0[:, None]) ** 2
                 + (ty[None, :, None] - y0[:, None]) ** 2) / 4.0  # (img, t, dir)
    m = np.arange(n_m)[:, None, None, None]
    C = amp[None] * np.exp(-0.15 * m) * np.exp(1j * m * psi0[None, :, None])
    C = C + 0.01 * (rng.normal(size=C.shape) + 1j * rng.normal(size=C.shape))
    C = np.ascontiguousarray(C.reshape(n_m, n_img * 9, n_dir), dtype=np.complex64)
    n_c = 16
    coarse = scipy.fft.irfft(np.conj(C[: n_c // 2 + 1, 4::9]), n=n_c, axis=0)
    return C, coarse.astype(np.float32), psi0, x0, y0


@pytest.mark.parametrize("with_d", [True, False])
def test_refine_rotational_peaks_matches_cpu(kernels, rng, with_d):
    n_phi = 16
    C, coarse, psi0, x0, y0 = _peaked_coefficients(rng, 3, 5, n_phi)
    D = (0.5 * C[:, :, ::-1] + 0.1).astype(np.complex64) if with_d else np.zeros(
        (0, 1, 1), np.complex64)
    got = kernels.refine_rotational_peaks(C, D, coarse, 3, n_phi, 3)
    want = cpu.refine_rotational_peaks(C, D, coarse, 3, n_phi, 3)
    # the problem is meaningful: the CPU finds the planted peaks
    err = np.angle(np.exp(1j * (want[0] - psi0)))
    assert np.abs(err).max() < 0.02 and np.abs(want[1] - x0).max() < 0.05
    names = ("psi", "dx", "dy", "cval", "dval")
    for name, g, w in zip(names, got, want, strict=True):
        assert g.dtype == np.float64 and g.shape == (3, 5), name
        assert np.abs(g - w).max() <= 1e-7 * max(1.0, np.abs(w).max()), name
    assert with_d == bool(np.abs(want[4]).max() > 0)


# -- whole algorithms ---------------------------------------------------------------------------


@pytest.fixture
def matmul_calls(monkeypatch, cuda_backend):
    """Counts of the calls of each backend's ``batched_matmul`` (the algorithms' products)."""
    calls = {"cpu": 0, "cuda": 0}
    for name, mod in (("cpu", cpu), ("cuda", cuda_backend)):
        def counted(a, b, _name=name, _f=mod.batched_matmul):
            calls[_name] += 1
            return _f(a, b)

        monkeypatch.setattr(mod, "batched_matmul", counted)
    return calls


def test_significant_iteration_matches_cpu(cuda_backend, matmul_calls):
    """One Reconstruct Significant iteration (alignment, significance, c2 reconstruction)."""
    n = 12
    phantom = gaussian_phantom(n, seed=3, n_blobs=4)
    images, *_ = simulated_averages(phantom, 4, snr=10.0, seed=4)
    settings = SignificantSettings(symmetry="c2", angular_sampling=40.0, iterations=3)
    vol_c, ang_c = run_iteration(images, phantom, settings, 1, backend=cpu)
    assert matmul_calls["cpu"] > 0 and matmul_calls["cuda"] == 0
    vol_g, ang_g = run_iteration(images, phantom, settings, 1, backend=cuda_backend)
    assert matmul_calls["cuda"] > 0  # the gallery products ran on the cuda backend
    assert len(ang_c) > 2 * len(images)  # several significant directions per image
    np.testing.assert_array_equal(ang_g["image"], ang_c["image"])
    np.testing.assert_array_equal(ang_g["direction"], ang_c["direction"])
    assert _rel(ang_g["weight"], ang_c["weight"]) < 1e-6
    for col in ("cc", "imed"):
        assert _rel(ang_g[col], ang_c[col]) < 1e-6, col
    for col in ("psi", "origin_x_px", "origin_y_px"):
        assert np.abs(ang_g[col] - ang_c[col]).max() < 1e-5, col
    assert vol_g.dtype == np.float32 and _rel(vol_g, vol_c) < 1e-5


def _mlf2d_problem():
    """Three 16 px particles of two classes (one mirrored), astigmatic CTFs, two groups."""
    n, k = 16, 2
    rng = np.random.default_rng(17)
    refs = rng.normal(size=(k, n, n)) * 0.3
    refs[:, 4:10, 5:9] += 1.5
    refs[1, 10:13, 3:7] += 1.0
    ctf = CTFParams(np.array([10000.0, 15000.0, 12000.0]), np.array([9000.0, 14000.0, 11500.0]),
                    np.array([10.0, 60.0, 120.0]), 300.0, 2.7, 0.1)
    views = [np.roll(rotate_ref(refs[0], 20.0), (1, 0), axis=(0, 1)),
             mirror_ref(rotate_ref(refs[1], 75.0)), rotate_ref(refs[0], 140.0)]
    clean = np.real(np.fft.ifft2(np.fft.fft2(views) * ctf_images(ctf, n, 3.0, half=False)))
    images = clean + rng.normal(0.0, 1.0, clean.shape)
    noise = np.array([np.linspace(320.0, 160.0, n // 2), np.linspace(260.0, 210.0, n // 2)])
    model = MLF2DModel(references=refs, class_fractions=[0.55, 0.45], mirror_fractions=[0.4, 0.5],
                       sigma_noise=1.0, sigma_offset=1.2, sampling=3.0, noise_spectra=noise,
                       group_defocus=[10000, 15000], group_sizes=[2, 1], shell_high=5,
                       iteration=2)
    state = ParticleState(np.zeros((3, k, 2, 2), np.int32), np.ones(3), np.zeros(3))
    state.offsets[1, 1, 1] = (1, -1)
    return images, model, ctf, np.array([0, 1, 0]), state


@pytest.mark.parametrize("precision,fast", [("double", False), ("double", True),
                                            ("single", True)])
def test_mlf2d_estep_matches_cpu(cuda_backend, matmul_calls, precision, fast):
    images, model, ctf, groups, state = _mlf2d_problem()
    settings = MLF2DSettings(psi_step=30, mirror=True, fast=fast, search_shift=1.5,
                             precision=precision, phase_flipped=False,
                             fast_C=1e-3 if fast else 1e-12)
    runs = {}
    for name, backend in (("cpu", cpu), ("cuda", cuda_backend)):
        debug = {}
        sums, assign, new_state = estep(images, model, settings, ctf, groups, state,
                                        backend=backend, debug=debug)
        runs[name] = (sums, assign, new_state, np.concatenate(debug["gamma"]))
        assert matmul_calls[name] > 0  # the per-class products ran on this backend
    (s_c, a_c, st_c, g_c), (s_g, a_g, st_g, g_g) = runs["cpu"], runs["cuda"]
    tol = 1e-10 if precision == "double" else 1e-5
    assert 0.05 < g_c.max() < 0.99  # spread posteriors: not a one-hot test
    assert g_g.shape == g_c.shape and np.abs(g_g - g_c).max() < tol
    for key in ("class_number", "mirror", "origin_x_px", "origin_y_px"):
        np.testing.assert_array_equal(a_g[key], a_c[key], err_msg=key)
    assert np.abs(a_g["psi_deg"] - a_c["psi_deg"]).max() < 1e-9
    assert _rel(a_g["max_posterior"], a_c["max_posterior"]) < tol
    assert _rel(a_g["loglik"], a_c["loglik"]) < tol
    np.testing.assert_array_equal(st_g.offsets, st_c.offsets)
    for key in ("ref_sum", "ref_denominator", "class_weight", "mirror_weight", "noise_sum"):
        assert _rel(getattr(s_g, key), getattr(s_c, key)) < tol, key
    assert math.isclose(s_g.loglik_sum, s_c.loglik_sum, rel_tol=tol)
    assert math.isclose(s_g.offset_sum, s_c.offset_sum, rel_tol=tol, abs_tol=1e-12)
