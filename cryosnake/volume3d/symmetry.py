"""Point-group symmetry with Xmipp group names (spec ``algorithms.md`` §3.5, §3.8).

Every group is built by completing a small set of generators under matrix multiplication, so
closure holds by construction (and is tested). An element ``L`` (3x3, acting on ``(x, y, z)``
column vectors) is a symmetry of a volume when ``V(L x) = V(x)``; then ``V^(L k) = V^(k)`` and an
image at angles ``E`` may be inserted on every plane ``L E^T (kx, ky, 0)`` (§3.8.2). Improper
elements (mirrors, the inversion) have determinant -1.

Names (case-insensitive) and the conventions chosen here (the axes follow Xmipp/Scipion):

* ``c1``; ``cN``: N-fold axis on z.
* ``ci``: inversion; ``cs``: mirror plane z = 0 (normal z).
* ``cNv``: cN plus N vertical mirror planes, the first one the xz plane (normal y).
* ``cNh``: cN plus the horizontal mirror plane (normal z).
* ``dN``: cN plus N two-fold axes in the xy plane, the first one on x.
* ``dNv`` (Schoenflies D_Nd): dN plus vertical mirror planes that bisect neighbouring two-fold
  axes (the first contains z and the direction at 90/N degrees from x).
* ``dNh``: dN plus the horizontal mirror plane.
* ``t``: two-fold axes on x, y, z and a three-fold axis on (1, 1, 1) (Scipion "T222").
* ``td``: t plus the mirror plane x = y; ``th``: t plus the inversion.
* ``o``: four-fold axis on z and three-fold axis on (1, 1, 1); ``oh``: o plus the inversion.
* ``i1``: two-fold axes on x, y, z, the five-fold vertices nearest +z in the yz plane
  (Scipion "I222", Heymann et al. 2005 standard, "no Crowther"); ``i2``: the same turned 90
  degrees about z (five-folds in the xz plane, "I222r"); ``i3``: five-fold on z, two-fold on y,
  a neighbouring five-fold in the -x half of the xz plane ("In25"); ``i4``: as i3 with that
  five-fold in the +x half ("In25r"). ``i`` is accepted as a synonym of ``i1``.

Group orders: cN N, ci/cs 2, cNv/cNh 2N, dN 2N, dNv/dNh 4N, t 12, td/th 24, o 24, oh 48,
i1-i4 60.

The projection gallery uses the proper rotations only (:func:`proper_rotations`): two directions
related by a mirror give mirror-image projections, which the 2D alignment (no mirrors, as the
protocol's ``--dontCheckMirrors``) cannot match, so they are not redundant.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

__all__ = [
    "VALID_GROUPS",
    "parse_symmetry",
    "symmetry_matrices",
    "proper_rotations",
    "group_order",
    "rotation_about",
    "mirror_matrix",
]

VALID_GROUPS = (
    "c1", "cN", "ci", "cs", "cNv", "cNh", "dN", "dNv", "dNh",
    "t", "td", "th", "o", "oh", "i1", "i2", "i3", "i4",
)

_PHI = (1.0 + 5.0 ** 0.5) / 2.0
# The largest group built (the completion enumerates every element): c240, d120, d60h, ...
MAX_GROUP_ORDER = 240
_ELEMENTS_PER_N = {"cN": 1, "cNv": 2, "cNh": 2, "dN": 2, "dNv": 4, "dNh": 4}


def rotation_about(axis, angle_deg: float) -> np.ndarray:
    """Right-handed rotation matrix by ``angle_deg`` about the unit vector along ``axis``."""
    u = np.asarray(axis, dtype=np.float64)
    u = u / np.linalg.norm(u)
    a = np.deg2rad(angle_deg)
    K = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + np.sin(a) * K + (1.0 - np.cos(a)) * (K @ K)


def mirror_matrix(normal) -> np.ndarray:
    """Reflection through the plane through the origin with the given normal."""
    n = np.asarray(normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    return np.eye(3) - 2.0 * np.outer(n, n)


def parse_symmetry(name: str) -> tuple[str, int]:
    """``"c4" -> ("cN", 4)``, ``"d7v" -> ("dNv", 7)``, ``"o" -> ("o", 0)``.

    Raises ``ValueError`` naming the valid groups for an unknown name, and the largest ``N``
    of the family for a group of more than :data:`MAX_GROUP_ORDER` elements.
    """
    s = str(name).strip().lower()
    if s == "i":
        s = "i1"
    m = re.fullmatch(r"([cd])(\d+)([vh]?)", s)
    if m and int(m.group(2)) >= 1:
        family, n = m.group(1) + "N" + m.group(3), int(m.group(2))
        per_n = _ELEMENTS_PER_N[family]
        if n * per_n > MAX_GROUP_ORDER:
            raise ValueError(
                f"{name!r} has {n * per_n} elements; at most {MAX_GROUP_ORDER} are supported "
                f"(cN up to c{MAX_GROUP_ORDER}; cNv, cNh, dN up to N = {MAX_GROUP_ORDER // 2}; "
                f"dNv, dNh up to N = {MAX_GROUP_ORDER // 4})")
        return family, n
    if s in ("ci", "cs", "t", "td", "th", "o", "oh", "i1", "i2", "i3", "i4"):
        return s, 0
    raise ValueError(
        f"unknown symmetry group {name!r}; valid Xmipp names are: "
        "c1, cN, ci, cs, cNv, cNh, dN, dNv, dNh, t, td, th, o, oh, i1, i2, i3, i4 "
        "(N = 1, 2, 3, ...; e.g. c4, d2, d6h)"
    )


def _generators(family: str, n: int) -> list[np.ndarray]:
    z, x = (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)
    if family == "cN":
        return [rotation_about(z, 360.0 / n)]
    if family == "ci":
        return [-np.eye(3)]
    if family == "cs":
        return [mirror_matrix(z)]
    if family == "cNv":
        return [rotation_about(z, 360.0 / n), mirror_matrix((0.0, 1.0, 0.0))]
    if family == "cNh":
        return [rotation_about(z, 360.0 / n), mirror_matrix(z)]
    if family == "dN":
        return [rotation_about(z, 360.0 / n), rotation_about(x, 180.0)]
    if family == "dNv":
        b = np.pi / (2.0 * n)  # bisector of the two-fold axes at 0 and 180/n degrees
        return [rotation_about(z, 360.0 / n), rotation_about(x, 180.0),
                mirror_matrix((-np.sin(b), np.cos(b), 0.0))]
    if family == "dNh":
        return [rotation_about(z, 360.0 / n), rotation_about(x, 180.0), mirror_matrix(z)]
    tetra = [rotation_about(z, 180.0), rotation_about(x, 180.0),
             rotation_about((1.0, 1.0, 1.0), 120.0)]
    if family == "t":
        return tetra
    if family == "td":
        return tetra + [mirror_matrix((1.0, -1.0, 0.0))]
    if family == "th":
        return tetra + [-np.eye(3)]
    octa = [rotation_about(z, 90.0), rotation_about((1.0, 1.0, 1.0), 120.0)]
    if family == "o":
        return octa
    if family == "oh":
        return octa + [-np.eye(3)]
    if family in ("i1", "i2"):
        vertex = (0.0, 1.0, _PHI) if family == "i1" else (1.0, 0.0, _PHI)
        return [rotation_about(z, 180.0), rotation_about(x, 180.0), rotation_about(vertex, 72.0)]
    if family in ("i3", "i4"):
        t5 = np.arctan(2.0)  # angle between neighbouring five-fold axes
        sign = -1.0 if family == "i3" else 1.0
        return [rotation_about(z, 72.0), rotation_about((sign * np.sin(t5), 0.0, np.cos(t5)), 72.0)]
    raise AssertionError(family)


def _complete(generators: list[np.ndarray], max_order: int = MAX_GROUP_ORDER) -> np.ndarray:
    """Close a set of generators under multiplication (breadth-first); identity first."""

    def key(m):
        return tuple(np.round(m, 6).ravel() + 0.0)

    elements = [np.eye(3)]
    seen = {key(elements[0])}
    frontier = [np.eye(3)]
    while frontier:
        new = []
        for a in frontier:
            for g in generators:
                for prod in (g @ a, a @ g):
                    k = key(prod)
                    if k not in seen:
                        seen.add(k)
                        elements.append(prod)
                        new.append(prod)
        if len(elements) > max_order:
            raise RuntimeError("symmetry generators do not close into a finite point group")
        frontier = new
    return np.array(elements)


@lru_cache(maxsize=64)
def _matrices(name: str) -> np.ndarray:
    family, n = parse_symmetry(name)
    if family == "cN" and n == 1:
        return np.eye(3)[None]
    return _complete(_generators(family, n))


def symmetry_matrices(name: str) -> np.ndarray:
    """All elements of the group (``(|G|, 3, 3)`` float64, identity first), a copy."""
    return _matrices(str(name).strip().lower()).copy()


def proper_rotations(name: str) -> np.ndarray:
    """The rotation subgroup (determinant +1), identity first."""
    mats = symmetry_matrices(name)
    return mats[np.linalg.det(mats) > 0]


def group_order(name: str, proper_only: bool = False) -> int:
    """``|G|`` (or the order of its rotation subgroup)."""
    return len(proper_rotations(name) if proper_only else symmetry_matrices(name))
