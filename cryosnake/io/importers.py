"""Particle import: RELION 3.0/3.1 STAR, Xmipp ``.xmd``, cryoSPARC ``.cs`` and bare MRC stacks
become one canonical RELION 3.1 STAR, validated before any compute.

The canonical table keeps every input column in input order, points at the original stacks
(no pixel copy) and has one optics table with the pixel size (Å/px), box and, when known, the
microscope parameters. :func:`validate` checks what every later step relies on and raises
:class:`~cryosnake.errors.InputError` with the file, the row and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryosnake import ctf
from cryosnake.errors import InputError
from cryosnake.geometry import rotation2d
from cryosnake.io import mrc, star
from cryosnake.io.particles import resolve_stack

STACK_SUFFIXES = (".mrcs", ".mrc", ".st")

#: Xmipp metadata labels → RELION labels (units agree: Å, degrees, kV, mm).
XMIPP_LABELS = {
    "image": "rlnImageName",
    "micrograph": "rlnMicrographName",
    "ctfDefocusU": "rlnDefocusU",
    "ctfDefocusV": "rlnDefocusV",
    "ctfDefocusAngle": "rlnDefocusAngle",
    "ctfVoltage": "rlnVoltage",
    "ctfSphericalAberration": "rlnSphericalAberration",
    "ctfQ0": "rlnAmplitudeContrast",
    "ctfPhaseShift": "rlnPhaseShift",
    "ref": "rlnClassNumber",
}


@dataclass
class ImportOptions:
    """What the import needs from the config."""

    sampling: float | None = None  # config ``sampling`` (Å/px), overrides a missing header
    require_ctf: bool = False  # MLF2D with CTF correction
    check_pixels: bool = True  # scan every image for NaN/Inf


def detect_format(source: str) -> str:
    """``star``, ``xmd``, ``cs`` or ``mrc`` from the file name."""
    suffix = Path(source).suffix.lower()
    if suffix == ".star":
        return "star"
    if suffix == ".xmd":
        return "xmd"
    if suffix == ".cs":
        return "cs"
    if suffix in STACK_SUFFIXES:
        return "mrc"
    raise InputError(
        f"particles: {source!r} has an unknown file type {suffix!r}. cryosnake reads RELION "
        f".star, Xmipp .xmd, cryoSPARC .cs and MRC stacks ({', '.join(STACK_SUFFIXES)}), or the "
        "word 'demo' for the built-in demo data."
    )


# --- readers: each returns (particles, optics or None, folder for relative image paths) -----


def read_relion(path: Path):
    """RELION 3.1+ (optics + particles) or 3.0 (one table; pixel size from
    ``rlnDetectorPixelSize`` [µm] × 10⁴ / ``rlnMagnification``)."""
    particles, optics = star.read_particles(path)
    if optics is None:
        particles, optics = _optics_from_relion30(particles, path)
    else:
        optics = optics.copy()
        if "rlnImagePixelSize" not in optics and "rlnMicrographOriginalPixelSize" in optics:
            optics["rlnImagePixelSize"] = optics["rlnMicrographOriginalPixelSize"]
    return particles, optics, path.parent


def _optics_from_relion30(particles: pd.DataFrame, source: Path):
    """Build optics groups from the per-particle microscope columns of a RELION 3.0 table."""
    particles = particles.copy()
    if {"rlnDetectorPixelSize", "rlnMagnification"} <= set(particles.columns):
        particles["rlnImagePixelSize"] = (
            numbers(particles, "rlnDetectorPixelSize", source) * 1e4
            / numbers(particles, "rlnMagnification", source)
        )
    keys = [c for c in ("rlnImagePixelSize", *ctf.OPTICS_COLUMNS) if c in particles.columns]
    if keys:
        groups = pd.DataFrame({k: numbers(particles, k, source) for k in keys}).round(6)
        codes, uniques = pd.factorize(pd.MultiIndex.from_frame(groups))
        optics = pd.DataFrame(list(uniques), columns=keys)
        particles = particles.drop(columns=keys)
    else:
        codes = np.zeros(len(particles), dtype=int)
        optics = pd.DataFrame(index=[0])
    optics.insert(0, "rlnOpticsGroup", np.arange(1, len(optics) + 1))
    particles["rlnOpticsGroup"] = codes + 1
    return particles, optics


def numbers(table: pd.DataFrame, label: str, source: Path, dtype=float) -> np.ndarray:
    """Column ``label`` as ``dtype``; a value that is not a (finite, for integers) number is an
    :class:`InputError` naming the file, the row and the label."""
    values = pd.to_numeric(table[label], errors="coerce").to_numpy(float)
    if dtype is float:  # NaN given as such passes (the checks of each column judge it)
        bad = np.isnan(values) & table[label].notna().to_numpy()
    else:
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(values) & (values == np.round(values)) & (abs(values) < 2**62))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"{source}, row {row + 1}: {label} = {table[label].iloc[row]!r} is not "
                         f"a{'n integer' if dtype is not float else ' number'}.")
    return values.astype(dtype)


def read_xmd(path: Path):
    """Xmipp metadata: image, CTF and 2D alignment labels (converted to RELION's meaning)."""
    blocks = star.read_blocks(path)
    table = next((t for t in blocks.values() if "image" in t.columns), None)
    if table is None:
        raise InputError(f"{path}: no data block with an _image label; not a particle .xmd.")
    table = table.reset_index(drop=True)
    if "enabled" in table:
        table = table[numbers(table, "enabled", path, int) != -1].reset_index(drop=True)
    particles = table.rename(columns=XMIPP_LABELS)
    if "rlnAmplitudeContrast" in particles:  # old Xmipp stores Q0 negative
        particles["rlnAmplitudeContrast"] = particles["rlnAmplitudeContrast"].abs()
    for label in ("ctfSamplingRate", "samplingRate"):
        if label in particles and "rlnImagePixelSize" not in particles:
            particles["rlnImagePixelSize"] = numbers(particles, label, path)
    if "anglePsi" in particles:
        _xmipp_alignment_to_relion(particles, path)
    particles, optics = _optics_from_relion30(particles, path)
    return particles, optics, path.parent


def _xmipp_alignment_to_relion(table: pd.DataFrame, source: Path | str = "the .xmd") -> None:
    """Xmipp 2D alignment (psi, shiftX/Y in px, flip; spec §0.3: aligned = Sh_b[M·Rot_psi[X]])
    → cryosnake/RELION (aligned = Rot_{−ψ}[Mir^μ[Sh_o[X]]]): without flip ψ = −psi,
    o = R(−psi)·b; with flip ψ = psi, o = diag(−1, 1)·R(psi)·b. Needs the pixel size for Å."""
    psi = numbers(table, "anglePsi", source)
    b = np.stack([numbers(table, s, source) if s in table else 0.0 * psi
                  for s in ("shiftX", "shiftY")], -1)
    flip = numbers(table, "flip", source, int) if "flip" in table else np.zeros(len(psi), int)
    o_plain = np.einsum("nij,nj->ni", rotation2d(-psi), b)
    o_flip = np.einsum("nij,nj->ni", rotation2d(psi), b) * np.array([-1.0, 1.0])
    origin = np.where(flip[:, None] == 1, o_flip, o_plain)
    table["rlnAnglePsi"] = np.where(flip == 1, psi, -psi)
    table["cryosnakeOriginXPx"], table["cryosnakeOriginYPx"] = origin[:, 0], origin[:, 1]
    table["cryosnakeMirror"] = flip


def read_cryosparc(path: Path):
    """cryoSPARC particles (``blob/path``, ``blob/idx`` 0-based, ``blob/psize_A``, ``ctf/*``)."""
    try:
        cs = np.load(path)
        names = cs.dtype.names or ()
    except Exception as err:
        raise InputError(f"{path} is not a readable cryoSPARC .cs file ({err}).") from err
    missing = [f for f in ("blob/path", "blob/idx") if f not in names]
    if missing:
        raise InputError(f"{path}: the .cs file has no {', '.join(missing)} field; export the "
                         "particles (with blobs) from cryoSPARC, e.g. a Extract or Select job.")
    try:
        paths = [p.decode() if isinstance(p, bytes) else str(p) for p in cs["blob/path"]]
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: a blob/path is not text ({err}); the .cs file is damaged, "
                         "export it from cryoSPARC again.") from None
    paths = [p[1:] if p.startswith(">") else p for p in paths]
    particles = pd.DataFrame({
        "rlnImageName": [f"{int(i) + 1:06d}@{p}" for i, p in zip(cs["blob/idx"], paths,
                                                                  strict=True)],
    })
    if "uid" in names:
        particles["cryosparcUid"] = cs["uid"].astype(np.uint64).astype(str)
    fields = {"blob/psize_A": "rlnImagePixelSize", "ctf/df1_A": "rlnDefocusU",
              "ctf/df2_A": "rlnDefocusV", "ctf/accel_kv": "rlnVoltage",
              "ctf/cs_mm": "rlnSphericalAberration", "ctf/amp_contrast": "rlnAmplitudeContrast"}
    for field, label in fields.items():
        if field in names:
            particles[label] = cs[field].astype(float)
    if "ctf/df_angle_rad" in names:
        particles["rlnDefocusAngle"] = np.rad2deg(cs["ctf/df_angle_rad"].astype(float))
    if "ctf/phase_shift_rad" in names:
        particles["rlnPhaseShift"] = np.rad2deg(cs["ctf/phase_shift_rad"].astype(float))
    particles, optics = _optics_from_relion30(particles, path)
    optics[ctf.PHASE_FLIP_COLUMN] = 0  # cryoSPARC extracts without phase flipping
    # cryoSPARC paths are relative to the project folder, usually the .cs file's grandparent
    base = path.parent.parent if not (path.parent / paths[0]).exists() else path.parent
    return particles, optics, base


def read_stack(path: Path, sampling: float | None):
    """A bare MRC stack: one particle per section; pixel size from the config or the header."""
    info = mrc.header_info(path)
    if sampling is None and info["sampling"] > 0:
        sampling = info["sampling"]
    particles = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@{path}" for i in range(info["shape"][0])],
        "rlnOpticsGroup": 1,
    })
    optics = pd.DataFrame({"rlnOpticsGroup": [1]})
    if sampling:
        optics["rlnImagePixelSize"] = float(sampling)
    return particles, optics, None


def describe(source) -> tuple[int, list[str]]:
    """``(number of particles, image stacks)`` of ``source`` for building the workflow: the
    stacks are resolved as the import resolves them; ones that cannot be found are left out
    (the import job names them). Nothing is validated here."""
    path = Path(source)
    fmt = detect_format(str(source))
    if fmt == "mrc":
        return int(mrc.header_info(path)["shape"][0]), []
    reader = {"star": read_relion, "xmd": read_xmd, "cs": read_cryosparc}[fmt]
    particles, _, base = reader(path)
    _require_particles(particles, path)
    stacks = []
    if "rlnImageName" in particles and len(particles):
        for p in pd.unique(star.split_image_names(particles["rlnImageName"])[1]):
            try:
                stacks.append(str(resolve_stack(p, base, path)))
            except InputError:
                continue
    return int(len(particles)), stacks


# --- canonical table and validation -----------------------------------------------------------


def load(source, options: ImportOptions):
    """Read ``source`` in any supported format and return the canonical, validated
    ``(particles, optics)``. Raises :class:`InputError` on any problem."""
    path = Path(source)
    fmt = detect_format(str(source))
    if not path.is_file():
        raise InputError(f"particles: {source} does not exist (looked in {Path.cwd()}). Give a "
                         "path relative to the folder you run snakemake in, or an absolute path.")
    if fmt == "star":
        particles, optics, base = read_relion(path)
    elif fmt == "xmd":
        particles, optics, base = read_xmd(path)
    elif fmt == "cs":
        particles, optics, base = read_cryosparc(path)
    else:
        particles, optics, base = read_stack(path, options.sampling)
    particles = particles.reset_index(drop=True)
    optics = optics.reset_index(drop=True)
    _require_particles(particles, path)
    _check_optics_groups(particles, optics, path)
    _fill_pixel_size(optics, options.sampling, path)
    particles = _resolve_paths(particles, base, path)
    box = validate(particles, optics, path, options)
    optics["rlnImageSize"] = box
    optics["rlnImageDimensionality"] = 2
    if "rlnOpticsGroupName" not in optics:
        optics.insert(1, "rlnOpticsGroupName",
                      [f"opticsGroup{g}" for g in optics["rlnOpticsGroup"]])
    if "cryosnakeOriginXPx" in particles:  # converted Xmipp shifts, now that sampling is known
        s = star.merge_optics(particles, optics)["rlnImagePixelSize"].to_numpy(float)
        particles["rlnOriginXAngst"] = particles.pop("cryosnakeOriginXPx") * s
        particles["rlnOriginYAngst"] = particles.pop("cryosnakeOriginYPx") * s
    return particles, optics


def _require_particles(particles: pd.DataFrame, source: Path) -> None:
    if len(particles) == 0:
        raise InputError(f"{source} holds no particles (its particle table is empty); point "
                         "`particles:` at the STAR / .xmd / .cs of an extraction or selection "
                         "job that kept particles.")


def _check_optics_groups(particles: pd.DataFrame, optics: pd.DataFrame, source: Path) -> None:
    """Every particle's rlnOpticsGroup must be a row of the optics table."""
    if "rlnOpticsGroup" not in particles:
        return
    # map(str): a missing value reads "nan" (astype(str) keeps it NaN in pandas 3)
    known = set(optics["rlnOpticsGroup"].map(str).str.strip())
    groups = particles["rlnOpticsGroup"].map(str).str.strip()
    missing = ~groups.isin(known)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise InputError(
            f"{source}, row {row + 1}: rlnOpticsGroup {groups.iloc[row]} is not in data_optics "
            f"(groups {', '.join(sorted(known))}; {int(missing.sum())} particle(s) affected). Add "
            "the group to data_optics or fix the particles' rlnOpticsGroup.")


def _fill_pixel_size(optics: pd.DataFrame, sampling: float | None, source: Path) -> None:
    if "rlnImagePixelSize" not in optics:
        optics["rlnImagePixelSize"] = np.nan
    ps = pd.Series(numbers(optics, "rlnImagePixelSize", source), index=optics.index)
    optics["rlnImagePixelSize"] = ps.where(ps > 0, float(sampling)) if sampling else ps
    bad = ~(optics["rlnImagePixelSize"] > 0)
    if bad.any():
        raise InputError(
            f"{source}: no pixel size for optics group(s) "
            f"{optics.loc[bad, 'rlnOpticsGroup'].tolist()}. Set `sampling:` (Å/px) in your "
            "config, or add rlnImagePixelSize to data_optics (RELION 3.1) / "
            "rlnDetectorPixelSize and rlnMagnification (RELION 3.0) / ctfSamplingRate (Xmipp)."
        )


def _resolve_paths(particles: pd.DataFrame, base: Path | None, source: Path) -> pd.DataFrame:
    """Rewrite image paths that only resolve relative to the metadata folder so that they
    resolve from the working directory (relative if below it, else absolute)."""
    index, paths = star.split_image_names(particles["rlnImageName"])
    bad = ~np.isfinite(index.astype(float)) | (index.astype(float) < 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"{source}, row {row + 1}: rlnImageName "
                         f"{particles['rlnImageName'].iloc[row]!r} is not 'N@stack.mrcs' with "
                         "N ≥ 1 (RELION image indices are 1-based).")
    mapping = {}
    for p in pd.unique(paths):
        found = resolve_stack(p, base, source)
        if found != Path(p):
            try:
                found = Path(os.path.relpath(found.resolve(), Path.cwd()))
                if str(found).startswith(".."):
                    found = found.resolve()
            except ValueError:
                found = found.resolve()
        mapping[p] = str(found)
    if any(k != v for k, v in mapping.items()):
        new = [f"{int(i):06d}@{mapping[p]}" for i, p in zip(index, paths, strict=True)]
        particles = particles.assign(rlnImageName=new)
    return particles


def validate(particles: pd.DataFrame, optics: pd.DataFrame, source: Path,
             options: ImportOptions) -> int:
    """Check stacks, indices, box sizes, pixels and CTF columns. Returns the box size."""
    index, paths = star.split_image_names(particles["rlnImageName"])
    index = index.astype(np.int64)
    boxes = {}
    for p in pd.unique(paths):
        info = mrc.header_info(p)
        n, ny, nx = info["shape"]
        rows = np.flatnonzero(paths == p)
        if ny != nx:
            raise InputError(f"{source}, row {rows[0] + 1}: images in {p} are {nx}×{ny} px; "
                             "particles must be square. Re-extract with a square box.")
        beyond = rows[index[rows] > n]
        if len(beyond):
            r = int(beyond[0])
            raise InputError(f"{source}, row {r + 1}: image index {index[r]} is beyond the end "
                             f"of {p}, which holds {n} images. The STAR file and the stack do "
                             "not match: re-extract, or point rlnImageName at the right stack.")
        boxes[p] = (nx, int(rows[0]))
    sizes = {b for b, _ in boxes.values()}
    if len(sizes) > 1:
        (p1, (b1, r1)), (p2, (b2, r2)) = [
            next(kv for kv in boxes.items() if kv[1][0] == s) for s in sorted(sizes)[:2]]
        raise InputError(f"{source}: mixed box sizes: row {r1 + 1} ({p1}) is {b1} px but row "
                         f"{r2 + 1} ({p2}) is {b2} px. All particles must share one box size; "
                         "re-extract them with the same box (or rescale them with "
                         "relion_image_handler).")
    box = sizes.pop()
    if options.check_pixels:
        _check_finite(index, paths, source)
    if options.require_ctf:
        table = star.merge_optics(particles, optics)
        missing = ctf.missing_columns(table)
        if missing:
            raise InputError(
                f"{source}: ml2d.fourier (MLF2D) with ctf_correction needs CTF parameters, but "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing. Import "
                "particles with CTF (e.g. RELION Extract after CtfFind), or set "
                "ml2d.ctf_correction: false, or ml2d.fourier: false for ML2D."
            )
        values = table[[c for c in (*ctf.REQUIRED_COLUMNS, "rlnDefocusV") if c in table]]
        values = values.astype(float)
        bad = ~np.isfinite(values.to_numpy()).all(axis=1)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise InputError(f"{source}, row {r + 1}: CTF parameters are missing or not finite.")
    return box


def _check_finite(index: np.ndarray, paths: np.ndarray, source: Path, block: int = 2048) -> None:
    """Scan the used images for NaN/Inf, stack by stack, memory-mapped, a block at a time."""
    for p in pd.unique(paths):
        rows = np.flatnonzero(paths == p)
        with mrc.open_memmap(p) as m:
            data = m.data if m.data.ndim == 3 else m.data[None]
            for start in range(0, len(rows), block):
                sel = rows[start:start + block]
                ok = np.isfinite(data[index[sel] - 1]).all(axis=(1, 2))
                if not ok.all():
                    r = int(sel[np.flatnonzero(~ok)[0]])
                    raise InputError(
                        f"{source}, row {r + 1}: image {index[r]}@{p} contains NaN or Inf "
                        "pixels. Remove the particle from the STAR file, or re-extract it "
                        "(corrupt stacks usually come from an interrupted extraction)."
                    )
