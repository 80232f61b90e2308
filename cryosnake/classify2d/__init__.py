"""The 2D-classification core that ML2D (:mod:`cryosnake.ml2d`, spec §1) and MLF2D
(:mod:`cryosnake.mlf2d`, spec §2) share: the strategy interface the workflow's jobs call
(:mod:`.strategy`). The job layer picks one strategy per run from ``ml2d.fourier``."""
