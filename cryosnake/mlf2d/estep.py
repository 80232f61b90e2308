"""MLF2D E-step over one chunk of particles (spec ``algorithms.md`` §2.5, §2.7, §2.8).

Hypotheses ``h = (k, j, f, u)`` as in ML2D (class, reference angle ``psi_j``, exact flip ``f``)
with the **physical** particle offset ``u``: the image is centred (``Sh_{-u}``), then flipped
(``G_f``), and compared with the rotated reference ``B_kj = Rot_{-psi_j} A_k`` on the Fourier
points ``P`` of the iteration (spec §2.4; :mod:`.fourier`):

    D_h = sum_{k in P} | FT(G_f Sh_{-u} X)(k) - CTF_i(F_f k) B^_kj(k) |^2 / sigma^2_g(l(k))
        = X2w_i + E_ifkj - 2 Re sum_P Z_t(k) conj(B^_kj(k)) exp(2 pi i (F_f k).v / N)

(complex Gaussian noise with ``E|N|^2 = sigma^2``, trap 2). ``Z_t`` is the centred row of the
triple ``t = (i, k, f)``: the image centred on the stored offset ``t_ikmu``, flipped and
weighted by ``CTF / sigma^2`` (:func:`~cryosnake.kernels.cpu.mlf2d_centred`); ``X2w`` and
``E = sum_P CTF^2 |B^|^2 / sigma^2`` do not depend on the offset. The offsets ``v`` of the
search disc enter through ``Q_k[(v, j), k] = conj(B^_kj(k)) exp(2 pi i k.v / N)``: since
``(F_f k).v = k.(F_f^T v)`` and the disc is invariant under the flips, flip ``f`` uses the
columns of ``Q_k`` at the permuted offsets ``F_f^T v``. So every cross term of a batch is one
real matrix product per class, ``[Re Z | Im Z] @ [Re Q_k ; -Im Q_k]``, on the points inside
the resolution limit only. The centred rows stay complex and enter a product through their
real view ``[Re Z_0, Im Z_0, Re Z_1, ...]`` (no split copies): the operator of the cross terms
interleaves ``Re Q_k`` and ``-Im Q_k`` by rows, and a real weight matrix times the real view of
a complex matrix is the real view of its complex product. These products, the energies ``E``
and those of the sufficient statistics run through the backend's ``batched_matmul`` (cuBLAS
with the cuda backend); the operators ``Q_k`` and the reference powers are backend handles
(``device_operand``), uploaded once per call.

Translations (limited search, §2.7, Decisions): per image, class and mirror family a stored
physical offset ``t_ikmu``; the searched offsets are ``u = t + v``, ``|v| <= search_shift``.
Two stages (§2.8) with ``fast``: stage 1 evaluates every ``(k, f, j)`` at ``v = 0``; stage 2
evaluates all ``v`` of the blocks whose stage-1 weight is at least ``fast_C`` times the best of
their ``(k, mu)`` family. Without ``fast``, and for a fresh state (no stored offsets yet:
iterations 0 and 1 of a run; as ML2D's fast mode, whose first iteration is complete), every
block gets all ``v``. All ``D`` are computed first and
exponentiated against their **true** minimum (no zeroing of translations that beat stage 1).
Blocks not taken to stage 2 would fall under the skipping rule anyway (their weight is below
``1e-12`` of their family's best) and are left out.

Sufficient statistics (:class:`.MLF2DSums`) on the points with ``l <= l_ext``, from the
triples with any weight: the CTF- and noise-weighted aligned images per ``(k, j)``
(back-rotated to the class frame), the Wiener denominators, the expected residual power per
defocus group and shell, class/mirror weights, offsets, LL. The new stored offset of each
``(k, mu)`` is the one of its best hypothesis.
"""

from __future__ import annotations

import math

import numpy as np

from cryosnake import masks
from cryosnake.classify2d.classes import output_classes
from cryosnake.classify2d.hypotheses import (
    FLIP_MATRICES,
    hypothesis_log_priors,
    log_offset_prior,
    psi_grid,
    total_angle,
)
from cryosnake.classify2d.poses import hypothesis_to_pose
from cryosnake.classify2d.state import ParticleState
from cryosnake.kernels import cpu
from cryosnake.kernels.host import add_rows, key_runs, sort_by_key

from .fourier import PointSet, scatter_points, search_disc, translation_table, wrap_offset
from .groups import flipped_ctf, ring_ctf2
from .model import MLF2DModel
from .settings import MLF2DSettings
from .sums import MLF2DSums

_D_ELEMENTS = 1 << 23  # bound on the stored D / gamma values of one image batch


class _Context:
    """Per-call constants: point set, flip tables, reference bank and its offset operators,
    priors, noise weights; ``two_stage``: the search of the fast mode (§2.8)."""

    def __init__(self, model: MLF2DModel, settings: MLF2DSettings, backend, two_stage: bool):
        self.backend = backend
        self.settings = settings
        self.two_stage = two_stage
        self.n = model.image_size
        self.K = model.n_classes
        self.F = settings.n_flips
        self.dtype = settings.real_dtype
        self.cdtype = np.complex64 if self.dtype == np.float32 else np.complex128
        self.psi_deg, _ = psi_grid(settings.psi_step)
        self.n_psi = len(self.psi_deg)
        self.sampling = float(model.sampling)
        self.mask = masks.particle_mask(self.n, settings.particle_diameter, self.sampling)
        self.pts = pts = PointSet.build(self.n, model.likelihood_shell, model.extension_shell)
        self.P = pts.n_prob
        self.L = pts.n_shells_ext
        self.tables = pts.flip_tables(self.F)
        self.tw = translation_table(self.n)
        # search disc, its phases exp(2 pi i k.v / N) and, per flip, the offset v whose F_f^T v
        # is disc[w] (vperm_inverse[f, w])
        self.disc = search_disc(settings.search_shift)
        self.V = len(self.disc)
        self.vphase = np.exp(2j * np.pi * (pts.kx[None] * self.disc[:, :1]
                                           + pts.ky[None] * self.disc[:, 1:]) / self.n)
        index = {tuple(v): a for a, v in enumerate(self.disc)}
        moved = np.einsum("fba,vb->fva", FLIP_MATRICES[: self.F], self.disc)  # F_f^T v
        self.vperm_inverse = np.argsort(
            np.array([[index[tuple(v)] for v in fv] for fv in moved]), axis=1)  # [F, V]
        # reference bank B^_kj on the points (no mask, §2.7), energy-equalised over P and Q
        refs = np.asarray(model.references, dtype=np.float64)
        rot = backend.rotate_images(np.repeat(refs, self.n_psi, axis=0),
                                    np.tile(-self.psi_deg, self.K), order=3)
        bhat = backend.rfft2(rot)[..., np.mod(pts.ky, self.n), pts.kx]
        bhat = bhat.reshape(self.K, self.n_psi, pts.n_points)
        energy = (np.abs(bhat) ** 2).sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where(energy > 0, np.sqrt(energy[:, :1] / energy), 0.0)
        self.bhat = bhat * factor[:, :, None]
        self.bpow = np.abs(self.bhat) ** 2  # [K, n_psi, Np]
        # backend handles: |B^|^2 transposed on the P points [P, K n_psi], and on all points
        # [K n_psi, Np]
        self.bpow_t = backend.device_operand(
            self.bpow[:, :, : self.P].reshape(self.K * self.n_psi, self.P).T)
        self.bpow_all = backend.device_operand(self.bpow.reshape(self.K * self.n_psi, -1))
        self._operators: dict = {}
        self._full_operators: dict = {}
        # priors: class x mirror family per flip, and the offset prior's normalisation
        self.log_prior_kf = hypothesis_log_priors(model, self.F)
        self.xi = float(model.sigma_offset)
        self.log_norm = -float(log_offset_prior(self.xi, self.n, 0)[0, 0]) if self.xi > 0 else 0
        # noise: 1 / sigma^2_g on the points, and sum_P log(pi sigma^2) per group
        s2 = model.noise_spectra[:, pts.shell]  # [G, Np]
        self.inv_s2 = 1.0 / s2
        self.logdet = np.log(np.pi * s2[:, : self.P]).sum(axis=1)
        self.noise_ext = model.noise_spectra[:, : self.L]
        self.onehot = pts.shell_onehot
        # point -> shell on the real views of two complex rows a, b: the elementwise product
        # of the views times onehot_ri is Re(a b) = Re a Re b - Im a Im b per shell
        self.onehot_ri = np.stack([self.onehot, -self.onehot], axis=1).reshape(
            2 * pts.n_points, self.L)

    def offset_r2(self, u: np.ndarray) -> np.ndarray:
        """``|u|^2`` (px^2, float64) of physical offsets ``u`` ``[..., 2]``, wrapped."""
        w = wrap_offset(u, self.n)
        return (w * w).sum(axis=-1).astype(np.float64)

    def log_prior_offset(self, r2: np.ndarray) -> np.ndarray:
        """``log P(u)`` of physical offsets of squared radius ``r2`` (:meth:`offset_r2`,
        wrapped; Gaussian normalised over the N x N grid, a delta at 0 when ``xi = 0``; spec
        §1.4, §2.7)."""
        if self.xi <= 0:
            return np.where(r2 == 0, 0.0, -np.inf)
        return -r2 / (2.0 * self.xi**2) - self.log_norm

    def operator(self, k: int):
        """``Q_k[p, (v, j)]`` (:meth:`full_operator`) on the ``P`` points as one real matrix
        ``[2P, V n_psi]`` (``dtype``; the ``v = 0`` columns first) whose rows ``2p, 2p + 1``
        are ``Re Q_k`` and ``-Im Q_k`` at point ``p``: the real view of centred rows times it
        is ``Re sum_P Z Q_k``. A backend handle (``device_operand``), cached as
        :meth:`full_operator`."""
        q = self._operators.get(k)
        if q is None:
            full = self.full_operator(k)[:, : self.P]  # [V n_psi, P] complex
            ri = np.empty((self.P, 2, full.shape[0]), self.dtype)
            ri[:, 0] = full.real.T
            ri[:, 1] = -full.imag.T
            q = self.backend.device_operand(ri.reshape(2 * self.P, full.shape[0]))
            if math.prod(q.shape) * self.K <= self.settings.work_elements:
                self._operators[k] = q
        return q

    def full_operator(self, k: int) -> np.ndarray:
        """``Q_k[(v, j), p] = conj(B^_kj(p)) exp(2 pi i k_p.v / N)`` on all ``Np`` points:
        ``[V n_psi, Np]`` ``cdtype``, a host array (the rows with weight are taken before a
        product, through its real view ``[V n_psi, 2 Np]``); cached while those of all classes
        fit in ``work_elements``."""
        q = self._full_operators.get(k)
        if q is None:
            q = (np.conj(self.bhat[k, None]) * self.vphase[:, None]).reshape(-1, self.pts.n_points)
            q = np.ascontiguousarray(q, self.cdtype)
            if 2 * q.size * self.K <= self.settings.work_elements:
                self._full_operators[k] = q
        return q

    def centred(self, xp, cw, img, flip, u) -> np.ndarray:
        """``Z`` of triples: ``[nt, Np]`` ``cdtype`` (C-contiguous, so that ``Z.view(dtype)``
        is its real view ``[nt, 2 Np]``)."""
        return np.ascontiguousarray(self.backend.mlf2d_centred(
            xp, cw, img, flip, u, self.tables, self.tw, dtype=self.cdtype))


def prepare(model: MLF2DModel, settings: MLF2DSettings, fresh: bool, backend=cpu) -> _Context:
    """What an E-step computes once per model: the rotated reference bank and its offset
    operators, priors, noise weights (:class:`_Context`). ``fresh``: for a fresh state (no
    stored offsets yet), which gets the complete search. Building it takes ~0.15 s for K = 10
    references of 64 px at 5°; a job shares it over its sub-batches (``context`` of
    :func:`estep`)."""
    return _Context(model, settings, backend, two_stage=settings.fast and not fresh)


def estep(
    images: np.ndarray,
    model: MLF2DModel,
    settings: MLF2DSettings,
    ctf=None,
    groups: np.ndarray | None = None,
    state: ParticleState | None = None,
    group_labels: np.ndarray | None = None,
    backend=cpu,
    debug: dict | None = None,
    context: _Context | None = None,
) -> tuple[MLF2DSums, dict, ParticleState]:
    """One MLF2D E-step over a chunk of particles. Returns ``(sums, assignments, new_state)``.

    * ``images``: ``[n, N, N]``; ``model``: :class:`.MLF2DModel`; ``settings``:
      :class:`.MLF2DSettings`.
    * ``ctf``: :class:`cryosnake.ctf.CTFParams` of these ``n`` particles (``None``: ``c = 1``);
      ``groups``: ``int [n]`` defocus group of each particle (``None``: all in group 0).
    * ``state``: :class:`~cryosnake.classify2d.state.ParticleState` whose ``offsets[i, k, mu]``
      are the stored physical offsets (px, ``(x, y)``); ``None``: all zero (spec §2.7) and the
      complete search (no stage 1).
    * ``group_labels``: "generate classes" iteration 0 (one-reference model): the statistics of
      particle ``i`` go to output class ``group_labels[i]`` (``settings.n_classes`` classes);
      the returned state then has zero offsets (iteration 1 starts afresh, as in the workflow).
    * ``debug``: if a dict, receives per-triple lists ``image``, ``k``, ``f``, the physical
      offsets ``uv`` ``[nt, V, 2]`` of ``gamma`` and ``D`` ``[nt, V, n_psi]`` (tests).
    * ``context``: :func:`prepare` of the same ``model``, ``settings`` and ``backend`` (and a
      fresh ``state`` or not, as here), to share over the sub-batches of a chunk; ``None``:
      prepared here.

    ``assignments`` has the keys of ML2D's (``class_number``, ``psi_deg``, ``origin_x_px``,
    ``origin_y_px``, ``mirror``, ``max_posterior``, ``loglik``, ``norm_scale`` = 1,
    ``background`` = 0) in the output pose convention of :mod:`cryosnake.classify2d.poses`, and
    ``search_kept``: the fraction of the image's ``(k, f, psi_j)`` blocks taken to stage 2
    (1 without the fast search).
    """
    n = int(images.shape[0])
    ctx = prepare(model, settings, state is None, backend) if context is None else context
    if ctx.two_stage != (settings.fast and state is not None) or ctx.settings != settings:
        raise ValueError("context: prepared for other settings or another kind of state")
    N, K, F, n_psi = ctx.n, ctx.K, ctx.F, ctx.n_psi
    groups = np.zeros(n, np.int64) if groups is None else np.asarray(groups, np.int64)
    if n and groups.max() >= model.n_groups:
        raise ValueError(f"group labels reach {groups.max()}, the model has {model.n_groups}")
    if state is None:
        state = ParticleState(np.zeros((n, K, 2, 2), np.int32), np.ones(n), np.zeros(n))
    group_labels, k_out_total = output_classes(images, N, state, K, group_labels,
                                               settings.n_classes)

    L_all = N // 2
    acc = {
        "num": np.zeros((k_out_total, n_psi, ctx.pts.n_points), complex),
        "den": np.zeros((k_out_total, L_all)),
        "den_points": np.zeros((k_out_total, ctx.pts.n_points if settings.point_denominator
                                else 0)),
        "class_w": np.zeros(k_out_total),
        "mirror_w": np.zeros(k_out_total),
        "noise": np.zeros((model.n_groups, L_all)),
        "group_count": np.bincount(groups, minlength=model.n_groups).astype(np.float64),
    }
    out = {
        "k": np.zeros(n, np.int64),
        "j": np.zeros(n, np.int64),
        "f": np.zeros(n, np.int64),
        "u": np.zeros((n, 2), np.int64),
        "pmax": np.zeros(n),
        "loglik": np.zeros(n),
        "offset": np.zeros(n),
        "search_kept": np.zeros(n),
    }
    new_offsets = state.offsets.astype(np.int64).copy()
    per_image = K * F  # triples
    batch = max(1, min(_D_ELEMENTS // max(1, per_image * ctx.V * n_psi),
                       settings.work_elements // max(1, per_image * 2 * ctx.pts.n_points)))
    for b0 in range(0, n, batch):
        b1 = min(n, b0 + batch)
        sub = None if ctf is None else ctf.subset(np.arange(b0, b1))
        _batch(ctx, np.asarray(images[b0:b1], dtype=np.float64), sub, groups[b0:b1],
               state.offsets[b0:b1], b0,
               None if group_labels is None else group_labels[b0:b1], acc, out, new_offsets,
               debug)

    # F_kj(p) back to real space, rotated by +psi_j into the class frame (§2.9)
    spectra = scatter_points(acc["num"], ctx.pts.kx, ctx.pts.ky, N)
    S = backend.irfft2(spectra.reshape(k_out_total * n_psi, N, N // 2 + 1), N)
    rot = backend.rotate_images(S, np.tile(ctx.psi_deg, k_out_total), order=3)
    cls = out["k"] if group_labels is None else group_labels
    sums = MLF2DSums(
        ref_sum=rot.reshape(k_out_total, n_psi, N, N).sum(axis=1),
        ref_denominator=acc["den"],
        point_denominator=(scatter_points(acc["den_points"], ctx.pts.kx, ctx.pts.ky, N).real
                           if settings.point_denominator else acc["den_points"]),
        class_weight=acc["class_w"],
        mirror_weight=acc["mirror_w"],
        noise_sum=acc["noise"],
        group_count=acc["group_count"],
        offset_sum=float(out["offset"].sum()),
        loglik_sum=float(out["loglik"].sum()),
        pmax_sum=float(out["pmax"].sum()),
        best_count=np.bincount(cls, minlength=k_out_total).astype(np.float64),
        n_images=n,
    )
    theta = total_angle(out["f"], ctx.psi_deg[out["j"]])
    mirror = (out["f"] >= 4).astype(np.int64)
    psi_out, ox, oy, mir = hypothesis_to_pose(theta, mirror, out["u"][:, 0], out["u"][:, 1])
    assignments = {
        "class_number": cls.astype(np.int64) + 1,
        "psi_deg": psi_out,
        "origin_x_px": ox,
        "origin_y_px": oy,
        "mirror": mir,
        "max_posterior": out["pmax"],
        "loglik": out["loglik"],
        "norm_scale": np.ones(n),
        "background": np.zeros(n),
        "search_kept": out["search_kept"],
    }
    if group_labels is not None:
        new_offsets = np.zeros((n, k_out_total, 2, 2), np.int64)
    new_state = ParticleState(new_offsets.astype(np.int32), np.ones(n), np.zeros(n))
    return sums, assignments, new_state


def _cross(ctx: _Context, z, kk, n_offsets: int) -> np.ndarray:
    """``Re sum_P Z_t conj(B^_kj) exp(2 pi i k.v / N)`` for the first ``n_offsets`` offsets
    of the disc, in the frame of flip 0: ``[nt, n_offsets, n_psi]`` (one real product per
    class: the real view of the centred rows ``z`` times :meth:`_Context.operator`)."""
    P2, ncol = 2 * ctx.P, n_offsets * ctx.n_psi
    zf = z.view(ctx.dtype)
    cross = np.empty((len(kk), ncol), dtype=ctx.dtype)
    for k in np.unique(kk):
        sel = np.flatnonzero(kk == k)
        cross[sel] = ctx.backend.batched_matmul(zf[sel, :P2], ctx.operator(k)[:, :ncol])
    return cross.reshape(len(kk), n_offsets, ctx.n_psi)


def _batch(ctx: _Context, X, ctf, groups, offsets, first, labels, acc, out, new_offsets,
           debug) -> None:
    """E-step of a batch of images (in place into ``acc``, ``out``, ``new_offsets``)."""
    st = ctx.settings
    m = X.shape[0]
    K, F, n_psi, P, pts = ctx.K, ctx.F, ctx.n_psi, ctx.P, ctx.pts
    X = masks.apply(X, ctx.mask)  # the background takes no part in the comparison
    xp = ctx.backend.rfft2(X)[..., np.mod(pts.ky, ctx.n), pts.kx]  # [m, Np] complex128
    c = flipped_ctf(ctf, pts.kx, pts.ky, ctx.n, ctx.sampling, F, st.phase_flipped)
    c = np.broadcast_to(c, (m, F, pts.n_points))
    inv_s2 = ctx.inv_s2[groups]  # [m, Np]
    cw = c * inv_s2[:, None, :]
    X2w = (np.abs(xp[:, :P]) ** 2 * inv_s2[:, :P]).sum(axis=1)
    E = ctx.backend.batched_matmul((c[:, :, :P] ** 2 * inv_s2[:, None, :P]).reshape(m * F, P),
                                   ctx.bpow_t).reshape(m, F, K, n_psi)

    # stage 1: every active (k, f) at its stored offset (v = 0)
    ii, kk, ff = np.nonzero(np.broadcast_to(np.isfinite(ctx.log_prior_kf)[None], (m, K, F)))
    mu = ff // 4
    u = offsets[ii, kk, mu].astype(np.int64)  # [nt1, 2]
    lp_trip = ctx.log_prior_kf[kk, ff]
    z = ctx.centred(xp, cw, ii, ff, u)  # [nt1, Np]
    const = X2w[ii, None] + E[ii, ff, kk]  # [nt1, n_psi]
    if ctx.two_stage:
        D1 = const - 2.0 * _cross(ctx, z, kk, 1)[:, 0]
        lw = (lp_trip + ctx.log_prior_offset(ctx.offset_r2(u)))[:, None] - D1  # [nt1, n_psi]
        fam = (ii * K + kk) * 2 + mu
        best = np.full(m * K * 2, -np.inf)
        np.maximum.at(best, fam, lw.max(axis=1))
        sig = lw >= best[fam][:, None] + math.log(st.fast_C)
    else:
        sig = np.ones((len(ii), n_psi), dtype=bool)
    out["search_kept"][first:first + m] = (np.bincount(ii, sig.sum(axis=1), minlength=m)
                                           / np.maximum(np.bincount(ii, minlength=m) * n_psi, 1))
    keep = sig.any(axis=1)
    ii, kk, ff, mu, u, lp_trip, sig, z, const = (
        a[keep] for a in (ii, kk, ff, mu, u, lp_trip, sig, z, const))
    nt = len(ii)

    # stage 2: all translations of the significant blocks; posteriors. Column w of the
    # operator is the offset v of flip f with F_f^T v = disc[w]: every array over offsets
    # stays in that frame, only the table of physical offsets is permuted.
    D = np.multiply(_cross(ctx, z, kk, ctx.V), -2.0, dtype=np.float64)
    D += const[:, None, :]
    uv = u[:, None, :] + ctx.disc[ctx.vperm_inverse[ff]]  # [nt, V, 2] physical offsets
    r2 = ctx.offset_r2(uv)  # [nt, V]
    res = ctx.backend.mlf2d_weights(D, sig, lp_trip, ctx.log_prior_offset(r2),
                                    np.searchsorted(ii, np.arange(m + 1)), st.block_skip,
                                    st.entry_cutoff, gamma_dtype=ctx.dtype)
    gamma, wsum = res.gamma, res.wsum
    if debug is not None:
        for name, v in (("image", first + ii), ("k", kk), ("f", ff), ("uv", uv),
                        ("gamma", gamma), ("D", D)):
            debug.setdefault(name, []).append(v)

    # per-image results (§2.8): best hypothesis, Pmax, LL, offset expectation
    sl = slice(first, first + m)
    bt = res.best_t
    ok = bt >= 0
    bt = np.where(ok, bt, 0)
    out["k"][sl] = np.where(ok, kk[bt], 0)
    out["f"][sl] = np.where(ok, ff[bt], 0)
    out["j"][sl] = np.where(ok, res.best_j, 0)
    out["u"][sl] = np.where(ok[:, None], wrap_offset(uv[bt, res.best_v], ctx.n), 0)
    out["pmax"][sl] = res.pmax
    out["loglik"][sl] = res.logsum - ctx.logdet[groups]
    gamma_v = gamma.reshape(-1, n_psi) @ np.ones(n_psi, gamma.dtype)  # sum over psi, [nt V]
    out["offset"][sl] = np.bincount(ii, (gamma_v.reshape(r2.shape) * r2).sum(axis=1),
                                    minlength=m)

    # class and mirror weights, Wiener denominators (§2.9)
    k_out = kk if labels is None else labels[ii]
    K_out = acc["class_w"].shape[0]
    w_trip = wsum.sum(axis=1)
    acc["class_w"] += np.bincount(k_out[mu == 0], w_trip[mu == 0], minlength=K_out)
    acc["mirror_w"] += np.bincount(k_out[mu == 1], w_trip[mu == 1], minlength=K_out)
    w_ik = np.bincount(ii * K_out + k_out, w_trip, minlength=m * K_out).reshape(m, K_out)
    c2_shell = (c[:, 0] ** 2) @ ctx.onehot / ctx.onehot.sum(axis=0)  # <CTF^2>_l  [m, L]
    acc["den"][:, : ctx.L] += w_ik.T @ (c2_shell / ctx.noise_ext[groups])
    if st.point_denominator:
        acc["den_points"] += w_ik.T @ (ring_ctf2(ctf, pts.kx, pts.ky, ctx.n, ctx.sampling)
                                       * inv_s2)

    # reference numerators and expected residual power, from the triples with any weight
    live = np.flatnonzero(w_trip > 0)
    if live.size:
        power = (np.abs(xp) ** 2) @ ctx.onehot  # sum_h gamma |X|^2 (sum gamma = 1)
        add_rows(acc["noise"][:, : ctx.L], groups, power * ok[:, None])
        _accumulate(ctx, live, z, c, groups, kk, ff, ii, k_out, gamma, wsum, acc)

    # new stored offsets: the best hypothesis of each (k, mu) (§2.8)
    if labels is None and nt:
        jt = res.logmax.argmax(axis=1)
        val = res.logmax[np.arange(nt), jt]
        fam = (ii * K + kk) * 2 + mu
        order = np.lexsort((-val, fam))
        first_of = order[np.r_[True, fam[order][1:] != fam[order][:-1]]]
        best_u = wrap_offset(uv[first_of, res.argmax[first_of, jt[first_of]]], ctx.n)
        new_offsets[first + ii[first_of], kk[first_of], mu[first_of]] = best_u


def _accumulate(ctx: _Context, live, z, c, image_group, kk, ff, ii, k_out, gamma, wsum,
                acc) -> None:
    """Reference numerators of the ``live`` triples into ``acc["num"]`` and their expected
    residual power per shell into ``acc["noise"]`` (``sum_h gamma (|CTF B^|^2 - 2 Re conj(CTF
    B^) X_trans)``; the ``|X|^2`` term is added by the caller).

    ``gamma`` is in the frame of flip 0 (column ``w`` is the offset with ``F_f^T v = disc[w]``),
    so the numerator of the triples of output class ``k`` is ``F_kj(p) = sum_w exp(2 pi i
    k_p.disc_w / N) sum_t gamma_twj Z_t(p)``, one matrix product per class. The cross term of
    triple ``t`` (compared with reference ``k'``) is ``sigma_g^2 Re sum_p Z_t(p) Y_t(p)`` per
    shell, ``Y_t = sum_(w,j) gamma_twj conj(B^_k'j) exp(2 pi i k.disc_w / N)`` (the rows of the
    offset operator on all points, :meth:`_Context.full_operator`): one product per reference,
    summed into the triple's defocus group (``image_group``: each image's, ``[m]``). Both
    products take the complex rows through their real views (a real matrix times the real view
    of a complex one is the real view of the complex product).
    """
    Np, V, n_psi, be = ctx.pts.n_points, ctx.V, ctx.n_psi, ctx.backend
    K_out = acc["num"].shape[0]
    # the live triples ordered by (reference, output class): each run of one pair, and each
    # reference's triples, are one slice (no gathered copies)
    order, pair, pair_ptr = sort_by_key(kk[live] * K_out + k_out[live])
    live = live[order]
    gp = gamma.reshape(len(gamma), V * n_psi)[live]  # dtype: the E-step's precision
    z, kk, ff, ii = (a[live] for a in (z, kk, ff, ii))
    tg = image_group[ii]  # each triple's defocus group
    zf = z.view(ctx.dtype)  # [nt, 2 Np]
    for k, a, b in zip(pair[pair_ptr[:-1]] % K_out, pair_ptr[:-1], pair_ptr[1:], strict=True):
        w = gp[a:b]
        cols = np.flatnonzero(w.any(axis=0))  # hypotheses (v, j) with any weight
        w = w if cols.size == w.shape[1] else w[:, cols]
        a_w = be.batched_matmul(w.T, zf[a:b]).view(ctx.cdtype)
        if cols.size < V * n_psi:
            a_vj = np.zeros((V * n_psi, Np), dtype=ctx.cdtype)
            a_vj[cols] = a_w
        else:
            a_vj = a_w
        acc["num"][k] += np.einsum("vp,vjp->jp", ctx.vphase, a_vj.reshape(V, n_psi, Np))
    cross = np.zeros((len(live), ctx.L))  # Re sum_(p in shell) Z_t Y_t
    ref, ref_ptr = key_runs(kk)
    for k, a, b in zip(ref, ref_ptr[:-1], ref_ptr[1:], strict=True):
        sel = slice(a, b)
        q = ctx.full_operator(k)
        w = gp[sel]
        cols = np.flatnonzero(w.any(axis=0))
        if cols.size < w.shape[1]:
            w, q = w[:, cols], q[cols]
        y = be.batched_matmul(w, q.view(ctx.dtype))  # real view of Y_t
        cross[sel] = (zf[sel] * y) @ ctx.onehot_ri
    # sum_(t, j) wsum_tj |CTF B^_kj|^2 per shell: the CTF depends on the image and flip only,
    # so the triples of one (image, flip) share it; their weights [(i, f), (k, j)] times the
    # reference powers [(k, j), p] give sum_(k, j) wsum |B^_kj|^2 per (image, flip) at once
    m, F = c.shape[:2]
    weights_if = np.zeros((m * F, ctx.K, n_psi))
    weights_if[ii * F + ff, kk] = wsum[live]  # one triple per (image, class, flip)
    energy = be.batched_matmul(weights_if.reshape(m * F, ctx.K * n_psi), ctx.bpow_all)
    noise = acc["noise"][:, : ctx.L]
    add_rows(noise, np.repeat(image_group, F), (energy * c.reshape(m * F, Np) ** 2) @ ctx.onehot)
    # - 2 sigma_g^2 sum_t cross_t: Z carries CTF / sigma^2, restore sigma^2 per group
    cross_g = np.zeros_like(noise)
    add_rows(cross_g, tg, cross)
    noise -= 2.0 * cross_g * ctx.noise_ext
