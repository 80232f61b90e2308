"""Job of the rule significant_reprojections: the reprojection check of the initial volume
(numerics in :mod:`cryosnake.significant.reprojection`).

Reads the final ``volume.mrc`` and ``angles.star`` and the averages Reconstruct Significant
worked on (``input/averages.mrcs`` at the working grid, ``input/info.json``). The volume is
Fourier-resized to the working grid (the inverse of :func:`finalize_volume`), so the averages
are compared at the grid where their angles were assigned. Writes:

* ``reprojections.star``: RELION 3.1, one row per average in input order: ``rlnImageName`` (the
  average), ``cryosnakeImageIndex``, the assigned pose ``rlnAngleRot/Tilt/Psi``,
  ``rlnOriginXAngst/YAngst``, ``cryosnakeDirection``, ``cryosnakeWeight``, ``cryosnakeCC`` (of
  that significant row; NaN, direction 0, for an average without any), the number of significant
  rows ``cryosnakeSignificantRows``, the correlation ``cryosnakeReprojectionCC`` and the
  projection ``cryosnakeReprojectionImage``.
* ``reprojections.mrcs``: the projections (working grid; zero for an average without a pose).
* ``reprojections.png``: :func:`cryosnake.plots.reprojections`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryosnake import plots
from cryosnake.io import mrc, star
from cryosnake.io.jsonfile import read_json
from cryosnake.kernels import cpu, get_backend
from cryosnake.significant.reprojection import best_rows, masked_ncc, reproject
from cryosnake.volume3d.volume_ops import fourier_resize

__all__ = ["reprojection_table", "reprojection_job"]

POSE_COLUMNS = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
                "rlnOriginYAngst", "cryosnakeWeight", "cryosnakeCC"]


def reprojection_table(volume, averages, angles: pd.DataFrame, names, sampling_A: float,
                       stack_name: str = "reprojections.mrcs", backend=cpu):
    """The check on arrays: ``volume`` ``[N, N, N]`` and ``averages`` ``[n, N, N]`` on the same
    grid of ``sampling_A`` Å/px, ``angles`` the ``angles.star`` table, ``names`` of the
    averages. Returns ``(table, projections [n, N, N])`` (table: module docstring)."""
    averages = np.asarray(averages, dtype=np.float32)
    n_img = len(averages)
    image = angles["cryosnakeImageIndex"].to_numpy(dtype=np.int64) - 1
    best = best_rows(image, angles["cryosnakeCC"], angles["cryosnakeWeight"], n_img)
    has = best >= 0
    rows = angles.iloc[best[has]]
    table = pd.DataFrame({"rlnImageName": list(names), "cryosnakeImageIndex": np.arange(n_img) + 1})
    for col in POSE_COLUMNS:
        values = np.full(n_img, np.nan)
        values[has] = rows[col].to_numpy(dtype=np.float64)
        table[col] = values
    table.insert(table.columns.get_loc("cryosnakeWeight"), "cryosnakeDirection", 0)
    if "cryosnakeDirection" in angles:
        table.loc[has, "cryosnakeDirection"] = rows["cryosnakeDirection"].to_numpy(np.int64)
    table["cryosnakeSignificantRows"] = np.bincount(image[(image >= 0) & (image < n_img)],
                                                    minlength=n_img)
    projections = np.zeros_like(averages)
    ncc = np.full(n_img, np.nan)
    if has.any():
        projections[has] = reproject(
            volume, rows["rlnAngleRot"].to_numpy(float), rows["rlnAngleTilt"].to_numpy(float),
            rows["rlnAnglePsi"].to_numpy(float),
            rows["rlnOriginXAngst"].to_numpy(float) / sampling_A,
            rows["rlnOriginYAngst"].to_numpy(float) / sampling_A, backend=backend)
        ncc[has] = masked_ncc(averages[has], projections[has])
    table["cryosnakeReprojectionCC"] = ncc
    table["rlnOpticsGroup"] = 1
    table["cryosnakeReprojectionImage"] = [f"{k + 1:06d}@{stack_name}" for k in range(n_img)]
    return table, projections


def reprojection_job(volume_mrc, angles_star, averages_mrcs, info_json, out_star, out_stack,
                     out_png, backend: str = "cpu") -> pd.DataFrame:
    """Reprojection check of the final outputs of Reconstruct Significant (module docstring);
    ``backend``: the kernel backend's name."""
    kernels = get_backend(backend)
    info = read_json(info_json)
    averages = mrc.read_stack(averages_mrcs)
    n = int(info["box"])
    volume = mrc.read(volume_mrc)
    if volume.shape[0] != n:
        volume = fourier_resize(volume, n)
    angles, optics = star.read_particles(angles_star)
    table, projections = reprojection_table(volume, averages, angles, info["names"],
                                            float(info["sampling"]), str(out_stack), kernels)
    if optics is None:
        optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                               "rlnImagePixelSize": [info["input_sampling"]],
                               "rlnImageSize": [info["input_box"]],
                               "rlnImageDimensionality": [2]})
    mrc.write_stack(out_stack, projections, float(info["sampling"]))
    star.write_particles(out_star, table, optics)
    plots.reprojections(out_star, averages_mrcs, out_stack, out_png)
    ncc = table["cryosnakeReprojectionCC"].to_numpy()
    ok = np.isfinite(ncc)
    if ok.any():
        low = int(np.nanargmin(ncc))
        print(f"reprojection correlation of {int(ok.sum())} averages: median "
              f"{np.median(ncc[ok]):.3f}, lowest {ncc[low]:.3f} ({table['rlnImageName'][low]})")
    if not ok.all():
        print(f"{int((~ok).sum())} of {len(ok)} averages without a significant direction")
    return table
