"""ML2D E-step over one chunk of particles (spec ``algorithms.md`` §1.6, §1.7, §1.12, §1.13).

For every image ``X_i`` and every hypothesis ``h = (k, j, f, s)`` (§1.3):

    d_h = 1/2 ||G_f X - b - s_i Sh_s B_kj||^2
        = 1/2 (||X - b||^2 + s_i^2 A2_k) + s_i b Bsum_kj - s_i c_kjf(s)      (§1.6, §1.13)

with ``c_kjf(s) = sum_p B_kj(p) (G_f X)(p + s)`` (``s_i = 1``, ``b = 0`` without ``norm``).
The posteriors ``gamma_h = pi_h e^{-d_h/sigma^2} / W`` come from a log-sum-exp per image
(§1.6.1) with the skipping rule of §1.6.2; the image, brought into the frame of each ``B_kj``
and weighted, accumulates into ``S_kj``, and ``S_kj`` is back-rotated into per-class sums
before returning (so the output is small, §1.8).

FFT layout (§1.7), per sub-batch: one real FFT per image; the spectra of its 4 or 8 flips are
exact permutations of it (``ml2d_permuted_operands``). Per block ``(i, k, j, f)`` a fused
kernel forms the product with ``conj(FFT(B_kj))`` and inverts it only where the ``(2w+1)^2``
translation window needs it (``ml2d_block_correlations``). Blocks with few non-zero weights
accumulate by direct shifts of the image, the others through the adjoint pruned transform of
their weight window (``ml2d_accumulate_windows``), summed in Fourier space per ``(k, j)``.

Work is done in sub-batches of at most ``settings.max_blocks`` blocks, so memory is bounded
whatever the chunk size; the large per-sub-batch buffers are reused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cryosnake import masks
from cryosnake.classify2d.classes import output_classes
from cryosnake.classify2d.hypotheses import (
    FLIP_MATRICES,
    INVERSE_FLIP,
    hypothesis_log_priors,
    log_offset_prior,
    physical_offset,
    psi_grid,
    total_angle,
    translation_half_width,
    window_shifts,
)
from cryosnake.classify2d.poses import hypothesis_to_pose
from cryosnake.classify2d.state import INVALID_OFFSET, ParticleState
from cryosnake.kernels import cpu

from .model import ML2DModel
from .references import back_rotate_sums, reference_bank
from .settings import ML2DSettings
from .sums import Sums

_PRESELECT_BATCH = 128  # images per fast-mode pre-selection batch


@dataclass
class _Totals:
    """What an E-step accumulates over its sub-batches: per-image results (``per_image``, dict
    of ``[n]`` arrays), the new stored offsets ``[n, K_out, 2, 2]``, the ``S_kj`` sums by direct
    shifts (``acc_direct`` ``[K_out n_psi, N, N]``) and by weight windows (``acc_win``), and
    the per-class weights, mirror weights, reference denominators and norm backgrounds."""

    per_image: dict
    new_offsets: np.ndarray
    acc_direct: np.ndarray
    acc_win: np.ndarray
    class_w: np.ndarray
    mirror_w: np.ndarray
    ref_den: np.ndarray
    ref_bg: np.ndarray

    @classmethod
    def zeros(cls, n, n_keys, N, k_out, backend, scale, bg) -> _Totals:
        per_image = {name: np.zeros(n, np.int64)
                     for name in ("best_k", "best_j", "best_f", "best_sx", "best_sy")}
        per_image.update({name: np.zeros(n) for name in ("pmax", "logsum", "noise", "offset")})
        per_image.update(s_new=scale.copy(), b_new=bg.copy())
        return cls(per_image, np.full((n, k_out, 2, 2), INVALID_OFFSET, dtype=np.int32),
                   np.zeros((n_keys, N, N)), backend.ml2d_window_accumulator(n_keys, N),
                   np.zeros(k_out), np.zeros(k_out), np.zeros(k_out), np.zeros(k_out))


class _Context:
    """Per-call constants: reference bank, spectra, priors, translation window."""

    def __init__(self, model: ML2DModel, settings: ML2DSettings, backend):
        self.backend = backend
        self.settings = settings
        self.n = model.image_size
        self.D = self.n * self.n
        self.mask = masks.particle_mask(self.n, settings.particle_diameter, model.sampling)
        self.noise_pixels = masks.noise_pixels(self.n, settings.particle_diameter,
                                               model.sampling)
        self.K = model.n_classes
        self.psi_deg, _ = psi_grid(settings.psi_step)
        self.n_psi = len(self.psi_deg)
        self.F = settings.n_flips
        self.dtype = settings.real_dtype
        self.bank = reference_bank(model.references, self.psi_deg, backend)
        flat = self.bank.B.reshape(self.K * self.n_psi, self.n, self.n).astype(self.dtype)
        self.sigma2 = float(model.sigma_noise) ** 2
        self.xi = float(model.sigma_offset)
        self.w = translation_half_width(
            self.xi, self.n, settings.window_factor, settings.max_shift_px
        )
        # conj(FFT(B_kj)) with the window phase folded in, as correlation operands (§1.7)
        self.bref = backend.ml2d_reference_operands(flat, self.w)
        self.corr_buf = np.empty((0, 2 * self.w + 1, 2 * self.w + 1), dtype=self.dtype)
        self.gamma_buf = np.empty((0, 2 * self.w + 1, 2 * self.w + 1))
        self.log_prior_shift = log_offset_prior(self.xi, self.n, self.w)
        sx, sy = window_shifts(self.w)
        self.sx = sx.ravel()
        self.sy = sy.ravel()
        self.shift_r2 = (sx**2 + sy**2).astype(np.float64)
        self.log_prior_kf = hypothesis_log_priors(model, self.F)
        self.active_kf = np.isfinite(self.log_prior_kf)
        if settings.fast:
            # B'_kjf(r) = B_kj(F_f^{-1} r): the rotated reference seen in the raw image frame
            bimg = backend.permute_images(flat, FLIP_MATRICES[INVERSE_FLIP[: self.F]])
            bimg = bimg.reshape(self.K, self.n_psi, self.F // 4, 4 * self.D)
            # per (k, mu): its 4 n_psi references [q, j] as projection operands
            self.projection_ops = [
                [backend.ml2d_projection_operands(
                    bimg[k, :, mu].reshape(self.n_psi, 4, self.D).transpose(1, 0, 2)
                    .reshape(4 * self.n_psi, self.D),
                    self.dtype) for mu in range(self.F // 4)]
                for k in range(self.K)
            ]


def _fast_significance(ctx: _Context, X, X2p, scale, bg, offsets) -> np.ndarray:
    """Significant blocks ``[m, K, n_psi, F]`` of a batch (spec §1.12 pre-selection).

    For each ``(i, k, mu)`` with a known optimal offset ``t*`` (``|t*| <= 3 xi``), ``d`` of
    every ``(j, q)`` at that offset is computed in real space, ``<Sh_{-t*}X, B'_kjf>``; the
    block is kept iff ``d <= min_{j,q} d + sigma^2 ln(1/C)`` (equivalent to ``v >= C v_max``
    since the priors are constant within ``(k, mu)``). Other ``(k, mu)`` keep all blocks.
    """
    m = X.shape[0]
    K, n_psi, F = ctx.K, ctx.n_psi, ctx.F
    sig = np.broadcast_to(ctx.active_kf[None, :, None, :], (m, K, n_psi, F)).copy()
    if not ctx.settings.fast:
        return sig
    n_mu = F // 4
    t = offsets[:, :, :n_mu, :].astype(np.int64)  # [m, K, n_mu, 2]
    known = (t[..., 0] != INVALID_OFFSET) & ((t**2).sum(-1) <= 9.0 * ctx.xi**2)
    active_kmu = ctx.active_kf[:, ::4][:, :n_mu]  # [K, n_mu]
    ii, kk, mm = np.nonzero(known & active_kmu[None])
    if ii.size == 0:
        return sig
    Xc = X.astype(ctx.dtype)
    c = np.empty((len(ii), 4, n_psi))
    group = kk * n_mu + mm
    order = np.argsort(group, kind="stable")
    edges = np.searchsorted(group[order], np.arange(K * n_mu + 1))
    for g in range(K * n_mu):
        sel = order[edges[g] : edges[g + 1]]
        if sel.size:  # per (k, mu): centred images . its 4 n_psi rotated references
            k, mu = divmod(g, n_mu)
            c[sel] = ctx.backend.ml2d_shifted_projections(
                Xc, ii[sel], -t[ii[sel], k, mu], ctx.projection_ops[k][mu]
            ).reshape(-1, 4, n_psi)
    s = scale[ii]
    d = (
        0.5 * (X2p[ii] + s**2 * ctx.bank.A2[kk])[:, None, None]
        + (s * bg[ii])[:, None, None] * ctx.bank.Bsum[kk][:, None, :]
        - s[:, None, None] * c
    )
    keep = d <= d.min(axis=(1, 2))[:, None, None] + ctx.sigma2 * math.log(1.0 / ctx.settings.fast_C)
    for q in range(4):
        sig[ii, kk, :, 4 * mm + q] = keep[:, q, :]
    sig &= ctx.active_kf[None, :, None, :]
    return sig


def _norm_update(ctx: _Context, X2p, Xsum, scale, bg, E_noise, E_A2, E_Bsum):
    """Joint ML update of ``(s_i, b_i)`` given the posteriors (spec §1.13, clean version).

    Minimises ``sum_h gamma_h ||X - s B_h - b||^2``:
    ``[[E A2, E Bsum], [E Bsum, D]] (s, b) = (E <X, B_h>, sum X)``, with
    ``E <X, B_h> = (1/2 ||X - b_old||^2 + 1/2 s_old^2 E A2 - E d) / s_old + b_old E Bsum``.
    Images whose system is singular keep their old values.
    """
    E_d = 0.5 * E_noise
    E_c = (0.5 * X2p + 0.5 * scale**2 * E_A2 - E_d) / scale + bg * E_Bsum
    det = E_A2 * ctx.D - E_Bsum**2
    ok = det > 1e-12 * np.maximum(E_A2 * ctx.D, 1e-300)
    safe = np.where(ok, det, 1.0)
    s_new = np.where(ok, (E_c * ctx.D - E_Bsum * Xsum) / safe, scale)
    b_new = np.where(ok, (E_A2 * Xsum - E_Bsum * E_c) / safe, bg)
    return s_new, b_new


def estep(
    images: np.ndarray,
    model: ML2DModel,
    settings: ML2DSettings,
    state: ParticleState | None = None,
    group_labels: np.ndarray | None = None,
    backend=cpu,
    debug: dict | None = None,
) -> tuple[Sums, dict, ParticleState]:
    """One E-step over a chunk of particles (spec §1.6, §3A).

    Returns ``(sums, assignments, new_state)``.

    * ``images``: ``[n, N, N]`` (float32 or float64; a read-only memmap view is fine).
    * ``model``: the current :class:`ML2DModel` (``K`` references).
    * ``state``: :class:`ParticleState` of these ``n`` particles for ``K`` classes
      (``None``: :meth:`ParticleState.initial`).
    * ``group_labels``: ``int [n]`` in ``0 .. settings.n_classes - 1`` or ``None``. When given
      (iteration 0 of "generate classes", §1.11, with a one-reference model) the statistics of
      particle ``i`` go to output class ``group_labels[i]`` and the sums have
      ``settings.n_classes`` classes.
    * ``backend``: kernel module (default :mod:`cryosnake.kernels.cpu`).
    * ``debug``: if a dict, receives per-block lists (``image``, ``k``, ``j``, ``f``,
      ``gamma`` ``[nb, W, W]`` posteriors) for tests (memory heavy).

    Returns the additive :class:`Sums`, the per-particle ``assignments`` (dict of ``[n]``
    arrays: ``class_number`` (1..K), ``psi_deg``, ``origin_x_px``, ``origin_y_px``, ``mirror``
    (0/1) -- the pose of the best hypothesis in the output convention of
    :mod:`cryosnake.classify2d.poses` -- ``max_posterior`` (``Pmax``), ``loglik`` (``LL_i``),
    ``norm_scale``, ``background``, ``search_kept``: the fraction of the image's ``(k, j, f)``
    blocks the fast search kept, 1 without it), and the new :class:`ParticleState` (for
    ``settings.n_classes`` classes with ``group_labels``, then with unknown offsets).
    ``norm_scale`` is the updated ``s_i`` relative to the references before the M-step's
    renormalisation (divide by ``new_model.norm_scale_mean`` to refer it to the new model).
    """
    n = int(images.shape[0])
    ctx = _Context(model, settings, backend)
    N, D, K, n_psi, F = ctx.n, ctx.D, ctx.K, ctx.n_psi, ctx.F
    if state is None:
        state = ParticleState.initial(n, K, settings)
    group_labels, k_out_total = output_classes(images, N, state, K, group_labels,
                                               settings.n_classes)

    if settings.norm:
        scale_all = state.norm_scale / float(model.norm_scale_mean)
        bg_all = state.background.astype(np.float64)
    else:
        scale_all = np.ones(n)
        bg_all = np.zeros(n)

    tot = _Totals.zeros(n, k_out_total * n_psi, N, k_out_total, backend, scale_all, bg_all)
    out = tot.per_image
    blocks_per_image = K * n_psi * F
    search_kept = np.empty(n)  # fraction of the (k, j, f) blocks the fast search kept

    for i0 in range(0, n, _PRESELECT_BATCH):
        i1 = min(n, i0 + _PRESELECT_BATCH)
        # masked: the background takes no part in the comparison
        X = masks.apply(np.asarray(images[i0:i1], dtype=np.float64), ctx.mask)
        X2 = (X**2).sum(axis=(1, 2))
        Xsum = X.sum(axis=(1, 2))
        scale = scale_all[i0:i1]
        bg = bg_all[i0:i1]
        X2p = X2 - 2.0 * bg * Xsum + bg**2 * D  # ||X - b||^2
        sig = _fast_significance(ctx, X, X2p, scale, bg, state.offsets[i0:i1])
        counts = sig.reshape(i1 - i0, blocks_per_image).sum(axis=1)
        search_kept[i0:i1] = counts / blocks_per_image
        # sub-batches of consecutive images with at most max_blocks blocks (>= 1 image)
        u0 = 0
        while u0 < i1 - i0:
            u1 = u0 + 1
            total = counts[u0]
            while u1 < i1 - i0 and total + counts[u1] <= settings.max_blocks:
                total += counts[u1]
                u1 += 1
            _subbatch(ctx, X[u0:u1], X2p[u0:u1], Xsum[u0:u1], scale[u0:u1], bg[u0:u1],
                      sig[u0:u1], i0 + u0, group_labels, tot, debug)
            u0 = u1

    # S_kj in real space, then M_k = sum_j MaskFill(Rot_{+psi_j}[S_kj]) (§1.8)
    S = tot.acc_direct + backend.ml2d_window_sums(tot.acc_win, ctx.w)
    ref_sum = back_rotate_sums(S.reshape(k_out_total, n_psi, N, N), ctx.psi_deg, backend)
    if settings.norm:
        ref_sum -= tot.ref_bg[:, None, None]

    loglik = out["logsum"] - ctx.noise_pixels * math.log(math.sqrt(2.0 * math.pi * ctx.sigma2))
    cls = out["best_k"] if group_labels is None else group_labels
    sums = Sums(
        ref_sum=ref_sum,
        ref_denominator=tot.ref_den,
        class_weight=tot.class_w,
        mirror_weight=tot.mirror_w,
        noise_sum=float(out["noise"].sum()),
        offset_sum=float(out["offset"].sum()),
        loglik_sum=float(loglik.sum()),
        pmax_sum=float(out["pmax"].sum()),
        best_count=np.bincount(cls, minlength=k_out_total).astype(np.float64),
        scale_sum=float(out["s_new"].sum()),
        n_images=n,
    )
    theta = total_angle(out["best_f"], ctx.psi_deg[out["best_j"]])
    tx, ty = physical_offset(out["best_f"], out["best_sx"], out["best_sy"])
    mirror = (out["best_f"] >= 4).astype(np.int64)
    psi_out, ox, oy, mir = hypothesis_to_pose(theta, mirror, tx, ty)
    assignments = {
        "class_number": cls.astype(np.int64) + 1,
        "psi_deg": psi_out,
        "origin_x_px": ox.astype(np.float64),
        "origin_y_px": oy.astype(np.float64),
        "mirror": mir,
        "max_posterior": out["pmax"],
        "loglik": loglik,
        "norm_scale": out["s_new"],
        "background": out["b_new"],
        "search_kept": search_kept,
    }
    new_state = ParticleState(
        offsets=tot.new_offsets, norm_scale=out["s_new"].copy(), background=out["b_new"].copy()
    )
    if not settings.norm:
        new_state.norm_scale[:] = 1.0
        new_state.background[:] = 0.0
    return sums, assignments, new_state


def _subbatch(ctx: _Context, X, X2p, Xsum, scale, bg, sig, first, group_labels, tot: _Totals,
              debug=None) -> None:
    """E-step of a few images whose significant blocks fit in ``max_blocks`` (adds to ``tot``)."""
    out, new_offsets = tot.per_image, tot.new_offsets
    be = ctx.backend
    st = ctx.settings
    N, F, n_psi, w = ctx.n, ctx.F, ctx.n_psi, ctx.w
    m = X.shape[0]
    Xc = X.astype(ctx.dtype)
    Xf = be.permute_images(Xc, FLIP_MATRICES[:F]).reshape(m * F, N, N)  # G_f X
    spec = be.rfft2(Xc)  # FFT(X); FFT(G_f X) are permutations of it
    ii, kk, jj, ff = np.nonzero(sig)  # image-major block list
    nb = ii.size
    img_ptr = np.searchsorted(ii, np.arange(m + 1)).astype(np.int64)
    blk_x = ii * F + ff
    blk_b = kk * n_psi + jj
    W = 2 * w + 1
    if ctx.corr_buf.shape[0] < nb:  # buffers reused by the sub-batches (no page faults)
        ctx.corr_buf = np.empty((nb, W, W), dtype=ctx.dtype)
        ctx.gamma_buf = np.empty((nb, W, W))
    s_blk = scale[ii]
    # d_h = const - s_i c_kjf(s), const = 1/2 (||X - b||^2 + s^2 A2_k) + s b Bsum_kj (§1.13)
    const = 0.5 * (X2p[ii] + s_blk**2 * ctx.bank.A2[kk]) + s_blk * bg[ii] * ctx.bank.Bsum[kk, jj]
    # c_kjf(s) on the window, FFT(G_f X) conj(FFT(B_kj)) -> inverse, fused (§1.7)
    xops = be.ml2d_permuted_operands(spec, FLIP_MATRICES[:F], N)  # FFT(G_f X)
    corr = be.ml2d_block_correlations(
        xops,
        ctx.bref,
        blk_x,
        blk_b,
        w,
        out=ctx.corr_buf[:nb],
    )
    res = be.ml2d_block_posteriors(
        corr,
        const,
        s_blk,
        img_ptr,
        ctx.log_prior_kf[kk, ff],
        ctx.log_prior_shift,
        ctx.shift_r2,
        ctx.sigma2,
        st.block_skip,
        st.entry_cutoff,
        gamma_buffer=ctx.gamma_buf,
    )
    kept, gamma, wsum, count = res.kept, res.gamma, res.wsum, res.count
    sl = slice(first, first + m)
    if debug is not None:
        gamma_all = np.zeros((nb, W, W))
        gamma_all[kept] = gamma
        for name, v in (
            ("image", first + ii),
            ("k", kk),
            ("j", jj),
            ("f", ff),
            ("gamma", gamma_all),
        ):
            debug.setdefault(name, []).append(v)

    # per-image results and the norm update (§1.13)
    bb = res.best_block
    out["best_k"][sl] = kk[bb]
    out["best_j"][sl] = jj[bb]
    out["best_f"][sl] = ff[bb]
    out["best_sx"][sl] = ctx.sx[res.best_shift]
    out["best_sy"][sl] = ctx.sy[res.best_shift]
    out["pmax"][sl] = res.pmax
    out["logsum"][sl] = res.logsum
    out["noise"][sl] = res.noise
    out["offset"][sl] = res.offset
    if st.norm:
        E_A2 = np.bincount(ii, wsum * ctx.bank.A2[kk], minlength=m)
        E_Bsum = np.bincount(ii, wsum * ctx.bank.Bsum[kk, jj], minlength=m)
        s_new, b_new = _norm_update(ctx, X2p, Xsum, scale, bg, res.noise, E_A2, E_Bsum)
    else:
        s_new, b_new = np.ones(m), np.zeros(m)
    out["s_new"][sl] = s_new
    out["b_new"][sl] = b_new

    # class / mirror weights and reference denominators (§1.6.3, §1.8)
    k_out = kk if group_labels is None else group_labels[first + ii]
    mu = ff >= 4
    K_out = tot.class_w.shape[0]
    tot.class_w += np.bincount(k_out[~mu], wsum[~mu], minlength=K_out)
    tot.mirror_w += np.bincount(k_out[mu], wsum[mu], minlength=K_out)
    if st.norm:
        tot.ref_den += np.bincount(k_out, wsum * s_new[ii] ** 2, minlength=K_out)
        tot.ref_bg += np.bincount(k_out, wsum * s_new[ii] * b_new[ii], minlength=K_out)
    else:
        tot.ref_den += np.bincount(k_out, wsum, minlength=K_out)

    # S_kj += sum_{f,s} s_i gamma (G_f X)(. + s): direct shifts or FFT of the weight map (§1.7)
    # (rows of the compact gamma: the blocks in ``kept``)
    key = k_out * n_psi + jj
    blk_scale = s_new[ii]
    cnt = count[kept]
    direct = np.flatnonzero((cnt > 0) & (cnt <= st.direct_max_entries))
    spectral = np.flatnonzero(cnt > st.direct_max_entries)
    if direct.size:
        b = kept[direct]
        be.ml2d_accumulate_direct(
            tot.acc_direct, Xf, gamma[direct], key[b], blk_x[b], blk_scale[b], w
        )
    if spectral.size:
        b = kept[spectral]
        be.ml2d_accumulate_windows(
            tot.acc_win, gamma, xops, key[b], blk_x[b], blk_scale[b], w, gamma_rows=spectral
        )

    # fast mode: optimal physical offset per (class, mirror) among the computed blocks (§1.12)
    if group_labels is None:
        kmu = (ii * ctx.K + kk) * 2 + mu
        order = np.lexsort((-res.logmax, kmu))
        first_of = order[np.r_[True, kmu[order][1:] != kmu[order][:-1]]]
        bsx = ctx.sx[res.argmax[first_of]]
        bsy = ctx.sy[res.argmax[first_of]]
        tx, ty = physical_offset(ff[first_of], bsx, bsy)
        rows = first + ii[first_of]
        new_offsets[rows, kk[first_of], mu[first_of].astype(np.int64), 0] = tx
        new_offsets[rows, kk[first_of], mu[first_of].astype(np.int64), 1] = ty
