"""Particle import from every supported format, and the clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile

from cryosnake import demo
from cryosnake.errors import InputError
from cryosnake.io import importers, mrc, star
from cryosnake.io.particles import (
    ParticleIndex,
    ParticleStack,
    auto_chunk_size,
    chunk_rows,
    n_chunks,
    resolve_chunk_size,
    write_particle_index,
)
from cryosnake.mlf2d import resolve_phase_flipped
from cryosnake.pipeline.data import import_job

BOX = 16


def make_stack(path, n, box=BOX, sampling=2.5, seed=0):
    data = np.random.default_rng(seed).normal(size=(n, box, box)).astype(np.float32)
    mrc.write_stack(path, data, sampling)
    return data


def relion31(tmp_path, n=6, **extra):
    data = make_stack(tmp_path / "stack.mrcs", n)
    particles = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@stack.mrcs" for i in range(n)],
        "rlnOpticsGroup": 1,
        "rlnDefocusU": np.linspace(10000, 20000, n),
        "rlnDefocusV": np.linspace(9900, 19900, n),
        "rlnDefocusAngle": 12.5,
        "myLabel": [f"m{i}" for i in range(n)],
        **extra,
    })
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"],
                           "rlnImagePixelSize": [2.5], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.07]})
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "p.star")
    return tmp_path / "p.star", data


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_particle_index_reads_the_same_particles_and_ctf_as_the_star(tmp_path):
    """The run's particle index (what an E-step job reads instead of the STAR, issue 16): two
    stacks found through the STAR's folder, particles interleaved between them, two optics
    groups with their own CTF columns: the same images of any rows, the same CTF of every
    particle, box, sampling and the phase-flip flag; none of them without CTF."""
    from cryosnake.ctf import CTFParams

    a = make_stack(tmp_path / "a.mrcs", 4, seed=1)
    b = make_stack(tmp_path / "b.mrcs", 3, seed=2)
    order = [("a", 2), ("b", 1), ("a", 0), ("b", 2), ("a", 3), ("b", 0), ("a", 1)]
    particles = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@{s}.mrcs" for s, i in order],
        "rlnOpticsGroup": [1, 2, 1, 2, 1, 2, 1],
        "rlnDefocusU": np.linspace(10000, 16000, 7), "rlnDefocusV": np.linspace(9900, 15900, 7),
        "rlnDefocusAngle": np.linspace(0, 60, 7)})
    optics = pd.DataFrame({"rlnOpticsGroup": [1, 2], "rlnOpticsGroupName": ["g1", "g2"],
                           "rlnImagePixelSize": [2.5, 2.5], "rlnImageSize": [BOX, BOX],
                           "rlnImageDimensionality": [2, 2], "rlnVoltage": [300.0, 200.0],
                           "rlnSphericalAberration": [2.7, 2.0],
                           "rlnAmplitudeContrast": [0.07, 0.1]})
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "p.star")
    work = tmp_path / "work"  # the stacks are found through the STAR's folder only
    work.mkdir()
    import os

    os.chdir(work)
    expected_images = np.stack([{"a": a, "b": b}[s][i] for s, i in order])
    with ParticleStack(tmp_path / "p.star") as ps:
        ctf = CTFParams.from_star(ps.table)
        write_particle_index(work / "index.npz", ps, ctf, True)
        write_particle_index(work / "plain.npz", ps)
    with ParticleIndex(work / "index.npz") as pi:
        assert (pi.n, pi.box, pi.sampling, pi.phase_flipped) == (7, BOX, 2.5, True)
        rows = np.array([6, 0, 3, 1])
        np.testing.assert_array_equal(pi.read(rows), expected_images[rows])
        np.testing.assert_array_equal(pi.read_chunk(1, 3), expected_images[3:6])
        for field in ctf.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(pi.ctf, field),
                                          np.broadcast_to(getattr(ctf, field), (7,)),
                                          err_msg=field)
        np.testing.assert_array_equal(pi.ctf.voltage, [300, 200, 300, 200, 300, 200, 300])
    with ParticleIndex(work / "plain.npz") as pi:
        assert pi.ctf is None and pi.phase_flipped is None


def test_relion31_star_keeps_columns_order_ctf_and_resolves_paths(tmp_path):
    src, data = relion31(tmp_path)
    # stack paths are relative to the STAR folder; run from elsewhere to force the fallback
    work = tmp_path / "work"
    work.mkdir()
    import os

    os.chdir(work)
    summary = import_job(src, work / "out.star", work / "summary.json")
    assert summary == {"source": str(src), "format": "star", "n_particles": 6, "box": BOX,
                       "sampling": 2.5, "optics_groups": 1, "has_ctf": True,
                       "phase_flipped": None}
    ps = ParticleStack(work / "out.star")
    assert ps.n == 6 and ps.box == BOX and ps.sampling == 2.5
    assert list(ps.particles["myLabel"]) == [f"m{i}" for i in range(6)]
    np.testing.assert_allclose(ps.table["rlnDefocusV"], np.linspace(9900, 19900, 6))
    np.testing.assert_allclose(ps.table["rlnAmplitudeContrast"], 0.07)
    np.testing.assert_array_equal(ps.read([4, 1]), data[[4, 1]])
    assert ps.optics["rlnImageSize"].iloc[0] == BOX


def test_relion30_star_pixel_size_from_detector_and_magnification(tmp_path):
    data = make_stack(tmp_path / "s.mrcs", 4)
    table = pd.DataFrame({
        "rlnImageName": [f"{i + 1}@s.mrcs" for i in range(4)],
        "rlnDetectorPixelSize": 5.0, "rlnMagnification": 20000.0,  # 5 µm / 20000 = 2.5 Å
        "rlnVoltage": [300.0, 300.0, 200.0, 300.0], "rlnSphericalAberration": 2.7,
        "rlnAmplitudeContrast": 0.1, "rlnDefocusU": 15000.0, "rlnDefocusV": 14000.0,
        "rlnDefocusAngle": 30.0,
    })
    starfile.write(table, tmp_path / "r30.star")
    particles, optics = importers.load(tmp_path / "r30.star", importers.ImportOptions())
    assert len(optics) == 2  # two voltages -> two optics groups
    merged = star.merge_optics(particles, optics)
    np.testing.assert_allclose(merged["rlnImagePixelSize"], 2.5)
    np.testing.assert_allclose(merged["rlnVoltage"], [300, 300, 200, 300])
    ps_data = [int(n.split("@")[0]) for n in particles["rlnImageName"]]
    assert ps_data == [1, 2, 3, 4]
    assert data.shape == (4, BOX, BOX)


def test_xmipp_xmd_with_ctf_and_alignment(tmp_path):
    make_stack(tmp_path / "s.mrcs", 3, sampling=0)
    xmd = tmp_path / "images.xmd"
    xmd.write_text(
        "# XMIPP_STAR_1 *\n#\ndata_noname\nloop_\n _image\n _enabled\n _ctfDefocusU\n"
        " _ctfDefocusV\n _ctfDefocusAngle\n _ctfVoltage\n _ctfSphericalAberration\n _ctfQ0\n"
        " _ctfSamplingRate\n _anglePsi\n _shiftX\n _shiftY\n _flip\n"
        " 000001@s.mrcs 1 20000 19000 45 200 2.0 -0.1 1.5 30.0 2.0 -1.0 0\n"
        " 000002@s.mrcs -1 20000 19000 45 200 2.0 -0.1 1.5 0.0 0.0 0.0 0\n"
        " 000003@s.mrcs 1 21000 20000 10 200 2.0 -0.1 1.5 -60.0 1.0 3.0 1\n")
    particles, optics = importers.load(xmd, importers.ImportOptions(require_ctf=True))
    table = star.merge_optics(particles, optics)
    assert len(table) == 2  # the disabled row is left out
    np.testing.assert_allclose(table["rlnImagePixelSize"], 1.5)
    np.testing.assert_allclose(table["rlnAmplitudeContrast"], 0.1)
    np.testing.assert_allclose(table["rlnVoltage"], 200)
    np.testing.assert_allclose(table["rlnDefocusU"], [20000, 21000])
    assert list(table["cryosnakeMirror"]) == [0, 1]
    np.testing.assert_allclose(table["rlnAnglePsi"], [-30.0, -60.0])


@pytest.mark.parametrize("flip", [0, 1])
def test_xmipp_alignment_conversion_brings_particle_onto_reference(flip):
    """Xmipp pose (aligned = Sh_b[Mir·Rot_psi[X]]) converted to ours must align X the same."""
    rng = np.random.default_rng(3)
    ref = demo.phantom_volume(32, seed=4).sum(0)
    psi_x, b = 40.0, np.array([2.0, -1.0])
    # build X from the reference with the inverse of the Xmipp alignment
    al = ref
    al = demo.shift_image(al, -b[0], -b[1])
    al = demo.mirror_image(al) if flip else al
    x = demo.rotate_image(al, -psi_x)
    table = pd.DataFrame({"anglePsi": [psi_x], "shiftX": [b[0]], "shiftY": [b[1]],
                          "flip": [flip]})
    importers._xmipp_alignment_to_relion(table)
    psi, ox, oy = table["rlnAnglePsi"][0], table["cryosnakeOriginXPx"][0],\
        table["cryosnakeOriginYPx"][0]
    back = demo.shift_image(x, ox, oy)
    back = demo.mirror_image(back) if flip else back
    back = demo.rotate_image(back, -psi)
    assert np.corrcoef(back.ravel(), ref.ravel())[0, 1] > 0.99
    assert rng is not None


def test_cryosparc_cs(tmp_path):
    (tmp_path / "J3" / "extract").mkdir(parents=True)
    data = make_stack(tmp_path / "J3" / "extract" / "a.mrc", 5)
    dtype = [("uid", "<u8"), ("blob/path", "S64"), ("blob/idx", "<u4"), ("blob/psize_A", "<f4"),
             ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4"),
             ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4")]
    cs = np.zeros(3, dtype=dtype)
    cs["uid"] = [11, 12, 13]
    cs["blob/path"] = b">J3/extract/a.mrc"
    cs["blob/idx"] = [4, 0, 2]
    cs["blob/psize_A"] = 1.25
    cs["ctf/accel_kv"], cs["ctf/cs_mm"], cs["ctf/amp_contrast"] = 300, 2.7, 0.1
    cs["ctf/df1_A"], cs["ctf/df2_A"] = [15000, 16000, 17000], [14000, 15000, 16000]
    cs["ctf/df_angle_rad"] = np.pi / 4
    (tmp_path / "J3" / "particles.cs").parent.mkdir(exist_ok=True)
    with open(tmp_path / "J3" / "particles.cs", "wb") as fh:
        np.save(fh, cs)
    import_job(tmp_path / "J3" / "particles.cs", tmp_path / "o.star", tmp_path / "s.json")
    ps = ParticleStack(tmp_path / "o.star")
    np.testing.assert_array_equal(ps.read([0, 1, 2]), data[[4, 0, 2]])
    np.testing.assert_allclose(ps.table["rlnDefocusAngle"], 45.0, atol=1e-4)
    np.testing.assert_allclose(ps.table["rlnImagePixelSize"], 1.25)
    np.testing.assert_allclose(ps.table["rlnDefocusU"], [15000, 16000, 17000])
    assert [str(u) for u in ps.table["cryosparcUid"]] == ["11", "12", "13"]
    # cryoSPARC never phase-flips at extraction: MLF2D's `auto` reads "not flipped"
    assert resolve_phase_flipped("auto", ps.table) == (
        False, "auto: rlnCtfDataArePhaseFlipped = 0 in the input")


@pytest.mark.parametrize("suffix", [".mrcs", ".mrc", ".st"])
def test_bare_stack_sampling_from_header_or_config(tmp_path, suffix):
    data = make_stack(tmp_path / f"x{suffix}", 7, sampling=3.5)
    p, o = importers.load(tmp_path / f"x{suffix}", importers.ImportOptions())
    assert len(p) == 7 and o["rlnImagePixelSize"][0] == 3.5
    make_stack(tmp_path / f"y{suffix}", 2, sampling=0)
    with pytest.raises(InputError, match="no pixel size.*sampling"):
        importers.load(tmp_path / f"y{suffix}", importers.ImportOptions())
    p, o = importers.load(tmp_path / f"y{suffix}", importers.ImportOptions(sampling=1.7))
    assert o["rlnImagePixelSize"][0] == 1.7
    assert data.shape[0] == 7


# --- bad input: one test per case, each error names the file/row and the fix -----------------


def test_missing_stack_lists_both_places(tmp_path):
    src, _ = relion31(tmp_path)
    (tmp_path / "stack.mrcs").unlink()
    with pytest.raises(InputError) as err:
        importers.load(src, importers.ImportOptions())
    msg = str(err.value)
    assert "stack.mrcs" in msg and "Tried" in msg and msg.count("stack.mrcs") >= 2


def test_index_beyond_stack(tmp_path):
    src, _ = relion31(tmp_path)
    t = starfile.read(src)
    t["particles"].loc[3, "rlnImageName"] = "000009@stack.mrcs"
    starfile.write(t, src, overwrite=True)
    with pytest.raises(InputError, match=r"row 4: image index 9 is beyond .* holds 6 images"):
        importers.load(src, importers.ImportOptions())


def test_mixed_box_sizes(tmp_path):
    src, _ = relion31(tmp_path)
    make_stack(tmp_path / "big.mrcs", 2, box=BOX * 2)
    t = starfile.read(src)
    t["particles"].loc[5, "rlnImageName"] = "000001@big.mrcs"
    starfile.write(t, src, overwrite=True)
    with pytest.raises(InputError, match="mixed box sizes.*row 6"):
        importers.load(src, importers.ImportOptions())


def test_non_square_images(tmp_path):
    mrc.write_stack(tmp_path / "r.mrcs", np.zeros((3, 16, 20)), 2.0)
    with pytest.raises(InputError, match="20×16 px; particles must be square"):
        importers.load(tmp_path / "r.mrcs", importers.ImportOptions())


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_pixels(tmp_path, bad):
    src, data = relion31(tmp_path)
    data[2, 3, 4] = bad
    mrc.write_stack(tmp_path / "stack.mrcs", data, 2.5)
    with pytest.raises(InputError, match=r"row 3: image 3@stack.mrcs contains NaN or Inf"):
        importers.load(src, importers.ImportOptions())


def test_no_pixel_size(tmp_path):
    src, _ = relion31(tmp_path)
    t = starfile.read(src)
    t["optics"] = t["optics"].drop(columns="rlnImagePixelSize")
    starfile.write(t, src, overwrite=True)
    with pytest.raises(InputError, match="no pixel size.*`sampling:`"):
        importers.load(src, importers.ImportOptions())


def test_mlf2d_without_ctf_columns(tmp_path):
    src, _ = relion31(tmp_path)
    t = starfile.read(src)
    t["particles"] = t["particles"].drop(columns=["rlnDefocusU", "rlnDefocusV"])
    starfile.write(t, src, overwrite=True)
    importers.load(src, importers.ImportOptions())  # fine for ML2D
    with pytest.raises(InputError, match="MLF2D.*rlnDefocusU is missing.*ctf_correction: false"):
        importers.load(src, importers.ImportOptions(require_ctf=True))


@pytest.mark.parametrize("text,match", [
    ("data_particles\nloop_\n_rlnImageName #1\n_rlnDefocusU #2\n1@a.mrcs 1.0 9\n2@a.mrcs\n",
     "not a readable STAR file"),
    ("data_particles\nloop_\n_rlnDefocusU #1\n1.0\n", "no rlnImageName column"),
    ("# nothing here\n", "contains no loop_|not a readable STAR"),
])
def test_malformed_star(tmp_path, text, match):
    (tmp_path / "bad.star").write_text(text)
    with pytest.raises(InputError, match=match):
        importers.load(tmp_path / "bad.star", importers.ImportOptions())


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="unknown file type '.txt'"):
        importers.load(tmp_path / "p.txt", importers.ImportOptions())
    with pytest.raises(InputError, match="does not exist"):
        importers.load(tmp_path / "nope.star", importers.ImportOptions())


def test_chunking_covers_every_particle_once():
    rows = np.concatenate([chunk_rows(2503, 500, c) for c in range(n_chunks(2503, 500))])
    np.testing.assert_array_equal(rows, np.arange(2503))
    assert n_chunks(2503, 500) == 6 and n_chunks(10, 1000) == 1


@pytest.mark.parametrize("n,box,size,chunks", [
    (1000, 48, 1000, 1),        # the default demo: one E-step job
    (6000, 64, 6000, 1),        # the set: 6000 < 2**25 / 64**2 = 8192 particles
    (10000, 64, 5000, 2),       # above the least chunk: evened out, not 8192 + 1808
    (100000, 64, 7693, 13),
    (100000, 128, 6250, 16),    # n / 16 between the least and the most
    (300000, 200, 3334, 90),    # the most: 2**27 / 200**2 = 3355 particles (5.5 GB)
    (1000000, 256, 2045, 489),
    (20, 16, 20, 1),
])
def test_auto_chunk_size(n, box, size, chunks):
    """compute.chunk_size: auto: ceil(n / 16) clamped to [2**25, 2**27] pixels per chunk,
    evened out over the chunks; the memory per E-step job (1.5 GB + size × box² × 32 bytes)
    stays at most 5.5 GB."""
    assert auto_chunk_size(n, box) == size == resolve_chunk_size("auto", n, box)
    assert n_chunks(n, size) == chunks
    assert size * box**2 <= 2**27
    assert resolve_chunk_size(700, n, box) == 700  # an integer stays what it says


@pytest.mark.parametrize("flag,expected", [(None, False), (0, False), (1, True)])
def test_phase_flip_flag_travels_from_relion31_optics_to_auto(tmp_path, flag, expected):
    """RELION 3.1's rlnCtfDataArePhaseFlipped (optics group) passes through the import and
    decides ``phase_flipped: auto``; an input that says nothing is "not flipped"; explicit
    true/false win over the flag."""
    src, _ = relion31(tmp_path)
    if flag is not None:
        blocks = starfile.read(src, always_dict=True)
        blocks["optics"]["rlnCtfDataArePhaseFlipped"] = flag
        starfile.write(blocks, src, overwrite=True)
    summary = import_job(src, tmp_path / "out.star", tmp_path / "summary.json")
    assert summary["phase_flipped"] == (None if flag is None else bool(flag))
    table = ParticleStack(tmp_path / "out.star").table
    flipped, origin = resolve_phase_flipped("auto", table)
    assert flipped is expected and origin.startswith("auto: ")
    assert ("has no rlnCtfDataArePhaseFlipped" in origin) == (flag is None)
    assert resolve_phase_flipped(not expected, table)[0] is (not expected)


def test_phase_flip_flag_per_particle_in_relion30_and_mixed_groups(tmp_path):
    src, _ = relion31(tmp_path, rlnCtfDataArePhaseFlipped=[1, 1, 1, 1, 1, 1])
    blocks = starfile.read(src, always_dict=True)
    starfile.write({"particles": blocks["particles"].assign(
        rlnImagePixelSize=2.5, rlnVoltage=300.0, rlnSphericalAberration=2.7,
        rlnAmplitudeContrast=0.07).drop(columns="rlnOpticsGroup")}, src, overwrite=True)
    import_job(src, tmp_path / "out.star", tmp_path / "summary.json")
    table = ParticleStack(tmp_path / "out.star").table
    assert resolve_phase_flipped("auto", table)[0] is True
    table.loc[2, "rlnCtfDataArePhaseFlipped"] = 0
    with pytest.raises(InputError, match="differs between"):
        resolve_phase_flipped("auto", table)
    with pytest.raises(InputError, match="auto, true or false"):
        resolve_phase_flipped("yes", table)
