"""The 2D-classification strategy the ML2D jobs use (issue 17.3): chosen once, one interface
for ML2D and MLF2D, and an ML2D job that does not import MLF2D."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from cryosnake.classify2d.strategy import Classifier2D, classifier, join_assignments
from cryosnake.ctf import CTFParams

OPERATIONS = [*Classifier2D.__annotations__,
              *(name for name in vars(Classifier2D) if not name.startswith("_"))]


def test_both_strategies_have_every_operation():
    for fourier in (False, True):
        strategy = classifier(fourier)
        missing = [op for op in OPERATIONS if not hasattr(strategy, op)]
        assert not missing, (strategy.name, missing)
    assert (classifier(False).name, classifier(True).name) == ("ML2D", "MLF2D")


def test_an_ml2d_job_does_not_import_mlf2d():
    code = ("import sys; from cryosnake.pipeline import ml2d; "
            "ml2d.settings_from_config(dict(fourier=False, classes=2, psi_step=5.0, "
            "mirror=True, fast=True, norm=False, noise_std=1.0, offset_std=3.0, seed=1, "
            "particle_diameter='auto', reseed_fraction=0.25, reseed_iterations=10, "
            "loglik_tolerance=0.01)); "
            "print(any(m.startswith('cryosnake.mlf2d') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_join_assignments_keeps_chunk_order():
    parts = [{"class_number": np.array([1, 2]), "psi_deg": np.array([0.0, 5.0])},
             {"class_number": np.array([3]), "psi_deg": np.array([10.0])}]
    joined = join_assignments(iter(parts))
    assert joined["class_number"].tolist() == [1, 2, 3]
    assert joined["psi_deg"].tolist() == [0.0, 5.0, 10.0]


def test_mlf2d_particle_data_subset_is_that_of_the_rows():
    from cryosnake.mlf2d.strategy import CTFGroups

    ctf = CTFParams(np.arange(5.0) * 1000 + 8000, np.arange(5.0) * 1000 + 7900, np.zeros(5),
                    300.0, 2.7, 0.1)
    data = CTFGroups(ctf, np.array([0, 0, 1, 1, 2]))
    part = data.subset(slice(1, 4))
    assert part.groups.tolist() == [0, 1, 1]
    assert part.ctf.defocus_u.tolist() == [9000.0, 10000.0, 11000.0]
    assert part.ctf.voltage == 300.0


def test_mlf2d_defocus_groups_once_give_each_chunk_its_ctf_and_groups(tmp_path):
    """The groups the start job writes once give every chunk the CTF and group labels that
    the whole table gives (issue 17.3: not recomputed by each E-step job)."""
    import pandas as pd

    from cryosnake.io.classify2d import read_defocus_groups, write_defocus_groups
    from cryosnake.io.particles import chunk_rows
    from cryosnake.mlf2d import MLF2DSettings, particle_groups

    rng = np.random.default_rng(5)
    n = 130
    du = rng.uniform(10000, 30000, n)
    table = pd.DataFrame({"rlnDefocusU": du, "rlnDefocusV": du - 150.0,
                          "rlnDefocusAngle": rng.uniform(0, 180, n), "rlnVoltage": 300.0,
                          "rlnSphericalAberration": 2.7, "rlnAmplitudeContrast": 0.1},
                         index=np.arange(n) + 7)  # the table's index plays no part
    strategy, settings = classifier(True), MLF2DSettings()
    groups = strategy.defocus_groups(table, settings)
    write_defocus_groups(tmp_path / "defocus_groups.npz", groups)
    read = read_defocus_groups(tmp_path / "defocus_groups.npz", strategy.groups_type)
    ctf, whole = particle_groups(table, settings)
    np.testing.assert_array_equal(read.labels, whole.labels)
    np.testing.assert_array_equal(read.defocus, whole.defocus)
    assert read.labels.dtype == np.int64 and len(read.defocus) > 2
    for c in range(3):
        rows = chunk_rows(n, 50, c)
        data = strategy.particle_data(strategy.particle_ctf(table, settings), rows, read)
        np.testing.assert_array_equal(data.groups, whole.labels[rows])
        for field in ctf.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(data.ctf, field),
                                          getattr(ctf.subset(rows), field), err_msg=field)
    assert classifier(False).defocus_groups(table, settings) is None
