"""2D classification quality at low SNR, side by side with RELION 3.1 (a script, not a test).

Simulates particles of a real structure with RELION's own ``relion_project`` (CFTR, PDB 6MSM
from the ``MDAnalysisTests`` data, as a density map of ``--box`` px at ``--sampling`` Å/px):
``--views`` look-alike side views (rotations about the long axis in steps of ``--view-step``
degrees, at most 180° in all so that no two are mirror images), random psi, Gaussian shifts
of ``--shift`` px, white noise at each ``--snr`` (variance of the projections before any CTF,
over the box / noise variance), with and without CTF (defocus
1-3 µm, 300 kV, Cs 2.7 mm, Q0 0.1, up to 5 % astigmatism; images not phase-flipped).

Runs on the same particles every method of ``--methods`` (cryosnake settings presets, see
``METHODS``, and ``relion``: ``relion_refine`` Class2D with ``--K --iter 25 --tau2_fudge 2
--psi_step 10 --offset_range 5 --offset_step 2 --oversampling 1 --j 2`` and ``--ctf`` where
there is one; ``--relion-seed`` for its ``--random_seed``) and prints one table: ARI of the
classes against the true views, the median NCC of the class averages to the clean views (best
in-plane rotation, mirror and shift, inside a soft circular mask), the share of the largest
class, seconds per iteration and in all.
``ceiling`` is the best possible: each particle assigned to the best true view at its true
pose (ARI), and the class averages made with the true poses and classes (NCC).
``true-refs`` is the best an alignment can do: one MLF2D E-step (full search, ``--diameter``
mask, the default 20 Å limit, or ``--true-refs-limit``) against the true references -- the
clean views, or with ``--random-views`` projections of the map along ``--k`` directions
spread over a hemisphere (a direction and its opposite are mirror images) -- so the poses are
estimated as in any run; its classes are those of that E-step and its averages the M-step's.
``relion-refs`` and ``mlf2d+mask-refs`` are the same E-step (full search, mask, 20 Å) against
the final class averages of the ``relion`` or ``mlf2d+mask`` run of the same particles (run
those first): which set of references assigns the particles better, given one E-step?

``--random-views`` simulates random orientations instead (issue 19's case, e.g. ``--k 30``):
there are no discrete views, so the table gives the direction spread of the classes (median
angle between a particle's true viewing direction and its class's axis; ~57° for random
classes), the largest class share and the number of classes of 5 particles or fewer; with
``--average-resolution`` also the median and best FRC-0.5 resolution of the class averages
against the clean projections of the map they match best.

Simulations and results are cached under ``--out``; a method already run is read back
(``--rerun`` to run it again).

    python tests/benchmarks/bench_quality2d.py --n 6000 --snr 0.05 0.1 --ctf both \\
        --methods ml2d mlf2d relion
"""

from __future__ import annotations

import argparse
import bz2
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relion_sim import (  # noqa: E402
    average_resolutions,
    class_scores,
    hemisphere_directions,
    particle_table,
    relion_class2d,
    relion_project,
    soft_mask,
    structure_map,
)

from cryosnake.classify2d.poses import apply_pose  # noqa: E402
from cryosnake.ctf import CTFParams, ctf_from_frequencies  # noqa: E402
from cryosnake.io import mrc  # noqa: E402
from cryosnake.ml2d import ML2DSettings  # noqa: E402
from cryosnake.ml2d.run import run_ml2d  # noqa: E402
from cryosnake.mlf2d import MLF2DSettings  # noqa: E402
from cryosnake.mlf2d.run import run_mlf2d  # noqa: E402

#: cryosnake presets: name -> (fourier?, settings overrides). ``ctf_correction`` follows the
#: data (True where there is a CTF); ``phase_flipped`` is False (RELION particles).
#: ``DIAMETER`` stands for ``--diameter`` (the particle diameter in Å, RELION's mask too).
DIAMETER = "diameter"
METHODS: dict[str, tuple[bool, dict]] = {
    "ml2d": (False, {}),
    "ml2d+mask": (False, {"particle_diameter": DIAMETER}),
    "mlf2d": (True, {}),
    "mlf2d+mask": (True, {"particle_diameter": DIAMETER}),
    "mlf2d+class": (True, {"class_filter": True}),
    "mlf2d+mask+class": (True, {"particle_diameter": DIAMETER, "class_filter": True}),
    "mlf2d+mask+res": (True, {"particle_diameter": DIAMETER, "adaptive_resolution": True}),
    "mlf2d+mask+class+res": (True, {"particle_diameter": DIAMETER, "class_filter": True,
                                    "adaptive_resolution": True}),
    # the adaptive limit free to grow to Nyquist; a fixed 12 Å limit
    "mlf2d+mask+res0": (True, {"particle_diameter": DIAMETER, "adaptive_resolution": True,
                               "high_res_limit": 0.0}),
    "mlf2d+mask+12A": (True, {"particle_diameter": DIAMETER, "high_res_limit": 12.0}),
    # the adaptive limit to Nyquist with RELION's margin: the likelihood takes 10 shells
    # beyond the last one where the class averages' SSNR >= 1 (RELION's ``incr_size``)
    "mlf2d+mask+res0+b10": (True, {"particle_diameter": DIAMETER, "adaptive_resolution": True,
                                   "high_res_limit": 0.0, "likelihood_shells": 10}),
    # the CTF correction with each point's own CTF^2 (ring average at its radius)
    "mlf2d+mask+pt": (True, {"particle_diameter": DIAMETER, "point_denominator": True}),
    "mlf2d+mask+res0+pt": (True, {"particle_diameter": DIAMETER, "adaptive_resolution": True,
                                  "high_res_limit": 0.0, "point_denominator": True}),
    # the fast search's significance constant (stage 2 for the rotations within fast_C of
    # the best of their class and mirror family)
    "mlf2d+mask+C12": (True, {"particle_diameter": DIAMETER, "fast_C": 1e-12}),
    "mlf2d+mask+C5": (True, {"particle_diameter": DIAMETER, "fast_C": 1e-5}),
    "mlf2d+mask+C4": (True, {"particle_diameter": DIAMETER, "fast_C": 1e-4}),
    "mlf2d+mask+full": (True, {"particle_diameter": DIAMETER, "fast": False}),
    # started from the true references (``true_references``) instead of "generate classes":
    # does the likelihood prefer the true classes (compare ``loglik`` with ``mlf2d+mask``)?
    "mlf2d+mask+truestart": (True, {"particle_diameter": DIAMETER}),
    # started from projections of ``--start-volume`` (e.g. an initial volume from another
    # run) along the same ``--k`` directions: does a rough 3D start give purer classes?
    "mlf2d+mask+volstart": (True, {"particle_diameter": DIAMETER}),
    # re-seeding of small classes (issue 19's default 0.25) lower, and off
    "mlf2d+mask+rs10": (True, {"particle_diameter": DIAMETER, "reseed_fraction": 0.1}),
    "mlf2d+mask+noreseed": (True, {"particle_diameter": DIAMETER, "reseed_fraction": 0.0}),
    # RELION's nominal in-plane step (10 degrees) instead of the seed's 5
    "mlf2d+mask+psi10": (True, {"particle_diameter": DIAMETER, "psi_step": 10.0}),
    # the workflow's default mask (``auto``: 0.9 of the box), psi 5 and 10 degrees
    "mlf2d+auto": (True, {"particle_diameter": "auto"}),
    "mlf2d+auto+psi10": (True, {"particle_diameter": "auto", "psi_step": 10.0}),
}


def find_pdb() -> Path:
    """6MSM from the MDAnalysisTests data (``pip download --no-deps MDAnalysisTests``)."""
    try:
        import MDAnalysisTests  # noqa: F401
        from MDAnalysisTests.datafiles import PDB_6MSM  # type: ignore[attr-defined]

        return Path(PDB_6MSM)
    except Exception:
        pass
    for cand in (Path("/tmp/bench/6msm.pdb"), Path.cwd() / "6msm.pdb"):
        if cand.exists():
            return cand
    raise SystemExit("need 6msm.pdb: pip download --no-deps MDAnalysisTests, extract "
                     "MDAnalysisTests/data/6msm.pdb.bz2 and bunzip2 it into the current folder")


def simulate(folder: Path, args, snr: float, with_ctf: bool) -> dict:
    """Particles, truth and clean views of one case (cached in ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    truth_file = folder / "truth.npz"
    if truth_file.exists():
        t = np.load(truth_file)
        return {k: t[k] for k in t.files} | {"star": folder / "particles.star"}
    rng = np.random.default_rng(args.seed)
    vol_file = folder.parent / "volume.mrc"
    if not vol_file.exists():
        pdb = find_pdb()
        if pdb.suffix == ".bz2":
            (folder.parent / "6msm.pdb").write_bytes(bz2.decompress(pdb.read_bytes()))
            pdb = folder.parent / "6msm.pdb"
        mrc.write_volume(vol_file, structure_map(pdb, args.box, args.sampling), args.sampling)
    n, box, s = args.n, args.box, args.sampling
    if not args.random_views:
        view_rot = np.arange(args.views) * args.view_step
        views = relion_project(vol_file, particle_table(view_rot, np.full(args.views, 90.0),
                                                        np.zeros(args.views),
                                                        np.zeros((args.views, 2)), s, box),
                               folder / "views", ctf=False)
        view = rng.integers(0, args.views, n)
        rot, tilt = view_rot[view], np.full(n, 90.0)
    else:  # random orientations, uniform on the sphere
        views, view = np.zeros((0, box, box), np.float32), np.zeros(n, int)
        rot = rng.uniform(0.0, 360.0, n)
        tilt = np.degrees(np.arccos(rng.uniform(-1.0, 1.0, n)))
    psi = rng.uniform(0.0, 360.0, n)
    origin = rng.normal(0.0, args.shift, (n, 2))
    ctf = None
    if with_ctf:
        du = rng.uniform(10000.0, 30000.0, n)
        ctf = {"defocus_u": du, "defocus_v": du * (1.0 - rng.uniform(0.0, 0.05, n)),
               "defocus_angle": rng.uniform(0.0, 180.0, n)}
    blocks = particle_table(rot, tilt, psi, origin, s, box, ctf)
    clean = relion_project(vol_file, blocks, folder / "clean", ctf=False)
    noise = rng.normal(0.0, 1.0, clean.shape)
    sigma = float(np.sqrt(clean.var() / snr))  # SNR of the signal before the CTF
    if with_ctf:
        clean = relion_project(vol_file, blocks, folder / "clean_ctf", ctf=True)
    images = (clean + sigma * noise).astype(np.float32)
    mrc.write_stack(folder / "particles.mrcs", images, s)
    blocks = particle_table(rot, tilt, psi, origin, s, box, ctf,
                            stack=str(folder / "particles.mrcs"))
    # RELION reads this; cryosnake gets the same images and CTF in memory
    starfile.write(blocks, folder / "particles.star", overwrite=True)
    np.savez(truth_file, view=view, rot=rot, tilt=tilt, psi=psi, origin=origin, views=views,
             sigma=sigma,
             **({} if ctf is None else {f"ctf_{k}": v for k, v in ctf.items()}))
    return simulate(folder, args, snr, with_ctf)


def ctf_of(case: dict) -> CTFParams | None:
    if "ctf_defocus_u" not in case:
        return None
    n = len(case["view"])
    return CTFParams(case["ctf_defocus_u"], case["ctf_defocus_v"], case["ctf_defocus_angle"],
                     np.full(n, 300.0), np.full(n, 2.7), np.full(n, 0.1))


def ceiling(case: dict, images: np.ndarray, args) -> dict:
    """Best possible: true poses and views (ARI: each particle to the view whose projection
    at its true pose, times its CTF, is nearest; averages: true classes and poses, Wiener
    CTF-corrected with the true signal and noise powers)."""
    n, box = images.shape[0], images.shape[-1]
    views, view = case["views"], case["view"]
    aligned = apply_pose(images, case["psi"], case["origin"][:, 0], case["origin"][:, 1], 0)
    ctf = ctf_of(case)
    fy = np.fft.fftfreq(box)[:, None] / args.sampling
    fx = np.fft.rfftfreq(box)[None, :] / args.sampling
    spec = np.fft.rfft2(aligned)
    noise_power = case["sigma"] ** 2 * box * box
    vspec = np.fft.rfft2(views)
    dist = np.zeros((n, len(views)))
    sums = np.zeros((len(views), box, box // 2 + 1), complex)
    dens = np.zeros((len(views), box, box // 2 + 1))
    for b0 in range(0, n, 500):
        sl = slice(b0, min(n, b0 + 500))
        if ctf is None:
            c = np.ones((sl.stop - sl.start, box, box // 2 + 1))
        else:
            # the aligned particle Y(r) = X(R(psi) r) has the CTF k -> CTF(R(psi) k)
            c = np.empty((sl.stop - sl.start, box, box // 2 + 1))
            for j, i in enumerate(range(sl.start, sl.stop)):
                a = np.deg2rad(case["psi"][i])
                c[j] = ctf_from_frequencies(np.cos(a) * fx + np.sin(a) * fy,
                                            -np.sin(a) * fx + np.cos(a) * fy,
                                            ctf.defocus_u[i], ctf.defocus_v[i],
                                            ctf.defocus_angle[i], 300.0, 2.7, 0.1)
        model = c[:, None] * vspec[None]
        dist[sl] = (np.abs(spec[sl, None] - model) ** 2).sum(axis=(2, 3))
        for k in range(len(views)):
            sel = view[sl] == k
            sums[k] += (c[sel] * spec[sl][sel]).sum(0)
            dens[k] += (c[sel] ** 2).sum(0)
    labels = dist.argmin(axis=1)
    signal = np.abs(vspec) ** 2
    averages = np.fft.irfft2(sums / (dens + noise_power / np.maximum(signal, 1e-12)),
                             s=(box, box))
    return {"labels": labels + 1, "averages": averages}


def true_references(case: dict, args, snr: float, volume: Path | None = None) -> np.ndarray:
    """The clean views, or projections of the map (or of ``volume``) along ``--k`` directions
    on a Fibonacci hemisphere (random views), scaled like the particles' clean signal."""
    if not args.random_views and volume is None:
        return np.asarray(case["views"], dtype=np.float64)
    from cryosnake.volume3d.projector import project

    vol = mrc.read(volume or args.out / "volume.mrc").astype(np.float32)
    rot, tilt = hemisphere_directions(args.k)
    refs = np.stack([project(vol, r, t, 0.0).reshape(args.box, args.box)
                     for r, t in zip(rot, tilt, strict=True)]).astype(np.float64)
    return refs / refs.std() * float(case["sigma"]) * np.sqrt(snr)


def run_true_references(case: dict, images, args, snr: float, with_ctf: bool) -> dict:
    """One E-step against the true references (``true-refs``, module docstring)."""
    return run_given_references(true_references(case, args, snr), case, images, args, with_ctf,
                                args.true_refs_limit)


def run_given_references(refs: np.ndarray, case: dict, images, args, with_ctf: bool,
                         limit: float = 20.0) -> dict:
    """One MLF2D E-step (full search, ``--diameter`` mask, likelihood to ``limit`` Å; 0 =
    Nyquist) against ``refs`` (``true-refs``, ``relion-refs``, ``mlf2d+mask-refs``, module
    docstring)."""
    settings = MLF2DSettings(n_classes=len(refs), max_iterations=1, fast=False,
                             ctf_correction=with_ctf, phase_flipped=False,
                             particle_diameter=args.diameter, high_res_limit=limit)
    start = time.perf_counter()
    model, assignments, _ = run_mlf2d(images, ctf_of(case), args.sampling, settings,
                                      references=np.asarray(refs, dtype=np.float64))
    return {"labels": assignments["class_number"], "averages": model.references,
            "seconds": time.perf_counter() - start, "iteration_seconds": np.zeros(0)}


def run_cryosnake(name: str, case: dict, images, args, snr: float, with_ctf: bool) -> dict:
    fourier, overrides = METHODS[name]
    overrides = {k: args.diameter if v == DIAMETER else v for k, v in overrides.items()}
    common = dict(n_classes=args.k, max_iterations=args.iterations, seed=args.cryosnake_seed)
    history_times = []
    start = time.perf_counter()

    def tick(model, assignments):
        history_times.append(time.perf_counter())

    if fourier:
        settings = MLF2DSettings(**common, ctf_correction=with_ctf, phase_flipped=False,
                                 **overrides)
        refs = None
        if name.endswith("+truestart"):
            refs = true_references(case, args, snr)
        elif name.endswith("+volstart"):
            if args.start_volume is None:
                raise SystemExit(f"{name} needs --start-volume")
            refs = true_references(case, args, snr, args.start_volume)
        model, assignments, history = run_mlf2d(images, ctf_of(case), args.sampling, settings,
                                                references=refs, callback=tick)
    else:
        settings = ML2DSettings(**common, **overrides)
        model, assignments, history = run_ml2d(images, settings, callback=tick,
                                               sampling=args.sampling)
    total = time.perf_counter() - start
    steps = np.diff([start, *history_times])
    return {"classes": assignments["class_number"], "averages": model.references,
            "seconds": total, "iteration_seconds": steps,
            "iterations": int(model.iteration), "loglik": float(model.loglik)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=6000)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--sampling", type=float, default=3.2)
    p.add_argument("--views", type=int, default=10)
    p.add_argument("--view-step", type=float, default=8.0,
                   help="degrees between the views (rotation about the long axis)")
    p.add_argument("--random-views", action="store_true",
                   help="random orientations instead of --views look-alike side views "
                        "(scores: direction spread of the classes, largest class, tiny classes)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--shift", type=float, default=2.0)
    p.add_argument("--snr", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--ctf", choices=["no", "yes", "both"], default="both")
    p.add_argument("--iterations", type=int, default=25)
    p.add_argument("--methods", nargs="+", default=["ceiling", "ml2d", "mlf2d", "relion"])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--diameter", type=float, default=170.0, help="Å, RELION's mask")
    p.add_argument("--out", type=Path, default=Path("bench_quality2d"))
    p.add_argument("--rerun", nargs="*", default=[], help="methods to run again")
    p.add_argument("--average-resolution", action="store_true",
                   help="with --random-views: the FRC-0.5 resolution of each class average "
                        "against the clean projection of the map it matches best (slow: "
                        "a few seconds per average)")
    p.add_argument("--cryosnake-seed", type=int, default=1,
                   help="seed of cryosnake's random start groups (results of seeds other "
                        "than 1 are cached as result_METHOD_sSEED.npz)")
    p.add_argument("--relion-seed", type=int, default=1,
                   help="RELION's --random_seed (results of seeds other than 1 are cached as "
                        "result_relion_sSEED.npz, its run in relion_sSEED/)")
    p.add_argument("--start-volume", type=Path,
                   help="volume whose projections start mlf2d+mask+volstart (its result is "
                        "cached like any method's: --rerun it after changing the volume)")
    p.add_argument("--true-refs-limit", type=float, default=20.0,
                   help="Å, the likelihood limit of true-refs (0 = Nyquist)")
    args = p.parse_args(argv)

    cases = [(snr, c) for snr in args.snr
             for c in ({"no": [False], "yes": [True], "both": [False, True]}[args.ctf])]
    rows = []
    for snr, with_ctf in cases:
        views_tag = "random" if args.random_views else f"v{args.views}x{args.view_step:g}"
        tag = (f"n{args.n}_{views_tag}_snr{snr:g}_"
               f"{'ctf' if with_ctf else 'noctf'}")
        folder = args.out / tag
        case = simulate(folder, args, snr, with_ctf)
        images = mrc.read(folder / "particles.mrcs")
        mask = soft_mask(args.box, 0.45 * args.box)
        for name in args.methods:
            if name == "ceiling" and args.random_views:
                continue  # no discrete views to be assigned to
            # the seed of a cryosnake or RELION run: seeds other than 1 are cached apart
            seed = (args.cryosnake_seed if name in METHODS
                     else args.relion_seed if name == "relion" else 1)
            suffix = "" if seed == 1 else f"_s{seed}"
            res_file = folder / f"result_{name}{suffix}.npz"
            if name == "true-refs":  # K and the limit are part of the experiment
                res_file = folder / f"result_{name}_k{args.k}_{args.true_refs_limit:g}A.npz"
            if res_file.exists() and name not in args.rerun:
                r = dict(np.load(res_file))
            else:
                if name == "true-refs":
                    r = run_true_references(case, images, args, snr, with_ctf)
                elif name == "ceiling":
                    r = ceiling(case, images, args)
                    r |= {"seconds": 0.0, "iteration_seconds": np.zeros(0)}
                elif name.endswith("-refs"):
                    source = folder / f"result_{name[:-len('-refs')]}.npz"
                    if not source.exists():
                        raise SystemExit(f"{name}: run {name[:-len('-refs')]} first "
                                         f"({source} is missing)")
                    r = run_given_references(np.load(source)["averages"], case, images, args,
                                             with_ctf)
                elif name == "relion":
                    r = relion_class2d(folder / "particles.star", folder / f"relion{suffix}",
                                       args.k, args.iterations, args.diameter, with_ctf,
                                       seed=seed)
                    r["labels"] = r.pop("classes")
                else:
                    r = run_cryosnake(name, case, images, args, snr, with_ctf)
                    r["labels"] = r.pop("classes")
                np.savez(res_file, **r)
            random = {"rot": case["rot"], "tilt": case["tilt"]} if args.random_views else {}
            score = class_scores(r["labels"], r["averages"], case["view"], case["views"], mask,
                                 **random)
            if args.random_views and args.average_resolution:
                used = np.bincount(r["labels"] - 1, minlength=len(r["averages"])) > 0
                res_a = average_resolutions(r["averages"][used], mrc.read(args.out / "volume.mrc"),
                                            args.sampling, mask)
                score |= {"median_average_A": float(np.nanmedian(res_a)),
                          "best_average_A": float(np.nanmin(res_a))}
            its = np.asarray(r["iteration_seconds"], float)
            label = name if seed == 1 else f"{name} s{seed}"
            if "loglik" in r:  # the final model's log-likelihood (cryosnake runs)
                score["loglik"] = float(r["loglik"])
            rows.append({"case": tag, "method": label, **score,
                         "s/it": float(np.median(its[1:])) if its.size > 1 else float("nan"),
                         "total s": float(r["seconds"])})
            print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
