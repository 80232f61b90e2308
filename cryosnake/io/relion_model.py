"""RELION 3.1 Class2D ``model.star`` of an ML2D/MLF2D model, next to ``classes.star``.

The tables and labels are those RELION 3.1's ``MlModel::read`` requires (``relion_project
--model_noise`` and ``relion_refine --model`` read a model through it; missing labels stop it
with "incorrect model_general table"):

* ``data_model_general``: dimensionality 2, image size N, pixel size, number of classes and
  groups, ``rlnCurrentResolution`` (Å; Nyquist for ML2D, the likelihood limit for MLF2D) and
  ``rlnCurrentImageSize`` (the box holding those shells), ``rlnSigmaOffsetsAngst`` (xi in Å),
  ``rlnLogLikelihood`` (sum over particles), ``rlnAveragePmax``, ``rlnTau2FudgeFactor`` (1 for
  ML2D, MLF2D's Wiener ``T``). RELION's own machinery (padding, interpolator, priors) gets its
  defaults: they describe nothing of our model.
* ``data_model_classes``: ``rlnReferenceImage`` (``NNNNNN@classes.mrcs``),
  ``rlnClassDistribution`` (alpha_k), ``rlnAccuracyRotations`` and
  ``rlnAccuracyTranslationsAngst`` (999: not estimated), ``rlnEstimatedResolution`` (MLF2D: the
  last shell before the class's SSNR first drops below 1, RELION's definition; ML2D: 999, not
  estimated), ``rlnOverallFourierCompleteness`` (1: 2D images observe every Fourier component),
  ``rlnClassPriorOffsetX/Y`` (0: no per-class offset prior).
* ``data_model_class_K`` per class over shells ``0 .. N/2``: resolution, ``rlnSsnrMap`` (MLF2D's
  CTF-corrected SSNR; 0 for ML2D), and 0 for what neither estimates (FSC, tau2, sigma2).
* ``data_model_groups`` and ``data_model_group_G``: the noise per shell in RELION's units, the
  variance of the real and of the imaginary part of a Fourier coefficient normalised by
  ``1 / N^2``: ``sigma^2 / (2 N^2)`` for ML2D's white noise (one group), MLF2D's spectra (one
  group per defocus group) divided by ``2 N^4`` (they are in numpy's unnormalised ``rfft2``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cryosnake.io import star
from cryosnake.mlf2d import MLF2DModel
from cryosnake.mlf2d.wiener import REGULARISATION

#: What RELION writes where a quantity is unknown.
UNKNOWN = 999.0


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def _shells(n: int, sampling: float) -> pd.DataFrame:
    """Spectral index ``0 .. N/2`` with its resolution in 1/Å and Å (999 at 0), as RELION."""
    index = np.arange(n // 2 + 1)
    freq = index / (n * sampling)
    angstrom = np.where(index > 0, n * sampling / np.maximum(index, 1), UNKNOWN)
    return pd.DataFrame({"rlnSpectralIndex": index, "rlnResolution": freq,
                         "rlnAngstromResolution": angstrom})


def _extend(values: np.ndarray, length: int) -> np.ndarray:
    """Per-shell values ``[..., L]`` to ``length`` shells: the last value repeated (RELION's
    shell N/2 is beyond MLF2D's last shell N/2 - 1), or cut."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[-1] >= length:
        return values[..., :length]
    pad = np.repeat(values[..., -1:], length - values.shape[-1], axis=-1)
    return np.concatenate([values, pad], axis=-1)


def estimated_resolution(ssnr: np.ndarray, n: int, sampling: float) -> np.ndarray:
    """Per class (``ssnr`` ``[K, L]``): ``N Ts / l`` for the last shell ``l >= 1`` before the
    SSNR first drops below 1 (RELION's estimated resolution); 999 if shell 1 is already below."""
    out = np.full(len(ssnr), UNKNOWN)
    for k, curve in enumerate(np.asarray(ssnr, dtype=np.float64)):
        below = np.flatnonzero(curve[1:] < 1.0)
        last = below[0] if below.size else len(curve) - 1  # shell below[0] + 1 is below 1
        if last >= 1:
            out[k] = n * sampling / last
    return out


def model_blocks(model, reference_names) -> dict:
    """The data blocks of ``model.star`` for ``model`` (:class:`~cryosnake.ml2d.ML2DModel` or
    :class:`~cryosnake.mlf2d.MLF2DModel`; pixel size from ``model.sampling``) with the class
    images named ``reference_names`` (``NNNNNN@stack``)."""
    n, ts, k = model.image_size, float(model.sampling), model.n_classes
    n_shells = n // 2 + 1
    shells = _shells(n, ts)
    fourier = isinstance(model, MLF2DModel)
    if fourier:
        top = max(model.likelihood_shell, 1)  # the last shell of the likelihood
        resolution, size = n * ts / top, min(n, 2 * (top + 1))
        ssnr = _extend(model.ssnr, n_shells)
        class_resolution = estimated_resolution(model.ssnr[:, : top + 1], n, ts)
        noise = _extend(model.noise_spectra, n_shells) / (2.0 * n**4)
        group_sizes = np.rint(model.group_sizes).astype(int)
        fudge = REGULARISATION
    else:
        top = n // 2
        resolution, size = 2.0 * ts, n
        ssnr = np.zeros((k, n_shells))
        class_resolution = np.full(k, UNKNOWN)
        noise = np.full((1, n_shells), model.sigma_noise**2 / (2.0 * n**2))
        group_sizes = np.array([int(model.n_images)])
        fudge = 1.0
    general = {
        "rlnReferenceDimensionality": 2, "rlnDataDimensionality": 2,
        "rlnOriginalImageSize": n, "rlnCurrentResolution": resolution,
        "rlnCurrentImageSize": size, "rlnPaddingFactor": 1.0, "rlnIsHelix": 0,
        "rlnFourierSpaceInterpolator": 1, "rlnMinRadiusNnInterpolation": 10,
        "rlnPixelSize": ts, "rlnNrClasses": k, "rlnNrBodies": 1, "rlnNrGroups": len(noise),
        "rlnTau2FudgeFactor": fudge, "rlnNormCorrectionAverage": 1.0,
        "rlnSigmaOffsetsAngst": _finite(model.sigma_offset) * ts,
        "rlnOrientationalPriorMode": 0, "rlnSigmaPriorRotAngle": 0.0,
        "rlnSigmaPriorTiltAngle": 0.0, "rlnSigmaPriorPsiAngle": 0.0,
        "rlnLogLikelihood": _finite(model.loglik), "rlnAveragePmax": _finite(model.ave_pmax),
    }
    classes = pd.DataFrame({
        "rlnReferenceImage": list(reference_names),
        "rlnClassDistribution": model.class_fractions,
        "rlnAccuracyRotations": UNKNOWN,
        "rlnAccuracyTranslationsAngst": UNKNOWN,
        "rlnEstimatedResolution": class_resolution,
        "rlnOverallFourierCompleteness": 1.0,
        "rlnClassPriorOffsetX": 0.0,
        "rlnClassPriorOffsetY": 0.0,
    })
    blocks = {"model_general": general, "model_classes": classes}
    zeros = np.zeros(n_shells)
    for i in range(k):
        blocks[f"model_class_{i + 1}"] = shells.assign(
            rlnSsnrMap=ssnr[i], rlnGoldStandardFsc=zeros,
            rlnFourierCompleteness=(shells["rlnSpectralIndex"] <= top).astype(float),
            rlnReferenceSigma2=zeros, rlnReferenceTau2=zeros,
            rlnSpectralOrientabilityContribution=zeros)
    blocks["model_groups"] = pd.DataFrame({
        "rlnGroupNumber": np.arange(1, len(noise) + 1),
        "rlnGroupName": [f"group_{g + 1}" for g in range(len(noise))],
        "rlnGroupNrParticles": group_sizes,
        "rlnGroupScaleCorrection": 1.0,
    })
    for g, spectrum in enumerate(noise):
        blocks[f"model_group_{g + 1}"] = shells[["rlnSpectralIndex", "rlnResolution"]].assign(
            rlnSigma2Noise=[f"{v:.6e}" for v in spectrum])  # small: keep 7 digits
    return blocks


def write(path, model, reference_names) -> None:
    """Write :func:`model_blocks` as ``path`` (atomically)."""
    star.write_blocks(path, model_blocks(model, reference_names))
