"""Fuzzed importers (issue 15): damaged variants of valid RELION 3.1 / 3.0 STAR, Xmipp .xmd,
cryoSPARC .cs and bare .mrcs inputs either import or stop with :class:`InputError`, never with
another exception and never hanging.

Each variant applies one to three damages to a valid file: truncation, flipped bytes, a label
line dropped (columns shift), two labels swapped, a value replaced by a wrong type, a huge, a
negative or a non-finite number, a header word of the MRC overwritten, a .cs field dropped or
filled with nonsense.
"""

from __future__ import annotations

import io
import os
import signal
import struct

import numpy as np
import pandas as pd
import pytest
import starfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryosnake.errors import InputError
from cryosnake.io import importers, mrc

N, BOX = 4, 8
# Variants per test (RELION 3.1 and 3.0 share one test): 400 in all, derandomized so that CI
# always runs the same ones. CRYOSNAKE_FUZZ_EXAMPLES=5000 searches longer, with fresh variants.
LONG_RUN = int(os.environ.get("CRYOSNAKE_FUZZ_EXAMPLES", 0))
EXAMPLES = LONG_RUN or 80
BAD_VALUES = ["nan", "inf", "-inf", "-1", "0", "1e308", "-1e308", "99999999999999999999", "abc",
              "@", "1@", "0@stack.mrcs", "-3@stack.mrcs", "1e9@stack.mrcs", "2.5@stack.mrcs",
              "3.5e", '"', "#", "_rlnImageName", "data_", "loop_"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The valid inputs, written once: a stack and one metadata file per format."""
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(1)
    mrc.write_stack(root / "stack.mrcs", rng.normal(size=(N, BOX, BOX)), 2.0)
    names = [f"{i + 1:06d}@stack.mrcs" for i in range(N)]
    ctf = {"rlnDefocusU": [12000.0, 13000.0, 14000.0, 15000.0],
           "rlnDefocusV": [11900.0, 12900.0, 13900.0, 14900.0], "rlnDefocusAngle": 30.0}
    optics = pd.DataFrame({"rlnOpticsGroup": [1, 2], "rlnImagePixelSize": [2.0, 2.0],
                           "rlnVoltage": [300.0, 200.0], "rlnSphericalAberration": [2.7, 2.7],
                           "rlnAmplitudeContrast": [0.1, 0.1]})
    particles = pd.DataFrame({"rlnImageName": names, "rlnOpticsGroup": [1, 2, 1, 2], **ctf})
    starfile.write({"optics": optics, "particles": particles}, root / "valid31.star")
    relion30 = pd.DataFrame({"rlnImageName": names, **ctf, "rlnDetectorPixelSize": 5.0,
                             "rlnMagnification": 25000.0, "rlnVoltage": 300.0,
                             "rlnSphericalAberration": 2.7, "rlnAmplitudeContrast": 0.1})
    starfile.write({"": relion30}, root / "valid30.star")
    xmd = pd.DataFrame({"image": names, "enabled": 1, "ctfDefocusU": ctf["rlnDefocusU"],
                        "ctfDefocusV": ctf["rlnDefocusV"], "ctfDefocusAngle": 30.0,
                        "ctfVoltage": 300.0, "ctfSamplingRate": 2.0, "anglePsi": 10.0,
                        "shiftX": 1.0, "shiftY": -1.0, "flip": 0})
    starfile.write({"noname": xmd}, root / "valid.xmd")
    return root


def cs_array():
    dtype = [("uid", "<u8"), ("blob/path", "S32"), ("blob/idx", "<u4"), ("blob/psize_A", "<f4"),
             ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4"),
             ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4")]
    cs = np.zeros(N, dtype=dtype)
    cs["uid"] = np.arange(N) + 100
    cs["blob/path"] = b"stack.mrcs"
    cs["blob/idx"] = np.arange(N)
    cs["blob/psize_A"] = 2.0
    cs["ctf/accel_kv"], cs["ctf/cs_mm"], cs["ctf/amp_contrast"] = 300.0, 2.7, 0.1
    cs["ctf/df1_A"], cs["ctf/df2_A"] = 12000.0, 11000.0
    return cs


# --- damages -------------------------------------------------------------------------------


def damage_bytes(data, raw: bytes) -> bytes:
    """Truncate the file or flip a few of its bytes."""
    if data.draw(st.booleans(), label="truncate"):
        return raw[:data.draw(st.integers(0, len(raw)), label="keep")]
    raw = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[at] ^= data.draw(st.integers(1, 255), label="mask")
    return bytes(raw)


def damage_text(data, text: str) -> bytes:
    """One damage to a STAR-like file: by bytes, by label line or by value."""
    lines = text.splitlines(keepends=True)
    labels = [i for i, ln in enumerate(lines) if ln.startswith("_")]
    rows = [i for i, ln in enumerate(lines)
            if ln.strip() and not ln.startswith(("_", "data_", "loop_", "#"))]
    kind = data.draw(st.sampled_from(["bytes", "drop_label", "swap_labels", "value", "drop_row",
                                      "drop_field"]), label="kind")
    if kind == "bytes":
        return damage_bytes(data, text.encode())
    if kind == "drop_label":
        del lines[data.draw(st.sampled_from(labels), label="label")]
    elif kind == "swap_labels":
        i, j = (data.draw(st.sampled_from(labels), label="pair") for _ in range(2))
        lines[i], lines[j] = lines[j], lines[i]
    else:
        r = data.draw(st.sampled_from(rows), label="row")
        fields = lines[r].split()
        f = data.draw(st.integers(0, len(fields) - 1), label="field")
        if kind == "value":
            fields[f] = data.draw(st.sampled_from(BAD_VALUES) | st.text(
                st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=6),
                label="new")
        elif kind == "drop_field":
            del fields[f]
        lines[r] = " ".join(fields) + "\n" if kind != "drop_row" else ""
    return "".join(lines).encode()


def damage_cs(data) -> bytes:
    cs = cs_array()
    kind = data.draw(st.sampled_from(["field", "drop", "bytes"]), label="kind")
    if kind == "field":
        name = data.draw(st.sampled_from(cs.dtype.names), label="name")
        value = data.draw(st.sampled_from([b"", b">", b"nope.mrcs", 0, 2**32 - 1, N, np.nan,
                                           np.inf, -1.0, 1e30]), label="value")
        try:
            cs[name][data.draw(st.integers(0, N - 1), label="row")] = value
        except (TypeError, ValueError, OverflowError):
            pass
    elif kind == "drop":
        keep = [n for n in cs.dtype.names if n != data.draw(st.sampled_from(cs.dtype.names))]
        cs = cs[keep]
    fh = io.BytesIO()
    np.save(fh, cs)
    raw = fh.getvalue()
    return damage_bytes(data, raw) if kind == "bytes" else raw


def damage_mrcs(data, raw: bytes) -> bytes:
    """Truncate, flip bytes, or overwrite one 32-bit word of the 1024-byte header."""
    if data.draw(st.booleans(), label="header word"):
        raw = bytearray(raw)
        word = data.draw(st.integers(0, 55), label="word")
        value = data.draw(st.sampled_from([0, -1, 1, 2, 3, 6, 12, 101, 2**31 - 1, -2**31, 10**6])
                          | st.integers(-2**31, 2**31 - 1), label="value")
        raw[4 * word:4 * word + 4] = struct.pack("<i", value)
        return bytes(raw)
    return damage_bytes(data, raw)


# --- the property --------------------------------------------------------------------------


class Hang(Exception):
    pass


def imports_or_input_error(path) -> None:
    """Import ``path``; anything but success or :class:`InputError` fails (as does > 10 s)."""

    def alarm(*_):
        raise Hang(f"importing {path} took more than 10 s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(10)
    try:
        particles, optics = importers.load(path, importers.ImportOptions())
        assert len(particles) >= 1 and (optics["rlnImagePixelSize"] > 0).all()
    except InputError as err:
        assert str(err)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG_RUN, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@settings(FUZZ, max_examples=2 * EXAMPLES)
@given(data=st.data(), version=st.sampled_from(["valid31.star", "valid30.star"]))
def test_damaged_relion_star(folder, monkeypatch, data, version):
    monkeypatch.chdir(folder)
    (folder / "damaged.star").write_bytes(damage_text(data, (folder / version).read_text()))
    imports_or_input_error(folder / "damaged.star")


@FUZZ
@given(data=st.data())
def test_damaged_xmipp_xmd(folder, monkeypatch, data):
    monkeypatch.chdir(folder)
    (folder / "damaged.xmd").write_bytes(damage_text(data, (folder / "valid.xmd").read_text()))
    imports_or_input_error(folder / "damaged.xmd")


@FUZZ
@given(data=st.data())
def test_damaged_cryosparc_cs(folder, monkeypatch, data):
    monkeypatch.chdir(folder)
    (folder / "damaged.cs").write_bytes(damage_cs(data))
    imports_or_input_error(folder / "damaged.cs")


@FUZZ
@given(data=st.data())
def test_damaged_mrcs(folder, monkeypatch, data):
    monkeypatch.chdir(folder)
    (folder / "damaged.mrcs").write_bytes(damage_mrcs(data, (folder / "stack.mrcs").read_bytes()))
    imports_or_input_error(folder / "damaged.mrcs")
