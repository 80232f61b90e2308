"""CUDA twins of the image and ML2D kernels against the CPU ones (issue #8), then one ML2D
E-step + M-step on both backends.

Runs on a GPU where there is one, otherwise under numba's CUDA simulator (tests/conftest.py),
so sizes are tiny. Tolerances are relative to the largest magnitude of the CPU result: 1e-5
for float32 / complex64 results, 1e-10 for float64 ones computed in float64.
"""

from __future__ import annotations

import inspect
import os
import pickle
import subprocess
import sys

import numba
import numpy as np
import pytest
from ml2d_sim import make_views, simulate

from cryosnake.classify2d.hypotheses import FLIP_MATRICES
from cryosnake.classify2d.state import ParticleState
from cryosnake.kernels import cpu
from cryosnake.kernels.cpu import image as cpu_image
from cryosnake.kernels.cpu import ml2d as cpu_ml2d
from cryosnake.ml2d import ML2DModel, ML2DSettings, estep, mstep

pytestmark = pytest.mark.gpu

HOST_ONLY = {
    "fft_workers",
    "parallel_batches",
    "radius_grid",
    "circular_mask",
    "ml2d_window_phase",
    "ml2d_window_accumulator",
}


_SIGNATURES: dict = {}  # (module, kernel) -> argument types of the launches below


@pytest.fixture(scope="module", autouse=True)
def _record_launches(cuda_backend):
    """Record the numba types of every kernel launch (for the sm_90 compile check at the end)."""
    rt = cuda_backend.runtime
    launch = rt.launch_items

    def recording(kernel, n_items, *args, **kw):
        types = tuple(numba.typeof(getattr(a, "_ary", a)) for a in args)  # simulator arrays
        _SIGNATURES.setdefault((kernel.py_func.__module__, kernel.py_func.__name__), set()).add(
            types
        )
        return launch(kernel, n_items, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        if rt.SIMULATED:
            mp.setattr(rt, "launch_items", recording)
        yield


def _tol(a: np.ndarray) -> float:
    return 1e-5 if a.dtype in (np.float32, np.complex64) else 1e-10


def _assert_close(got, want, tol=None):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-300)
    err = float(np.abs(got - want).max(initial=0.0)) / scale
    assert err <= (_tol(want) if tol is None else tol), err


def _added(fn, acc, *args, **kw):
    """``acc`` after the in-place accumulation ``fn(acc, ...)`` (on a copy)."""
    acc = acc.copy()
    fn(acc, *args, **kw)
    return acc


@pytest.mark.parametrize("module", ["image", "ml2d"])
def test_same_interface_as_cpu(cuda_backend, module):
    cpu_mod = {"image": cpu_image, "ml2d": cpu_ml2d}[module]
    gpu_mod = getattr(cuda_backend, module)
    assert gpu_mod.__all__ == cpu_mod.__all__
    for name in cpu_mod.__all__:
        ours, theirs = getattr(gpu_mod, name), getattr(cpu_mod, name)
        assert callable(ours) and getattr(cuda_backend, name) is ours
        assert (
            inspect.signature(ours).parameters.keys() == inspect.signature(theirs).parameters.keys()
        )
        defaults = [p.default for p in inspect.signature(theirs).parameters.values()]
        assert [p.default for p in inspect.signature(ours).parameters.values()] == defaults
        # host-only helpers are the CPU's; everything numerical has its own device code
        assert (ours is theirs) == (name in HOST_ONLY), name


def _image_cases(x):
    n = x.shape[-1]
    r = np.random.default_rng(3)
    spec = cpu_image.rfft2(x)
    angles = r.uniform(-180.0, 180.0, len(x))
    index = r.integers(0, len(x), 5)
    rolls = r.integers(-2 * n, 2 * n, (5, 2))
    shifts = r.uniform(-3.0, 3.0, (len(x), 2))
    return {
        "rfft2": lambda be: be.rfft2(x),
        "rfft2_single": lambda be: be.rfft2(x[0]),
        "irfft2": lambda be: be.irfft2(spec, n),
        "bspline3_coefficients": lambda be: be.bspline3_coefficients(x),
        "rotate_bspline3": lambda be: be.rotate_images(x, angles, order=3),
        "rotate_bilinear": lambda be: be.rotate_images(x, angles, order=1),
        "rotate_single": lambda be: be.rotate_images(x[0], 33.0),
        "permute_images": lambda be: be.permute_images(x, FLIP_MATRICES),
        "permute_spectra": lambda be: be.permute_spectra(spec, FLIP_MATRICES, n),
        "roll_images": lambda be: be.roll_images(x, index, rolls),
        "shift_images": lambda be: be.shift_images(x, shifts),
        "radial_average": lambda be: be.radial_average(x),
    }


@pytest.mark.parametrize("case", list(_image_cases(np.zeros((1, 2, 2)))))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_image_kernel_parity(cuda_backend, rng, case, dtype):
    x = rng.normal(size=(3, 12, 12)).astype(dtype)
    run = _image_cases(x)[case]
    _assert_close(run(cuda_backend), run(cpu_image))


def test_rotation_order_is_checked(cuda_backend):
    with pytest.raises(ValueError, match="order"):
        cuda_backend.rotate_images(np.zeros((1, 8, 8)), 10.0, order=2)


def _ml2d_cases(x, refs, w):
    n = x.shape[-1]
    W = 2 * w + 1
    r = np.random.default_rng(4)
    nb = 7
    blk_x = r.integers(0, len(x), nb)
    blk_b = r.integers(0, len(refs), nb)
    key = r.choice([0, 1, 3], nb)  # key 2 gets nothing
    scale = r.uniform(0.5, 2.0, nb)
    gamma = r.uniform(0.0, 1.0, (nb + 2, W, W))
    rows = r.permutation(nb + 2)[:nb]
    rolls = r.integers(-2 * n, 2 * n, (nb, 2))
    sparse = np.where(gamma[rows] > 0.8, gamma[rows], 0.0)  # a few entries per block
    spec = cpu_image.rfft2(x)
    xops = cpu_ml2d.ml2d_image_operands(x)
    rops = cpu_ml2d.ml2d_reference_operands(refs, w)
    acc_win = r.normal(size=(4, 2, n, n // 2 + 1))
    acc_real = r.normal(size=(4, n, n))
    return {
        "image_operands": lambda be: be.ml2d_image_operands(x),
        "permuted_operands": lambda be: be.ml2d_permuted_operands(spec, FLIP_MATRICES, n),
        "reference_operands": lambda be: be.ml2d_reference_operands(refs, w),
        "block_correlations": lambda be: be.ml2d_block_correlations(xops, rops, blk_x, blk_b, w),
        "shifted_projections": lambda be: be.ml2d_shifted_projections(
            x, blk_x, rolls, be.ml2d_projection_operands(refs, x.dtype)),
        "accumulate_direct": lambda be: _added(
            be.ml2d_accumulate_direct, acc_real, x, sparse, key, blk_x, scale, w
        ),
        "accumulate_windows": lambda be: _added(
            be.ml2d_accumulate_windows, acc_win, gamma, xops, key, blk_x, scale, w, rows
        ),
        "window_sums": lambda be: be.ml2d_window_sums(acc_win, w),
    }


# results in float64 from float32 operands, summed in another order: float32 tolerance
_OPERAND_PRECISION = {"accumulate_windows"}


@pytest.mark.parametrize("case", list(_ml2d_cases(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), 1)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, w", [(8, 3), (9, 2)])  # even and odd boxes (the simulator is slow)
def test_ml2d_kernel_parity(cuda_backend, rng, case, dtype, n, w):
    x = rng.normal(size=(3, n, n)).astype(dtype)
    refs = rng.normal(size=(4, n, n)).astype(dtype)
    run = _ml2d_cases(x, refs, w)[case]
    tol = 1e-5 if dtype == np.float32 and case in _OPERAND_PRECISION else None
    _assert_close(run(cuda_backend), run(cpu_ml2d), tol)


def _posterior_inputs(rng, dtype):
    """Correlations of 9 blocks of 3 images (blocks 0-2, none, 3-8), W = 5, sigma^2 = 4, with
    a tie, a skipped block and an underflowing weight."""
    W, nb = 5, 9
    c = (20.0 * rng.random((nb, W, W)) - 10.0).astype(dtype)
    c[2, 1, 3] = c[2, 3, 0] = c[2].max() + 5.0  # a tie: the argmax is the first flat index
    c[5, 0, 0] = -1e4  # its weight underflows to 0 (still counted when entry_cutoff is 0)
    const, scale, prior = rng.random((3, nb)) * [[20.0], [1.0], [0.9]] + [[20.0], [0.5], [0.1]]
    const[4] += 200.0  # far below the rest: skipped
    shift_prior = rng.random((W, W)) * 0.9 + 0.1
    shift_prior[1, 3] = shift_prior[3, 0] = 1.0
    img_ptr = np.array([0, 3, 3, 9])
    return (
        c,
        const,
        scale,
        img_ptr,
        np.log(prior),
        np.log(shift_prior),
        8 * rng.random((W, W)),
        4.0,
    )


def _assert_same_results(got: dict, want: dict):
    assert got.keys() == want.keys()
    for key, ref in want.items():
        ref, val = np.asarray(ref), np.asarray(got[key])
        if ref.dtype.kind in "iub":
            np.testing.assert_array_equal(val, ref, err_msg=key)
        else:
            finite = np.isfinite(ref)
            np.testing.assert_array_equal(np.isfinite(val), finite, err_msg=key)
            _assert_close(val[finite], ref[finite])


@pytest.mark.parametrize("entry_cutoff", [1e-6, 0.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_posteriors_parity(cuda_backend, rng, dtype, entry_cutoff):
    args = _posterior_inputs(rng, dtype)
    kw = {"block_skip": 1e-8, "entry_cutoff": entry_cutoff}
    buffer = np.full((9, 5, 5), np.nan)
    got = cuda_backend.ml2d_block_posteriors(*args, **kw, gamma_buffer=buffer)
    want = cpu_ml2d.ml2d_block_posteriors(*args, **kw)
    assert np.shares_memory(got.gamma, buffer)
    assert 4 not in want.kept and want.argmax[2] == 1 * 5 + 3  # the cases are exercised
    _assert_same_results(vars(got), vars(want))


def test_chunked_launches_match(cuda_backend, rng, monkeypatch):
    # a device with ~6 kB free: every call runs item by item (image runs for the posteriors)
    monkeypatch.setattr(cuda_backend.runtime, "free_memory_bytes", lambda: 6000)
    assert cuda_backend.runtime.batch_size(3000, 10) == 1
    x = rng.normal(size=(3, 12, 12)).astype(np.float32)
    refs = rng.normal(size=(4, 12, 12)).astype(np.float32)
    cases = _ml2d_cases(x, refs, 3)
    for case in ("block_correlations", "accumulate_windows", "image_operands", "window_sums"):
        tol = 1e-5 if case in _OPERAND_PRECISION else None
        _assert_close(cases[case](cuda_backend), cases[case](cpu_ml2d), tol)
    _assert_close(
        cuda_backend.rotate_images(x, [10, 20, 30]), cpu_image.rotate_images(x, [10, 20, 30])
    )
    args = _posterior_inputs(rng, np.float64)
    _assert_same_results(
        vars(cuda_backend.ml2d_block_posteriors(*args)), vars(cpu_ml2d.ml2d_block_posteriors(*args))
    )


# --- one iteration on both backends ---------------------------------------------------------

N_IMG, N = 6, 12


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(11)
    views = make_views(2, N, rng, max_similarity=0.95)
    images, truth = simulate(views, N_IMG, rng, snr=0.5, offset_std=1.0)
    return views, images, truth


@pytest.mark.parametrize(
    "psi_step, fast, norm, precision",
    [(90, False, False, "single"), (45, True, True, "single"), (90, False, False, "double")],
)
def test_iteration_parity(cuda_backend, dataset, psi_step, fast, norm, precision):
    views, images, truth = dataset
    sigma = float(truth["sigma"])
    flags = {"psi_step": psi_step, "fast": fast, "norm": norm, "precision": precision}
    settings = ML2DSettings(n_classes=2, mirror=True, noise_std=sigma, offset_std=1.0, **flags)
    model = ML2DModel(
        views, [0.6, 0.4], [0.4, 0.55], sigma, 1.0, norm_scale_mean=1.1 if norm else 1.0
    )
    state = ParticleState.initial(N_IMG, 2, settings)
    r = np.random.default_rng(12)
    if fast:  # known offsets: the pre-selection (shifted projections) prunes blocks
        state.offsets[:] = r.integers(-1, 2, state.offsets.shape)
    if norm:
        state.norm_scale[:] = r.uniform(0.8, 1.3, N_IMG)
        state.background[:] = r.normal(0.0, 0.2, N_IMG)
    runs = {}
    for name, backend in (("cpu", cpu), ("cuda", cuda_backend)):
        debug = {}
        sums, assign, new_state = estep(
            images, model, settings, state, backend=backend, debug=debug
        )
        runs[name] = (sums, assign, new_state, debug, mstep(model, sums, settings))
    (s0, a0, st0, d0, m0), (s1, a1, st1, d1, m1) = runs["cpu"], runs["cuda"]
    tol = 1e-9 if precision == "double" else 1e-5
    post_tol = 10 * tol  # posteriors: e^{-d / sigma^2} of d from float32 correlations

    # posteriors of every block, the pruned block list included
    for col in ("image", "k", "j", "f"):
        np.testing.assert_array_equal(np.concatenate(d1[col]), np.concatenate(d0[col]))
    g0, g1 = np.concatenate(d0["gamma"]), np.concatenate(d1["gamma"])
    if fast:
        assert len(g0) < N_IMG * 2 * (90 // psi_step) * 8  # the pre-selection pruned blocks
    assert np.max(g0) < 0.99  # spread posteriors: not a one-hot test
    np.testing.assert_allclose(g1, g0, rtol=0, atol=post_tol)
    # assignments and the new state
    for key in ("class_number", "psi_deg", "origin_x_px", "origin_y_px", "mirror"):
        np.testing.assert_array_equal(a1[key], a0[key], err_msg=key)
    np.testing.assert_allclose(a1["max_posterior"], a0["max_posterior"], atol=post_tol)
    for key in ("norm_scale", "background"):
        np.testing.assert_allclose(a1[key], a0[key], rtol=tol, atol=tol, err_msg=key)
    np.testing.assert_allclose(a1["loglik"], a0["loglik"], rtol=tol)
    np.testing.assert_array_equal(st1.offsets, st0.offsets)
    # sums and the M-step
    _assert_close(s1.ref_sum, s0.ref_sum, tol)
    for key in ("ref_denominator", "class_weight", "mirror_weight"):
        np.testing.assert_allclose(getattr(s1, key), getattr(s0, key), tol, tol, err_msg=key)
    for key in ("noise_sum", "offset_sum", "loglik_sum", "pmax_sum", "scale_sum"):
        assert getattr(s1, key) == pytest.approx(getattr(s0, key), rel=tol), key
    _assert_close(m1.references, m0.references, max(tol, 1e-7))  # rounded to float32
    np.testing.assert_allclose(m1.class_fractions, m0.class_fractions, rtol=tol)
    np.testing.assert_allclose(m1.mirror_fractions, m0.mirror_fractions, rtol=tol)
    assert m1.sigma_noise == pytest.approx(m0.sigma_noise, rel=tol)
    assert m1.sigma_offset == pytest.approx(m0.sigma_offset, rel=tol)
    assert m1.norm_scale_mean == pytest.approx(m0.norm_scale_mean, rel=tol)


# --- the kernels compile for a real GPU -----------------------------------------------------

_COMPILE = """
import importlib, pickle, sys
try:
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda
    from numba.cuda.cudadrv import nvvm
    nvvm.NVVM()
except Exception as e:
    print(f"no CUDA compiler here ({type(e).__name__}: {e})")
    sys.exit(3)
import cryosnake.kernels as kernels
kernels.cuda_available = kernels.cuda_simulated = lambda: True  # import without a GPU or CuPy
class Device:  # device functions are compiled for the current device: an H100
    compute_capability = (9, 0)
dispatcher.get_current_device = Device
failed = []
for (module, name), signatures in pickle.load(open(sys.argv[1], "rb")).items():
    kernel = getattr(importlib.import_module(module), name).py_func
    for sig in signatures:
        try:
            cuda.compile_ptx(kernel, sig, cc=(9, 0))
        except Exception as e:
            failed.append(f"{name}{sig}: {e}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_kernels_compile_for_sm90(cuda_backend, repo_root, tmp_path):
    """The simulator runs kernels as Python and types nothing: compile every kernel signature
    launched above with numba's CUDA compiler (PTX for sm_90; needs libNVVM, not a GPU)."""
    if not cuda_backend.runtime.SIMULATED:
        pytest.skip("on a GPU the tests above compiled and ran every kernel")
    if not _SIGNATURES:
        pytest.skip("no kernel was launched in this session")
    path = tmp_path / "signatures.pkl"
    path.write_bytes(pickle.dumps(_SIGNATURES))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([str(repo_root), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", _COMPILE, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode == 3:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    assert len(_SIGNATURES) >= 19  # every kernel of image.py and ml2d.py
