"""Euler angles and projection directions: re-exported from :mod:`cryosnake.geometry`, the one
definition of the package's rotation conventions (RELION/Xmipp ZYZ, spec §0.5)."""

from cryosnake.geometry import (
    angles_from_direction,
    direction_from_angles,
    euler_to_matrix,
    matrix_to_euler,
)

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "direction_from_angles",
    "angles_from_direction",
]
