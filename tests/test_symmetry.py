"""Point groups and gallery sampling (spec §3.5, V-RS4)."""

from __future__ import annotations

import numpy as np
import pytest

from cryosnake.geometry import direction_from_angles
from cryosnake.significant.sampling import (
    angular_neighbours,
    gallery_directions,
    n_directions_full_sphere,
    symmetric_angular_distance,
)
from cryosnake.volume3d.symmetry import (
    group_order,
    parse_symmetry,
    proper_rotations,
    rotation_about,
    symmetry_matrices,
)

ORDERS = {
    "c1": 1, "c2": 2, "c5": 5, "ci": 2, "cs": 2, "c3v": 6, "c4h": 8, "c6v": 12,
    "d1": 2, "d2": 4, "d5": 10, "d2v": 8, "d3v": 12, "d4h": 16, "d7h": 28,
    "t": 12, "td": 24, "th": 24, "o": 24, "oh": 48,
    "i1": 60, "i2": 60, "i3": 60, "i4": 60,
}


def _contains(mats, m, tol=1e-6):
    return bool(np.any(np.all(np.abs(mats - m) < tol, axis=(1, 2))))


@pytest.mark.parametrize("name,order", sorted(ORDERS.items()))
def test_group_order_and_closure(name, order):
    mats = symmetry_matrices(name)
    assert len(mats) == order == group_order(name)
    assert np.allclose(mats[0], np.eye(3))
    # orthogonal, det +-1, closed under products and inverses
    assert np.allclose(np.einsum("gij,gkj->gik", mats, mats), np.eye(3), atol=1e-9)
    assert np.allclose(np.abs(np.linalg.det(mats)), 1.0)
    for a in mats:
        assert _contains(mats, a.T)
        for b in mats:
            assert _contains(mats, a @ b)


def test_proper_subgroups():
    assert group_order("c4v", proper_only=True) == 4
    assert group_order("d3h", proper_only=True) == 6
    assert group_order("oh", proper_only=True) == 24
    assert group_order("ci", proper_only=True) == 1
    assert np.all(np.linalg.det(proper_rotations("td")) > 0)


def test_unknown_group_lists_valid_names():
    with pytest.raises(ValueError, match="valid Xmipp names.*c1, cN.*i1, i2, i3, i4"):
        symmetry_matrices("x5")
    with pytest.raises(ValueError):
        parse_symmetry("c0")
    assert parse_symmetry("C4") == ("cN", 4)
    assert parse_symmetry("d6h") == ("dNh", 6)


def test_axes_conventions():
    c4 = symmetry_matrices("c4")
    assert _contains(c4, rotation_about((0, 0, 1), 90))
    assert _contains(symmetry_matrices("d3"), rotation_about((1, 0, 0), 180))
    phi = (1 + 5 ** 0.5) / 2
    i1, i2 = symmetry_matrices("i1"), symmetry_matrices("i2")
    for ax in np.eye(3):  # two-folds on x, y, z
        assert _contains(i1, rotation_about(ax, 180)) and _contains(i2, rotation_about(ax, 180))
    assert _contains(i1, rotation_about((0, 1, phi), 72))  # five-fold in the yz plane
    assert not _contains(i1, rotation_about((1, 0, phi), 72))
    assert _contains(i2, rotation_about((1, 0, phi), 72))  # i2 = i1 turned 90 deg about z
    t5 = np.arctan(2.0)
    for name, sign in (("i3", -1), ("i4", 1)):
        m = symmetry_matrices(name)
        assert _contains(m, rotation_about((0, 0, 1), 72))  # five-fold on z
        assert _contains(m, rotation_about((0, 1, 0), 180))  # two-fold on y
        assert _contains(m, rotation_about((sign * np.sin(t5), 0, np.cos(t5)), 72))
    # dNv (D_nd) and dNh are different groups of the same order
    d4v, d4h = symmetry_matrices("d4v"), symmetry_matrices("d4h")
    assert not all(_contains(d4h, m) for m in d4v)


def test_full_sphere_count_at_5_degrees():
    assert n_directions_full_sphere(5.0) == 1650
    rot, tilt = gallery_directions("c1", 5.0)
    assert len(rot) == 1650
    v = direction_from_angles(rot, tilt)
    # near-uniform: every point has a neighbour within ~1.3 steps, none closer than 0.5 step
    cos = v @ v.T
    np.fill_diagonal(cos, -1)
    nearest = np.rad2deg(np.arccos(np.clip(cos.max(axis=1), -1, 1)))
    assert nearest.max() < 6.5 and nearest.min() > 2.5


@pytest.mark.parametrize("name,step", [("c2", 5), ("c3", 5), ("c4", 5), ("c7", 5), ("d2", 5),
                                       ("d3", 5), ("d4v", 5), ("t", 5), ("o", 5), ("i1", 2),
                                       ("i2", 2), ("i3", 2), ("i4", 2), ("c3v", 5)])
def test_asymmetric_unit_is_G_times_smaller(name, step):
    full = len(gallery_directions("c1", step)[0])
    n = len(gallery_directions(name, step)[0])
    ratio = full / n / group_order(name, proper_only=True)
    assert abs(ratio - 1.0) < 0.05, (name, n, full)


def test_asymmetric_unit_covers_every_orbit_once():
    rot, tilt = gallery_directions("d2", 5.0)
    full_r, full_t = gallery_directions("c1", 5.0)
    # every full-sphere direction has a symmetry mate within one sampling step of the unit
    dist = symmetric_angular_distance(full_r[:, None], full_t[:, None], rot[None], tilt[None],
                                      "d2").min(axis=1)
    assert dist.max() < 5.0
    # and the unit holds no two mates closer than half a step
    own = symmetric_angular_distance(rot[:, None], tilt[:, None], rot[None], tilt[None], "d2")
    np.fill_diagonal(own, 180)
    assert own.min() > 2.0


def test_tilt_range_and_cn_wedge():
    rot, tilt = gallery_directions("c1", 5.0, tilt_min=80, tilt_max=100)
    assert tilt.min() >= 80 and tilt.max() <= 100
    expected = 1650 * (np.cos(np.deg2rad(80)) - np.cos(np.deg2rad(100))) / 2
    assert abs(len(rot) - expected) / expected < 0.05
    rot, tilt = gallery_directions("c4", 5.0)
    assert rot.min() >= 0 and rot.max() < 90
    assert len(gallery_directions("d2", 5.0, 0, 90)[0]) == pytest.approx(412, rel=0.05)
    with pytest.raises(ValueError):
        gallery_directions("c1", 5.0, 100, 80)


def test_angular_neighbours_symmetry_aware():
    rot, tilt = gallery_directions("c1", 5.0)
    indptr, idx = angular_neighbours(rot, tilt, "c1", 10.0)
    counts = np.diff(indptr)
    # a 10 degree cap holds about (10/5)^2 * pi / (4 pi / 1650 * (180/pi)^2 / 25) directions
    assert 9 <= np.median(counts) <= 15
    for d in (0, 500, 1649):
        nb = idx[indptr[d]:indptr[d + 1]]
        assert d in nb
        ang = symmetric_angular_distance(rot[d], tilt[d], rot[nb], tilt[nb], "c1")
        assert ang.max() <= 10.0 + 1e-9
    # c4: the wedge edges at rot = 0 and rot = 90 are neighbours through the 4-fold
    rot4, tilt4 = gallery_directions("c4", 5.0)
    ip4, idx4 = angular_neighbours(rot4, tilt4, "c4", 10.0)
    d = int(np.argmin(np.abs(rot4 - 1.0) + np.abs(tilt4 - 90.0)))
    nb = idx4[ip4[d]:ip4[d + 1]]
    assert np.any(rot4[nb] > 80)
    ip0, _ = angular_neighbours(rot, tilt, "c1", 0.0)
    assert np.all(np.diff(ip0) == 1)
