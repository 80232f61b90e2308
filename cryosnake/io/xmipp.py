"""Xmipp 3 metadata (``.xmd``) export of 2D alignments, for Xmipp and Scipion.

Xmipp's convention for the 2D alignment labels ``anglePsi`` (degrees), ``shiftX``, ``shiftY``
(px) and ``flip`` (0/1), as its code applies them (``core/transformations.cpp``):

* ``geo2TransformationMatrix`` builds the homogeneous matrix ``A = [[L, b], [0, 1]]`` with
  ``L = R(psi) = [[cos, sin], [-sin, cos]]`` (``rotation2DMatrix``) and ``b = (shiftX,
  shiftY)``; with ``flip`` it negates the first row of ``L`` (not ``shiftX``), so
  ``L = diag(-1, 1) R(psi)``.
* ``applyGeometry(out, in, A, IS_NOT_INV, ...)``, which ``xmipp_transform_geometry
  --apply_transform`` calls with that matrix, computes ``out(A r) = in(r)`` on centred
  coordinates ``r = (x, y)``, ``x`` = column - N//2, ``y`` = row - N//2.

So the aligned image (the one that matches the class average) is the particle **rotated by
psi, then mirrored** (``x -> -x``) **if flip, then shifted by b**: ``Sh_b[Mir^flip[Rot_psi[X]]]``
(spec ``algorithms.md`` §0.2-0.3; ``Rot_psi`` turns content by ``R(psi)``, as
``scipy.ndimage.rotate(img, +psi)`` and a positive ``rlnAnglePsi`` do). The header comment of
``geo2TransformationMatrix`` reads "first flip, then rotate, then shift"; that is the same map
written as ``diag(-1, 1) R(psi) = R(-psi) diag(-1, 1)``: flip first, then rotate by ``-psi``.

cryosnake's poses (RELION's convention, :mod:`cryosnake.classify2d.poses`) bring a particle onto its
class average as ``Rot_{-psi}[Mir^mu[Sh_o[X]]]``: the point map ``r -> R(-psi) M^mu (r + o)``
(``M = diag(-1, 1)``). Equal to Xmipp's ``r -> M^flip R(psi_x) r + b`` when ``flip = mu``,

* ``mu = 0``: ``psi_x = -psi``, ``b = R(-psi) o``;
* ``mu = 1``: ``psi_x = +psi`` (as ``R(-psi) M = M R(psi)``), ``b = R(-psi) M o``.

:func:`cryosnake.io.importers.read_xmd` applies the inverse on import.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryosnake.atomic import write_text
from cryosnake.geometry import rotation2d, wrap_angle

#: First line of an Xmipp 3 metadata file (what Xmipp writes and looks for).
HEADER = "# XMIPP_STAR_1 *"


def alignment_from_pose(psi_deg, origin_x_px, origin_y_px, mirror) -> dict[str, np.ndarray]:
    """Xmipp's ``anglePsi`` (degrees, in (-180, 180]), ``shiftX``, ``shiftY`` (px) and ``flip``
    (0/1) of cryosnake/RELION poses: ``psi`` (``rlnAnglePsi``), origin in px
    (``rlnOriginX/YAngst`` / pixel size) and the mirror flag (arrays ``[n]``)."""
    psi = np.atleast_1d(np.asarray(psi_deg, dtype=np.float64))
    ox = np.broadcast_to(np.asarray(origin_x_px, dtype=np.float64), psi.shape)
    oy = np.broadcast_to(np.asarray(origin_y_px, dtype=np.float64), psi.shape)
    mu = np.broadcast_to(np.asarray(mirror).astype(np.int64), psi.shape)
    mirrored_origin = np.stack([np.where(mu == 1, -ox, ox), oy], axis=-1)  # M^mu o
    b = np.einsum("nij,nj->ni", rotation2d(-psi), mirrored_origin)
    return {"anglePsi": wrap_angle(np.where(mu == 1, psi, -psi)), "shiftX": b[:, 0],
            "shiftY": b[:, 1], "flip": mu.copy()}


def write_metadata(path, table: pd.DataFrame, block: str = "noname") -> None:
    """Write ``table`` as one Xmipp 3 metadata loop (``data_<block>``, labels ``_<column>``)
    atomically: integers as integers, floats with 6 decimals, strings as they are."""
    columns = []
    for name in table.columns:
        values = table[name].to_numpy()
        if np.issubdtype(values.dtype, np.integer) or values.dtype == bool:
            columns.append([str(int(v)) for v in values])
        elif np.issubdtype(values.dtype, np.floating):
            columns.append([f"{v:.6f}" for v in values])
        else:
            columns.append([str(v) for v in values])
    lines = [HEADER, "#", f"data_{block}", "loop_", *(f" _{name}" for name in table.columns)]
    lines += [" " + " ".join(row) for row in zip(*columns, strict=True)]
    write_text(path, "\n".join(lines) + "\n")
