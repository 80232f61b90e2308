"""Configuration: schema validation with friendly messages, and the cross-key rules.

``snakemake.utils.validate`` enforces ``config/schema.yaml`` (types, ranges, unknown keys) and
fills defaults; :func:`check` then enforces what a JSON schema cannot say (alpha0 < alphaF,
tilt_min ≤ tilt_max, files that must exist, a symmetry group we know, ...). Every message names
the key, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from cryosnake.errors import InputError
from cryosnake.significant.weights import check_alpha_symmetry
from cryosnake.volume3d.symmetry import parse_symmetry


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _allowed(schema: dict) -> str:
    if "oneOf" in schema:  # e.g. `auto` or a number
        return " or ".join(repr(s["const"]) if "const" in s else _allowed(s)
                           for s in schema["oneOf"])
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(map(str, schema["enum"])))
    if "type" in schema:
        parts.append(f"type {schema['type']}")
    for name, sym in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                      ("exclusiveMaximum", "<")):
        if name in schema:
            parts.append(f"{sym} {schema[name]}")
    if "properties" in schema:
        parts.append("keys: " + ", ".join(schema["properties"]))
    return "; ".join(parts)


def validate(config: dict, schema_path) -> None:
    """Validate ``config`` in place (defaults filled) against the schema, with one clear line per
    problem. Raises :class:`InputError`."""
    from snakemake.utils import validate as snakemake_validate

    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config),
                    key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            key = _key(err.absolute_path)
            if err.validator == "additionalProperties":
                lines.append(f"  {key}: {err.message}; allowed {_allowed(err.schema)}")
            else:
                lines.append(f"  {key} = {err.instance!r}: {err.message}; allowed: "
                             f"{_allowed(err.schema)}")
        raise InputError("invalid configuration:\n" + "\n".join(lines)
                         + "\nFix these keys in your config file (see config/schema.yaml).")
    snakemake_validate(config, str(schema_path))


def check(config: dict) -> None:
    """Cross-key rules that the schema cannot express. Raises :class:`InputError`."""
    sig, ml2d, demo = config["significant"], config["ml2d"], config["demo"]
    problems = []
    if not sig["alpha0"] < sig["alphaF"]:
        problems.append(
            f"significant.alpha0 = {sig['alpha0']} must be smaller than significant.alphaF = "
            f"{sig['alphaF']}: significance starts relaxed (e.g. 80 %) and ends strict (99.5 %).")
    if sig["tilt_min"] > sig["tilt_max"]:
        problems.append(f"significant.tilt_min = {sig['tilt_min']} is larger than tilt_max = "
                        f"{sig['tilt_max']}; allowed 0 ≤ tilt_min ≤ tilt_max ≤ 180.")
    try:
        parse_symmetry(sig["symmetry"])
    except ValueError as err:
        problems.append(f"significant.symmetry: {err}")
    else:
        try:
            check_alpha_symmetry(sig["alpha0"], sig["symmetry"])
        except ValueError as err:
            problems.append(f"significant.alpha0: {err}")
    if sig["input"] == "ml2d" and not ml2d["references"] and ml2d["classes"] < 2:
        problems.append(
            f"ml2d.classes = {ml2d['classes']} gives one 2D average, but Reconstruct Significant "
            "(significant.input: ml2d) needs several averages; use more classes.")
    if demo["defocus_min"] > demo["defocus_max"]:
        problems.append(f"demo.defocus_min = {demo['defocus_min']} is larger than "
                        f"demo.defocus_max = {demo['defocus_max']}.")
    paths = (("particles", config["particles"]), ("ml2d.references", ml2d["references"]),
             ("significant.reference", sig["reference"]), ("significant.input", sig["input"]))
    for key, value in (("outdir", config["outdir"]), *paths):
        if value is not None and ("{" in str(value) or "}" in str(value)):
            problems.append(f"{key} = {value!r}: Snakemake reads {{ and }} in a path as a "
                            "wildcard; rename the file or folder (or link it under a name "
                            "without braces).")
    for key, value in paths:
        if value in (None, "demo", "ml2d") or "{" in str(value) or "}" in str(value):
            continue
        if not Path(value).is_file():
            problems.append(f"{key} = {value!r}: no such file (relative paths are relative to "
                            f"{Path.cwd()}, the folder snakemake runs in).")
    if ml2d["fourier"] and ml2d["norm"]:
        problems.append(
            "ml2d.norm: true is not available with ml2d.fourier: true (MLF2D); set "
            "ml2d.norm: false, or ml2d.fourier: false to refine the normalisation with ML2D.")
    if ml2d["norm"] and ml2d["particle_diameter"] not in ("auto", 0, 0.0):
        problems.append(
            f"ml2d.particle_diameter = {ml2d['particle_diameter']!r} cannot be combined with "
            "ml2d.norm: true (the per-image background of the norm model needs the whole "
            "image); set particle_diameter: auto (no mask with norm) or 0, or norm: false.")
    if problems:
        raise InputError("invalid configuration:\n  " + "\n  ".join(problems))


def check_classes(n_classes: int, n_particles: int, ml2d: dict, particles) -> None:
    """ML2D needs at least one particle per class (checked by ML2D's start job, before any
    compute: other targets, the import alone for one, need no classes). Raises
    :class:`InputError`."""
    if n_classes <= n_particles:
        return
    key = (f"ml2d.references = {ml2d['references']!r} holds {n_classes} references"
           if ml2d["references"] else f"ml2d.classes = {n_classes}")
    raise InputError(
        f"{key}, but the particles ({particles}) number only {n_particles}: every class needs "
        f"particles. Use at most {n_particles} classes (a few hundred particles per class is "
        "typical) or more particles.")


def check_backend(config: dict, on_this_host: bool = True) -> str:
    """Resolve ``compute.backend`` now, so a missing GPU stops the run before any job.

    ``on_this_host=False`` (jobs submitted to a cluster) accepts an explicit ``cuda`` without
    a GPU on the submitting host: the jobs check again on their GPU node and stop with the
    same message there.
    """
    from cryosnake.kernels import BackendUnavailable, resolve_backend_name

    if not on_this_host and config["compute"]["backend"] == "cuda":
        return "cuda"
    try:
        return resolve_backend_name(config["compute"]["backend"])
    except BackendUnavailable as err:
        raise InputError(f"compute.backend: {err}") from err
