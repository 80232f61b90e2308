"""The 2D-classification core that ML2D (:mod:`cryosnake.ml2d`, spec §1) and MLF2D
(:mod:`cryosnake.mlf2d`, spec §2) share:

* :mod:`.strategy`: the interface the workflow's jobs call (one strategy per run, from
  ``ml2d.fourier``), the shared ``ml2d:`` settings, the join of chunk assignments;
* :mod:`.hypotheses`: the discrete search space (classes, angles, flips, translations) and
  its priors;
* :mod:`.poses`: hypothesis -> output pose (RELION's convention) and the pose applied;
* :mod:`.state`: the per-particle state carried between iterations;
* :mod:`.classes`: the output classes of an E-step ("generate classes" groups, chunk check);
* :mod:`.sums`: the additive statistics (``+`` over chunks);
* :mod:`.mstep`: class and mirror fractions, ``xi``, diagnostics and convergence;
* :mod:`.reseed`: re-seeding of near-empty classes.

No file I/O here: the files of a run are read and written by :mod:`cryosnake.io.classify2d`.
"""
