"""Reconstruct Significant: an initial 3D volume from 2D class averages (spec §3).

Each average is assigned to every projection direction whose match is statistically
significant (per-image and per-direction CDFs of the correlation, IMED, Fisher pre-selection)
and the volume is rebuilt by weighted direct Fourier inversion; the significance tightens over
the iterations. Modules, one per concept:

* ``geometry``  - Euler angles (RELION ZYZ) and projection directions
* ``symmetry``  - Xmipp point groups (c1 ... i4), completion from generators
* ``sampling``  - gallery directions of one asymmetric unit, angular neighbourhoods
* ``projector`` - Fourier central-slice projection (Cartesian and polar rings)
* ``align``     - batched image-to-gallery alignment: cc, psi, origin, IMED
* ``weights``   - alpha schedule, CDFs, Fisher, neighbourhood, strict rule, weights
* ``reconstruct`` - weighted direct Fourier reconstruction with symmetry expansion
* ``volume_ops`` - centring, mask, low-pass, Fourier resampling
* ``initial``   - random or reference start
* ``fsc``       - FSC and alignment of a result to a known phantom
* ``iteration`` - ``SignificantSettings`` and ``run_iteration`` (what the workflow calls)
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
