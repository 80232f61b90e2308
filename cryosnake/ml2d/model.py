"""The ML2D model ``Theta`` (spec ``algorithms.md`` §1.2); its files:
:mod:`cryosnake.io.classify2d`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ML2DModel:
    """ML2D parameters after an M-step (or the initial ones).

    * ``references``: ``[K, N, N]`` class averages ``A_k`` (float64 holding float32 values, so
      a saved and re-loaded model is bit-identical).
    * ``class_fractions``: ``[K]`` ``alpha_k``; ``mirror_fractions``: ``[K]`` ``m_k``.
    * ``sigma_noise``: ``sigma`` (intensity units); ``sigma_offset``: ``xi`` (px).
    * ``iteration``: Xmipp's numbering of the iteration whose M-step made this model (``-1``:
      the single average before iteration 0 of "generate classes"; ``0``: user references, or
      the model made by iteration 0 of "generate classes").
    * ``loglik`` (``sum_i LL_i``), ``ave_pmax``, ``signal_change`` ``[K]`` (``1000 delta_k``,
      NaN when undefined), ``converged``: diagnostics of the M-step that made it (§1.9, §1.10).
    * ``class_weights``: ``[K]`` ``sum_i (n_ik + n^mir_ik)`` (classCount = round of it).
    * ``norm_scale_mean``: mean of the per-image scales found by the E-step that fed this model;
      the next E-step divides the stored ``s_i`` by it (norm model §1.13; 1 otherwise).
    * ``n_images``: number of images of that E-step.
    * ``sampling``: pixel size (Å/px) of the references (the scale of ``particle_diameter``).
    """

    references: np.ndarray
    class_fractions: np.ndarray
    mirror_fractions: np.ndarray
    sigma_noise: float
    sigma_offset: float
    iteration: int = 0
    loglik: float = float("nan")
    ave_pmax: float = float("nan")
    signal_change: np.ndarray = field(default_factory=lambda: np.zeros(0))
    converged: bool = False
    class_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    norm_scale_mean: float = 1.0
    n_images: int = 0
    sampling: float = 1.0

    def __post_init__(self):
        self.references = np.asarray(self.references, dtype=np.float64)
        if self.references.ndim == 2:
            self.references = self.references[None]
        k = self.references.shape[0]
        self.class_fractions = np.asarray(self.class_fractions, dtype=np.float64).reshape(k)
        self.mirror_fractions = np.asarray(self.mirror_fractions, dtype=np.float64).reshape(k)
        if self.signal_change.size == 0:
            self.signal_change = np.full(k, np.nan)
        if self.class_weights.size == 0:
            self.class_weights = np.zeros(k)
        self.signal_change = np.asarray(self.signal_change, dtype=np.float64)
        self.class_weights = np.asarray(self.class_weights, dtype=np.float64)

    @property
    def n_classes(self) -> int:
        return int(self.references.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.references.shape[-1])

    def to_dict(self) -> dict:
        """JSON-able scalars and per-class vectors (NaN written as ``null``)."""

        def clean(v):
            v = np.asarray(v, dtype=np.float64)
            return [None if not math.isfinite(x) else float(x) for x in v.ravel()]

        def scalar(x):
            return None if not math.isfinite(x) else float(x)

        return {
            "n_classes": self.n_classes,
            "image_size": self.image_size,
            "iteration": int(self.iteration),
            "class_fractions": clean(self.class_fractions),
            "mirror_fractions": clean(self.mirror_fractions),
            "class_weights": clean(self.class_weights),
            "sigma_noise": float(self.sigma_noise),
            "sigma_offset": float(self.sigma_offset),
            "loglik": scalar(self.loglik),
            "ave_pmax": scalar(self.ave_pmax),
            "signal_change": clean(self.signal_change),
            "converged": bool(self.converged),
            "norm_scale_mean": float(self.norm_scale_mean),
            "n_images": int(self.n_images),
            "sampling": float(self.sampling),
        }

    @classmethod
    def from_dict(cls, d: dict, references: np.ndarray) -> ML2DModel:
        """The model of a :meth:`to_dict` record ``d`` (``null`` read as NaN) with its
        ``references`` ``[K, N, N]``."""

        def arr(v):
            return np.array([np.nan if x is None else x for x in v], dtype=np.float64)

        return cls(
            references=references,
            class_fractions=arr(d["class_fractions"]),
            mirror_fractions=arr(d["mirror_fractions"]),
            sigma_noise=float(d["sigma_noise"]),
            sigma_offset=float(d["sigma_offset"]),
            iteration=int(d["iteration"]),
            loglik=float("nan") if d["loglik"] is None else float(d["loglik"]),
            ave_pmax=float("nan") if d["ave_pmax"] is None else float(d["ave_pmax"]),
            signal_change=arr(d["signal_change"]),
            converged=bool(d["converged"]),
            class_weights=arr(d["class_weights"]),
            norm_scale_mean=float(d.get("norm_scale_mean", 1.0)),
            n_images=int(d.get("n_images", 0)),
            sampling=float(d.get("sampling", 1.0)),
        )
