"""Issue 15: damaged files are named with the fix, failures reach the rule log, outputs are
readable by the group. Every case on tiny files, no workflow run."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
import yaml

from cryosnake import atomic
from cryosnake import config as cs_config
from cryosnake.errors import InputError, reading_intermediate
from cryosnake.io import importers, mrc
from cryosnake.io.classify2d import read_model, read_sums, write_model, write_sums
from cryosnake.io.particles import ParticleStack
from cryosnake.ml2d import Sums
from cryosnake.ml2d.model import ML2DModel
from cryosnake.pipeline.data import import_job
from cryosnake.pipeline.ml2d import start_job
from cryosnake.pipeline.runtime import rule_job
from cryosnake.pipeline.significant import read_averages
from cryosnake.volume3d.symmetry import parse_symmetry

BOX = 8
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def stack(path, n, box=BOX):
    data = np.random.default_rng(0).normal(size=(n, box, box)).astype(np.float32)
    mrc.write_stack(path, data, 2.0)
    return data


def truncate(path, n_bytes):
    with open(path, "r+b") as fh:
        fh.truncate(n_bytes)


def relion31(folder, n=4, groups=None):
    stack(folder / "stack.mrcs", n)
    particles = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@stack.mrcs" for i in range(n)],
                              "rlnOpticsGroup": groups or [1] * n})
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [2.0]})
    starfile.write({"optics": optics, "particles": particles}, folder / "p.star")
    return folder / "p.star"


# --- 1. truncated MRC files ----------------------------------------------------------------


TRUNCATED = (r"is truncated: it holds 1524 bytes, its header says 10 images of 8² = 3584 bytes; "
             r"re-export or re-extract it")


@pytest.mark.parametrize("reader", [mrc.read, mrc.read_stack, mrc.header_info, mrc.open_memmap])
def test_truncated_mrc_names_file_sizes_and_fix(tmp_path, reader):
    path = tmp_path / "cut.mrcs"
    stack(path, 10)
    truncate(path, 1524)
    with pytest.raises(InputError, match=f"cut.mrcs {TRUNCATED}"):
        reader(path)


def test_mrc_shorter_than_its_header(tmp_path):
    path = tmp_path / "stub.mrcs"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(InputError, match=r"stub.mrcs is not a readable MRC file .*re-export"):
        mrc.header_info(path)


def test_stack_truncated_after_import(tmp_path):
    src = relion31(tmp_path, n=10)
    import_job(src, tmp_path / "out.star", tmp_path / "summary.json")
    truncate(tmp_path / "stack.mrcs", 1524)
    with ParticleStack(tmp_path / "out.star") as ps, \
            pytest.raises(InputError, match=f"stack.mrcs {TRUNCATED}"):
        ps.read([0, 1])


def test_megabytes_in_the_message(tmp_path):
    path = tmp_path / "big.mrcs"
    mrc.write_stack(path, np.zeros((200, 64, 64), np.float32), 1.0)
    truncate(path, 1_200_000)
    with pytest.raises(InputError, match="holds 1.2 MB, its header says 200 images of 64² = "
                                         "3.3 MB"):
        mrc.header_info(path)


# --- 2. damaged intermediates --------------------------------------------------------------


RERUN = "delete it and rerun; the iteration is recomputed"


def test_truncated_sums_npz(tmp_path):
    path = tmp_path / "iter_002" / "chunks" / "sums_0001.npz"
    write_sums(path, Sums.zeros(2, BOX))
    truncate(path, path.stat().st_size // 2)
    with pytest.raises(InputError, match=rf"sums_0001.npz is damaged \(.+\); {RERUN}"):
        read_sums(path, Sums)


def test_empty_sums_npz(tmp_path):
    path = tmp_path / "sums_0000.npz"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=rf"sums_0000.npz is damaged \(EOFError.*\); {RERUN}"):
        read_sums(path, Sums)


def saved_model(folder):
    model = ML2DModel(references=np.zeros((2, BOX, BOX)), class_fractions=np.full(2, 0.5),
                      mirror_fractions=np.full(2, 0.5), sigma_noise=1.0, sigma_offset=1.0)
    write_model(model, folder / "model.json", folder / "references.mrcs", 2.0)
    return folder / "model.json"


def test_truncated_model_json(tmp_path):
    path = saved_model(tmp_path)
    truncate(path, 40)
    with pytest.raises(InputError, match=rf"model.json is damaged \(JSONDecodeError: .+\); "
                                         f"{RERUN}"):
        read_model(path, ML2DModel)


def test_truncated_references_mrcs(tmp_path):
    path = saved_model(tmp_path)
    truncate(tmp_path / "references.mrcs", 1100)
    with pytest.raises(InputError, match=r"references.mrcs is damaged \(truncated: it holds 1100 "
                                         rf"bytes, its header says 2 images of 8² = 1536 bytes\); "
                                         f"{RERUN}"):
        read_model(path, ML2DModel)


def test_reading_intermediate_lets_other_errors_through(tmp_path):
    with pytest.raises(FileNotFoundError), reading_intermediate(tmp_path / "x.npz"):
        np.load(tmp_path / "x.npz")


# --- 3. tracebacks in the rule log ---------------------------------------------------------


def failing_step():
    raise ZeroDivisionError("the bug")


def test_rule_job_writes_the_traceback_to_the_log(tmp_path):
    log = tmp_path / "logs" / "job.log"
    with pytest.raises(ZeroDivisionError), rule_job(log, name="job"):
        print("started")
        failing_step()
    text = log.read_text()
    assert text.startswith("started\n")
    assert "Traceback (most recent call last)" in text
    assert "in failing_step" in text and "ZeroDivisionError: the bug" in text


def test_rule_job_end_process_keeps_the_log_and_the_exit_status(tmp_path):
    """A job script that ends its process at once (end_process: no interpreter teardown) still
    exits 0 after success, 1 after an InputError, with its output in the log and on stdout."""
    code = ("import sys\nfrom cryosnake.errors import InputError\n"
            "from cryosnake.pipeline.runtime import rule_job\n"
            "with rule_job(sys.argv[1], name='job', end_process=True):\n"
            "    print('computed')\n"
            "    if sys.argv[2] == 'bad':\n        raise InputError('x.star: bad row')\n"
            "print('not reached on success')\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ok = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ok.log"), "good"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "computed" in ok.stdout and "not reached" not in ok.stdout
    assert re.search(r"computed\n\[job\] done in [0-9.]+ s\n$", (tmp_path / "ok.log").read_text())
    bad = subprocess.run([sys.executable, "-c", code, str(tmp_path / "bad.log"), "bad"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "x.star: bad row" in (tmp_path / "bad.log").read_text()


_RETAIN_PROBE = """
import ctypes, sys
import numpy as np
from cryosnake.pipeline.runtime import rule_job

class MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                "usmblks", "fsmblks", "uordblks", "fordblks",
                                                "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
with rule_job(None, name="job", end_process=sys.argv[1] == "job"):
    a = np.ones((64 << 20) // 8)  # a 64 MiB work array
    first = libc.mallinfo2()
    del a
    b = np.ones((64 << 20) // 8)  # the next batch's
    second = libc.mallinfo2()
    print(first.hblkhd, first.arena, second.arena, flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_job_process_keeps_freed_memory_for_reuse(tmp_path):
    """A job process (rule_job with end_process) takes its large work arrays from the heap and
    reuses them (retain_freed_memory): the 64 MiB array is not mmapped, and the next one of the
    same size does not grow the heap. A process that goes on (tests, in-process runs) keeps
    glibc's defaults: the same array is mmapped."""
    import ctypes

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("no glibc >= 2.33 (mallinfo2)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = {}
    for mode in ("job", "library"):
        out = subprocess.run([sys.executable, "-c", _RETAIN_PROBE, mode], capture_output=True,
                             text=True, env=env, check=True).stdout
        runs[mode] = [int(x) for x in out.split()[:3]]
    mmapped, arena_first, arena_second = runs["job"]
    assert mmapped < 64 << 20 <= arena_first
    assert arena_second - arena_first < 1 << 20  # reused, not grown
    assert runs["library"][0] >= 64 << 20  # glibc's default: mmapped


def test_rule_job_input_error_one_paragraph_in_the_log(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit), rule_job(log, name="job"):
        raise InputError("x.star: bad row")
    text = log.read_text()
    assert "cryosnake: ERROR: x.star: bad row" in text and "Traceback" not in text


# --- 4. zero particles ---------------------------------------------------------------------


def test_optics_block_and_empty_particles_block(tmp_path):
    stack(tmp_path / "stack.mrcs", 2)
    (tmp_path / "p.star").write_text(
        "data_optics\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n1 2.0\n\n"
        "data_particles\nloop_\n_rlnImageName #1\n_rlnOpticsGroup #2\n\n")
    for call in (lambda: importers.describe("p.star"),
                 lambda: importers.load("p.star", importers.ImportOptions())):
        with pytest.raises(InputError, match=r"p.star holds no particles \(its particle table is "
                                             r"empty\)"):
            call()


# --- 5. one 2D average ---------------------------------------------------------------------


def test_read_stack_keeps_the_leading_axis(tmp_path):
    mrc.write_stack(tmp_path / "one.mrcs", np.ones((BOX, BOX)), 2.0)
    assert mrc.read_stack(tmp_path / "one.mrcs").shape == (1, BOX, BOX)


def test_one_average_is_refused_before_significant(tmp_path):
    mrc.write_stack(tmp_path / "one.mrcs", np.ones((BOX, BOX)), 2.0)
    with pytest.raises(InputError, match=r"one.mrcs: 1 average\(s\) to reconstruct from, but "
                                         "Reconstruct Significant needs several averages"):
        read_averages(tmp_path / "one.mrcs")


def test_one_ml2d_class_left_names_the_keys(tmp_path):
    classes = np.zeros((3, BOX, BOX), np.float32)
    classes[1] = 1.0  # two empty classes
    mrc.write_stack(tmp_path / "classes.mrcs", classes, 2.0)
    starfile.write({"classes": pd.DataFrame({"cryosnakeParticleCount": [0, 9, 0]})},
                   tmp_path / "classes.star")
    with pytest.raises(InputError, match=r"Reconstruct Significant needs several averages "
                                         r"\(distinct views\); use more classes \(ml2d.classes\) "
                                         "or significant.classes: all"):
        read_averages(tmp_path / "classes.mrcs", tmp_path / "classes.star")


def test_one_ml2d_class_for_significant_is_a_config_error():
    with pytest.raises(InputError, match=r"ml2d.classes = 1 gives one 2D average, but Reconstruct "
                                         r"Significant \(significant.input: ml2d\) needs several "
                                         "averages; use more classes"):
        cs_config.check(default_config(ml2d__classes=1))


# --- 6. large symmetry orders --------------------------------------------------------------


@pytest.mark.parametrize("name, n", [("c361", 361), ("d121", 242), ("c1000", 1000),
                                     ("d61h", 244)])
def test_large_symmetry_order_is_a_config_error(name, n):
    with pytest.raises(ValueError, match=rf"'{name}' has {n} elements; at most 240 are supported "
                                         r"\(cN up to c240; cNv, cNh, dN up to N = 120; dNv, "
                                         r"dNh up to N = 60\)"):
        parse_symmetry(name)


def default_config(**keys):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for dotted, value in keys.items():
        *parents, last = dotted.split("__")
        node = config
        for p in parents:
            node = node[p]
        node[last] = value
    cs_config.validate(config, REPO / "config" / "schema.yaml")
    return config


def test_large_symmetry_order_stops_the_config_check():
    with pytest.raises(InputError, match=r"significant.symmetry: 'c361' has 361 elements; at "
                                         "most 240 are supported"):
        cs_config.check(default_config(significant__symmetry="c361"))


def test_largest_symmetry_orders_still_build():
    from cryosnake.volume3d.symmetry import group_order

    assert [group_order(g) for g in ("c240", "d120", "d60v")] == [240, 240, 240]


# --- 7. classes and optics groups ----------------------------------------------------------


def test_more_classes_than_particles_stops_ml2d_start(tmp_path):
    src = relion31(tmp_path, n=4)
    import_job(src, tmp_path / "out.star", tmp_path / "summary.json")
    ml2d = default_config(ml2d__classes=5)["ml2d"]
    with pytest.raises(InputError, match=r"ml2d.classes = 5, but the particles \(.*out.star\) "
                                         "number only 4: every class needs particles. Use at most "
                                         "4 classes"):
        start_job(tmp_path / "out.star", ml2d, 100, tmp_path / "m.json", tmp_path / "r.mrcs",
                  tmp_path / "i.npz")
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "i.npz").exists()
    refs = tmp_path / "refs.mrcs"
    stack(refs, 6)
    with pytest.raises(InputError, match=r"ml2d.references = '.*refs.mrcs' holds 6 references, "
                                         "but"):
        cs_config.check_classes(6, 4, {"references": str(refs)}, "p.star")
    cs_config.check_classes(4, 4, {"references": None}, "p.star")


def test_particle_in_an_optics_group_the_table_lacks(tmp_path):
    src = relion31(tmp_path, groups=[1, 1, 2, 1])
    with pytest.raises(InputError, match=r"p.star, row 3: rlnOpticsGroup 2 is not in data_optics "
                                         r"\(groups 1; 1 particle\(s\) affected\)"):
        importers.load(src, importers.ImportOptions())


# --- 8. braces in paths ---------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [("outdir", "results_{date}"),
                                        ("particles", "Extract/job{1}/p.star")])
def test_braces_in_paths_are_a_config_error(key, value):
    expected = f"{key} = '{value}': Snakemake reads {{ and }} in a path as a wildcard; rename"
    with pytest.raises(InputError, match=re.escape(expected)):
        cs_config.check(default_config(**{key: value}))


# --- 9. permissions and a full disk --------------------------------------------------------


def test_outputs_get_the_umask_mode_and_stay_atomic(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        mrc.write_stack(tmp_path / "b.mrcs", np.zeros((1, BOX, BOX)), 1.0)
        os.umask(0o077)
        atomic.write_text(tmp_path / "c.txt", "x")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"a.txt": 0o644, "b.mrcs": 0o644, "c.txt": 0o600}  # no .tmp left over


def test_full_disk_keeps_the_previous_file_and_names_the_folder(tmp_path, monkeypatch):
    path = tmp_path / "iter_001" / "model.json"
    atomic.write_json(path, {"iteration": 1})

    def full(self, text, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(InputError, match=rf"{re.escape(str(path.parent))} is full \(no space left "
                                         r"while writing model.json; the previous model.json is "
                                         r"unchanged\); free some space"):
        atomic.write_json(path, {"iteration": 2})
    monkeypatch.undo()
    assert path.read_text() == '{\n  "iteration": 1\n}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json"]


# --- defects the fuzzed importers found (tests/test_fuzz_importers.py) ------------------------


@pytest.mark.parametrize("name, text, match", [
    ("p.xmd", "data_noname\nloop_\n_image\n_anglePsi\n_flip\n1@stack.mrcs 5 0\n"
     "2@stack.mrcs 5 abc\n",
     r"p.xmd, row 2: flip = 'abc' is not an integer"),
    ("p.star", "data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n1 2.0\n",
     r"p.star has data blocks \['optics'\] but no data_particles"),
    ("p.star", "data_particles\nloop_\n_rlnImageName\n_rlnImageName\n1@stack.mrcs 2@stack.mrcs\n",
     r"p.star: data_particles has the label _rlnImageName twice"),
    ("p.star", "data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n1 big\n\n"
     "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n1@stack.mrcs 1\n",
     r"p.star, row 1: rlnImagePixelSize = 'big' is not a number"),
])
def test_damaged_metadata_found_by_fuzzing(tmp_path, name, text, match):
    stack(tmp_path / "stack.mrcs", 2)
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=match):
        importers.load(tmp_path / name, importers.ImportOptions())
