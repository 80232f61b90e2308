"""The demo check: how close a run on the built-in demo came to the truth it was simulated from.

The demo writes its phantom, its clean views and every particle's view
(``demo/ground_truth.star``). After a run this job scores:

* the 2D classes: adjusted Rand index of the ML2D classes against the true views, how many
  views some class average resembles best, and the median over the views of the NCC of its
  best class average (after in-plane rotation, mirror and shift, inside the particle circle);
* the initial volume: FSC against the phantom after rotation, shift and hand are fitted
  (:func:`cryosnake.volume3d.fsc.align_volume`), reported where it first drops below 0.5
  and 0.143, in Å.

Written to ``demo/check.json``; the run summary prints it.
"""

from __future__ import annotations

import numpy as np

from cryosnake.atomic import write_json
from cryosnake.io import mrc, star
from cryosnake.masks import soft_circular_mask
from cryosnake.scores import adjusted_rand_index, aligned_ncc
from cryosnake.volume3d.fsc import align_volume, resolution_period


def class_recovery(classes: np.ndarray, views: np.ndarray, labels, true_views) -> dict:
    """Scores of the class averages ``classes`` [K, N, N] and per-particle class ``labels``
    (1-based) against the clean ``views`` [V, N, N] and each particle's true view."""
    n = views.shape[-1]
    counts = np.bincount(np.asarray(labels) - 1, minlength=len(classes))
    used = np.flatnonzero(counts > 0)
    mask = soft_circular_mask(n, n / 2 - 2)
    ncc = aligned_ncc(classes[used], views, mask, psi_step=3.0)  # [classes, views]
    return {"ari": adjusted_rand_index(labels, true_views),
            "views": int(len(views)),
            "views_found": int(len(set(ncc.argmax(axis=1)))),
            "median_view_ncc": float(np.median(ncc.max(axis=0))),
            "classes_used": int(len(used))}


def volume_fsc(volume: np.ndarray, phantom: np.ndarray, sampling: float) -> dict:
    """FSC-0.5 and FSC-0.143 (Å) of ``volume`` against ``phantom`` after alignment."""
    aligned, info = align_volume(volume, phantom)
    return {"fsc05_A": resolution_period(aligned, phantom, 0.5) * sampling,
            "fsc0143_A": resolution_period(aligned, phantom, 0.143) * sampling,
            "nyquist_A": 2.0 * sampling, "mirrored": bool(info["mirrored"]),
            "cc": float(info["cc"])}


def demo_check_job(truth_star, views_mrcs, phantom_mrc, particles_star, classes_mrcs,
                   volume_mrc, out_json) -> dict:
    """Score the run's classes and volume against the demo's truth; write ``out_json``."""
    truth = star.read_blocks(truth_star)["truth"]
    particles, _ = star.read_particles(particles_star)
    if len(truth) != len(particles):
        raise RuntimeError(f"{particles_star} has {len(particles)} particles, the demo "
                           f"{len(truth)}: the run is not of this demo")
    result = {"classes": class_recovery(mrc.read_stack(classes_mrcs).astype(np.float64),
                                        mrc.read_stack(views_mrcs).astype(np.float64),
                                        particles["rlnClassNumber"].to_numpy(),
                                        truth["cryosnakeView"].to_numpy())}
    phantom = mrc.read(phantom_mrc)
    result["volume"] = volume_fsc(mrc.read(volume_mrc), phantom,
                                  mrc.header_info(phantom_mrc)["sampling"])
    write_json(out_json, result)
    c, v = result["classes"], result["volume"]
    print(f"demo check: ARI {c['ari']:.3f}, {c['views_found']} of {c['views']} views found, "
          f"median NCC to the views {c['median_view_ncc']:.3f}; volume FSC-0.5 "
          f"{v['fsc05_A']:.1f} Å (FSC-0.143 {v['fsc0143_A']:.1f} Å, Nyquist {v['nyquist_A']:.1f} "
          f"Å){', mirrored hand' if v['mirrored'] else ''}")
    return result
