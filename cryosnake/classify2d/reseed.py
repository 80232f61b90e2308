"""Re-seeding of near-empty classes from the largest ones (an option against class collapse).

At low SNR a multi-reference ML run can let one class absorb most particles while others
empty out (issue 19; RELION's VDAM and cryoSPARC re-seed such classes). With
``reseed_fraction > 0``, after the M-step of every iteration up to ``reseed_iterations``:

* a class that is the most probable class of fewer than ``reseed_fraction`` times the mean
  class size ``n / K`` particles is *small*; small classes are taken emptiest first;
* each one is paired with the largest class at that moment, provided that class holds at
  least twice the threshold (so that both halves are above it); the large class counts as
  halved for the next pairing;
* the pair gets the large class's reference plus and minus a perturbation ``e`` with the
  statistics of half the class's particles: each half-set average differs from the whole
  class's average by noise of the same variance as the average itself (``sigma^2 / n_j`` per
  pixel in real space, ``1 / Den_j(l)`` per Fourier coefficient for MLF2D). Both get half
  the large class's fraction and its mirror fraction. The next E-step then splits the class
  along the direction its data support, as the random groups of "generate classes" do.

The perturbation is drawn from a generator seeded with ``(seed, iteration)``, so a rerun (or
a resumed run) gives the same model.
"""

from __future__ import annotations

import numpy as np


def pairs(sizes: np.ndarray, fraction: float) -> list[tuple[int, int]]:
    """``(small, large)`` class index pairs (module docstring); ``sizes`` ``[K]``: the number
    of particles whose most probable class each one is (the posterior weights are too
    diffuse at low SNR: a class that no particle prefers can still hold a share of them)."""
    w = np.asarray(sizes, dtype=np.float64).copy()
    K = len(w)
    total = float(w.sum())
    if fraction <= 0 or K < 2 or total <= 0:
        return []
    threshold = fraction * total / K
    found = []
    for small in np.argsort(w, kind="stable"):
        if w[small] >= threshold:
            break
        large = int(np.argmax(w))
        if w[large] < 2.0 * threshold:
            break
        found.append((int(small), large))
        w[large] *= 0.5
        w[small] = w[large]
    return found


def rng(seed: int, iteration: int) -> np.random.Generator:
    """The generator of the perturbations of ``iteration``'s M-step."""
    return np.random.default_rng([int(seed), 7919, int(iteration)])


def reseed_fields(fields: dict, split: list[tuple[int, int]], perturbation) -> dict:
    """``fields`` (:func:`cryosnake.classify2d.mstep.updated_fields`) with the references, class and
    mirror fractions of every pair updated; ``perturbation(large)`` gives ``e`` for the large
    class (shape of one reference). Convergence is reset: the model changed."""
    if not split:
        return fields
    refs = fields["references"].copy()
    alpha = fields["class_fractions"].copy()
    mfrac = fields["mirror_fractions"].copy()
    for small, large in split:
        e = perturbation(large)
        base = refs[large].copy()
        refs[large] = base + e
        refs[small] = base - e
        alpha[large] *= 0.5
        alpha[small] = alpha[large]
        mfrac[small] = mfrac[large]
    refs = refs.astype(np.float32).astype(np.float64)
    return fields | {"references": refs, "class_fractions": alpha, "mirror_fractions": mfrac,
                     "converged": False}


def apply(fields: dict, best_count: np.ndarray, settings, perturbation) -> dict:
    """The M-step's ``fields`` re-seeded where ``settings`` ask for it at this iteration:
    ``perturbation(rng, large)`` draws ``e`` for a large class from the iteration's
    generator (:func:`rng`)."""
    iteration = fields["iteration"]
    if settings.reseed_fraction <= 0 or iteration > settings.reseed_iterations:
        return fields
    generator = rng(settings.seed, iteration)
    return reseed_fields(fields, pairs(best_count, settings.reseed_fraction),
                         lambda large: perturbation(generator, large))
