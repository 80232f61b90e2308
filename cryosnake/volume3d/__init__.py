"""General 3D tools on volumes ``[z, y, x]`` (centre ``N // 2``, RELION/Xmipp ZYZ Euler angles
of :mod:`cryosnake.geometry`), used by Reconstruct Significant, the reprojections, the demo
check and the configuration check. Modules, one per concept:

* ``symmetry``   - Xmipp point groups (c1 ... i4): names, matrices, completion from generators
* ``projector``  - Fourier central-slice projection (Cartesian images and polar rings)
* ``reconstruct`` - weighted direct Fourier reconstruction with symmetry expansion
* ``volume_ops`` - centring, masks, low-pass, Fourier shifts and resampling
* ``fsc``        - Fourier shell correlation and alignment of a result to a known volume
"""
