"""Reconstruct Significant: an initial 3D volume from 2D class averages (spec §3).

Each average is assigned to every projection direction whose match is statistically
significant (per-image and per-direction CDFs of the correlation, IMED, Fisher pre-selection)
and the volume is rebuilt by weighted direct Fourier inversion; the significance tightens over
the iterations. Modules, one per concept:

* ``sampling``  - gallery directions of one asymmetric unit, angular neighbourhoods
* ``align``     - batched image-to-gallery alignment: cc, psi, origin, IMED
* ``weights``   - alpha schedule, CDFs, Fisher, neighbourhood, strict rule, weights
* ``initial``   - random or reference start
* ``reprojection`` - reprojections of the final volume at the assigned angles
* ``iteration`` - ``SignificantSettings`` and ``run_iteration`` (what the workflow calls)

The general 3D tools it builds on (point-group symmetry, the central-slice projector, direct
Fourier reconstruction, volume operations, FSC) are in :mod:`cryosnake.volume3d`; Euler angles
and projection directions in :mod:`cryosnake.geometry`.
"""

from .iteration import (
    ANGLE_COLUMNS,
    SignificantSettings,
    finalize_volume,
    initial_volume,
    prepare_images,
    run_iteration,
)

__all__ = [
    "ANGLE_COLUMNS",
    "SignificantSettings",
    "finalize_volume",
    "initial_volume",
    "prepare_images",
    "run_iteration",
]
