"""The configuration: schema (types, ranges, unknown keys) and cross-key rules."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cryosnake import config as cs_config
from cryosnake.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"


@pytest.fixture
def cfg():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def set_key(cfg, dotted, value):
    cfg = copy.deepcopy(cfg)
    *parents, last = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[last] = value
    return cfg


def test_default_config_is_valid_and_complete(cfg):
    cs_config.validate(cfg, SCHEMA)
    cs_config.check(cfg)
    schema = yaml.safe_load(SCHEMA.read_text())
    for section in ("compute", "demo", "ml2d", "significant"):
        assert set(cfg[section]) == set(schema["properties"][section]["properties"]), section
    seed_keys = {
        "ml2d": {"classes", "references", "fourier", "ctf_correction", "phase_flipped",
                 "high_res_limit", "mirror", "fast", "norm", "max_iterations", "psi_step",
                 "noise_std", "offset_std", "seed"},
        "significant": {"input", "symmetry", "reference", "angular_sampling", "tilt_min",
                        "tilt_max", "max_shift", "alpha0", "alphaF", "iterations", "imed",
                        "strict_direction", "angular_neighborhood", "fisher",
                        "target_resolution", "keep_intermediate", "seed"},
        "compute": {"backend", "chunk_size", "threads"},
    }
    for section, keys in seed_keys.items():
        assert keys <= set(cfg[section]), section


def test_one_source_of_defaults(cfg):
    """config.yaml holds exactly the schema's defaults, and the typed settings the library
    builds by default agree with them (so a default never differs by where it is read)."""
    from cryosnake.demo import DemoSettings
    from cryosnake.ml2d.settings import ML2DSettings
    from cryosnake.mlf2d.settings import MLF2DSettings
    from cryosnake.significant.iteration import SignificantSettings

    schema = yaml.safe_load(SCHEMA.read_text())
    for section, props in schema["properties"].items():
        if "properties" in props:
            for key, spec in props["properties"].items():
                assert cfg[section][key] == spec["default"], f"{section}.{key}"
        else:
            assert cfg[section] == props["default"], section
    ml2d_names = {"classes": "n_classes"}  # config key -> settings field, where they differ
    for settings, section in ((ML2DSettings(), "ml2d"), (MLF2DSettings(), "ml2d"),
                              (SignificantSettings(), "significant"), (DemoSettings(), "demo")):
        for key, value in cfg[section].items():
            name = ml2d_names.get(key, key) if section == "ml2d" else key
            if key == "phase_flipped":  # `auto` is resolved from the input's metadata
                assert (value, getattr(settings, name, False)) == ("auto", False)
            elif key == "particle_diameter":  # the seed's unmasked model is the settings'
                assert (value, getattr(settings, name)) == ("auto", 0.0)
            elif (section, key) == ("ml2d", "classes"):  # 12 for the demo's 12 views; seed: 3
                assert (value, getattr(settings, name)) == (12, 3)
            elif hasattr(settings, name):
                assert getattr(settings, name) == value, f"{type(settings).__name__}.{name}"


@pytest.mark.parametrize("value", ["auto", 1, 500])
def test_chunk_size_auto_or_a_count(cfg, value):
    cs_config.validate(set_key(cfg, "compute.chunk_size", value), SCHEMA)


def test_scipion_defaults(cfg):
    m, s = cfg["ml2d"], cfg["significant"]
    # classes: the seed's default is 3; ours is 12, so that the default demo (12 views) gives
    # Reconstruct Significant a real job (seeds/ml2d.md)
    assert (m["classes"], m["mirror"], m["fast"], m["norm"], m["max_iterations"]) == \
        (12, True, True, False, 100)
    assert (m["psi_step"], m["noise_std"], m["offset_std"], m["high_res_limit"]) == \
        (5.0, 1.0, 3.0, 20.0)
    assert (s["alpha0"], s["alphaF"], s["iterations"], s["angular_sampling"]) == \
        (80.0, 99.5, 50, 5.0)
    assert (s["tilt_min"], s["tilt_max"], s["max_shift"], s["imed"], s["fisher"]) == \
        (0.0, 180.0, -1.0, True, True)


@pytest.mark.parametrize("key,value,match", [
    ("ml2d.psi_step", 0, r"ml2d.psi_step = 0: .*allowed: .*> 0"),
    ("ml2d.psi_step", -5.0, r"ml2d.psi_step = -5.0"),
    ("ml2d.classes", 0, r"ml2d.classes = 0: .*≥ 1"),
    ("ml2d.mirror", "yes", r"ml2d.mirror = 'yes': .*not of type 'boolean'"),
    ("compute.backend", "gpu", r"compute.backend = 'gpu': .*one of auto, cpu, cuda"),
    ("compute.chunk_size", 0, r"compute.chunk_size = 0: .*allowed: 'auto' or type integer; ≥ 1"),
    ("compute.chunk_size", "big", r"compute.chunk_size = 'big'"),
    ("significant.alpha0", 100, r"significant.alpha0 = 100: .*< 100"),
    ("significant.tilt_max", 200, r"significant.tilt_max = 200: .*≤ 180"),
    ("significant.max_shift", -3, r"significant.max_shift = -3: .*≥ -1"),
    ("ml2d.bogus", 1, r"ml2d: Additional properties are not allowed \('bogus'"),
    ("ml2d.phase_flipped", "yes", r"ml2d.phase_flipped = 'yes': .*one of auto, True, False"),
    ("significant.classes", "some", r"significant.classes = 'some'"),
    ("significant.classes", [0, 2], r"significant.classes = \[0, 2\]"),
    ("significant.classes", {"min_size": 3}, r"significant.classes = \{'min_size': 3\}"),
    ("significant.classes", {"min_fraction": 2}, r"significant.classes = \{'min_fraction'"),
])
def test_schema_errors_name_key_and_range(cfg, key, value, match):
    with pytest.raises(InputError, match=match):
        cs_config.validate(set_key(cfg, key, value), SCHEMA)


@pytest.mark.parametrize("value", ["all", [3, 1], {"min_particles": 10}, {"min_share": 0.5}])
def test_class_selection_forms_are_valid(cfg, value):
    cs_config.validate(set_key(cfg, "significant.classes", value), SCHEMA)


@pytest.mark.parametrize("key,value,match", [
    ("significant.alpha0", 99.9, r"alpha0 = 99.9 must be smaller than significant.alphaF"),
    ("significant.tilt_min", 170.0, r"tilt_min = 170.0 is larger than tilt_max = 90"),
    ("significant.symmetry", "x7", r"symmetry: unknown symmetry group 'x7'; valid Xmipp names"),
    ("significant.symmetry", "i1", r"alpha0 = 80.0% is too low for symmetry 'i1'"),
    ("ml2d.references", "nope.mrcs", r"ml2d.references = 'nope.mrcs': no such file"),
    ("particles", "missing.star", r"particles = 'missing.star': no such file"),
    ("demo.defocus_min", 40000.0, r"defocus_min = 40000.0 is larger"),
    ("ml2d.norm", True, None),  # with particle_diameter auto: no mask, no problem
])
def test_cross_key_rules(cfg, key, value, match):
    bad = set_key(set_key(cfg, "significant.tilt_max", 90.0), key, value)
    cs_config.validate(bad, SCHEMA)
    if match is None:
        cs_config.check(bad)
        return
    with pytest.raises(InputError, match=match):
        cs_config.check(bad)


def test_norm_with_a_particle_diameter_is_a_clear_error(cfg):
    bad = set_key(set_key(cfg, "ml2d.norm", True), "ml2d.particle_diameter", 150.0)
    cs_config.validate(bad, SCHEMA)
    with pytest.raises(InputError, match=r"particle_diameter = 150.0 cannot be combined with "
                                         r"ml2d.norm: true"):
        cs_config.check(bad)
    from cryosnake.pipeline.ml2d import settings_from_config

    auto = settings_from_config(set_key(cfg, "ml2d.norm", True)["ml2d"])
    assert auto.norm and auto.particle_diameter == 0.0


def test_cuda_backend_without_gpu_is_a_clear_error(cfg, monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    from cryosnake import kernels

    if kernels.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InputError, match="compute.backend: .*no usable CUDA GPU"):
        cs_config.check_backend(set_key(cfg, "compute.backend", "cuda"))
    assert cs_config.check_backend(cfg) == "cpu"
    # jobs sent to a cluster check on their GPU node, not on the submitting host
    assert cs_config.check_backend(set_key(cfg, "compute.backend", "cuda"), on_this_host=False) \
        == "cuda"


def test_the_hand_run_config_is_valid(cfg):
    """.test/config/config.yaml (a small run to try by hand) over the defaults, as Snakemake
    merges them, passes the schema and the cross-key checks."""
    merged = copy.deepcopy(cfg)
    for key, value in yaml.safe_load((REPO / ".test/config/config.yaml").read_text()).items():
        if isinstance(value, dict):
            merged[key].update(value)
        else:
            merged[key] = value
    cs_config.validate(merged, SCHEMA)
    cs_config.check(merged)
    assert merged["ml2d"]["max_iterations"] == 3 and merged["outdir"] == ".test/results"
