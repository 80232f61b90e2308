"""End to end: simulated averages, random start, several iterations (spec V-RS7)."""

from __future__ import annotations

import numpy as np
import pytest
from significant_phantom import gaussian_phantom, simulated_averages

from cryosnake.significant import (
    ANGLE_COLUMNS,
    SignificantSettings,
    initial_volume,
    run_iteration,
)
from cryosnake.volume3d.fsc import align_volume, resolution_period
from cryosnake.volume3d.projector import project
from cryosnake.volume3d.volume_ops import fourier_shift

N = 32


def _run(images, settings):
    vol = initial_volume(images, settings)
    rows = []
    for it in range(1, settings.iterations + 1):
        vol, angles = run_iteration(images, vol, settings, it, sampling_A=2.0)
        rows.append(len(angles))
    return vol, angles, rows


@pytest.mark.parametrize("symmetry,n_img,fold,max_origin", [("c1", 80, 1, 2.0),
                                                             ("c4", 60, 4, 0.0)])
def test_random_start_recovers_the_phantom(symmetry, n_img, fold, max_origin):
    phantom = gaussian_phantom(N, seed=3, fold=fold, n_blobs=10 if fold == 1 else 4)
    images, *_ = simulated_averages(phantom, n_img, snr=3.0, seed=4, max_origin=max_origin)
    settings = SignificantSettings(symmetry=symmetry, iterations=10, seed=0)
    vol, angles, rows = _run(images, settings)

    assert vol.shape == (N, N, N) and vol.dtype == np.float32
    assert list(angles.columns) == ANGLE_COLUMNS
    assert angles["weight"].gt(0).all() and angles["image"].nunique() == n_img
    assert np.allclose(angles["origin_x_A"], 2.0 * angles["origin_x_px"])
    # rows shrink with alpha (0.2 -> 0.005 for c1)
    assert rows[0] > 10 * rows[-1]
    assert angles.attrs["alpha"] == pytest.approx(0.005 * (4 if symmetry == "c4" else 1))

    aligned, info = align_volume(vol, phantom)  # handedness either way
    assert resolution_period(aligned, phantom, 0.5) <= 8.0

    # the best row of each image reproduces it from the final volume (pose convention)
    best = angles.loc[angles.groupby("image")["weight"].idxmax()]
    models = project(vol, best["rot"], best["tilt"], best["psi"])
    corr = []
    for m, (_, row) in zip(models, best.iterrows(), strict=True):
        m = fourier_shift(m, (-row["origin_x_px"], -row["origin_y_px"]))
        corr.append(np.corrcoef(m.ravel(), images[int(row["image"])].ravel())[0, 1])
    assert np.median(corr) > 0.8
