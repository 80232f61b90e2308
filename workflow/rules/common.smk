# Shared set-up: configuration checks at start-up, paths, chunking, what each rule depends on.
#
# Every file a job reads is a declared input and every config value it reads is a param, so
# Snakemake reruns exactly what a change touches: image stacks and reference files are inputs,
# the algorithm keys of each stage and a fingerprint of the cryosnake code the job runs
# (cryosnake.provenance) are params. compute.* keys are not params (threads and the backend
# change no numbers; the backend reaches a job as its `gpu` resource).
from snakemake.exceptions import WorkflowError

from cryosnake import config as cs_config
from cryosnake.errors import InputError, reading_intermediate
from cryosnake.io import jsonfile, mrc
from cryosnake.io.importers import describe
from cryosnake.io.particles import n_chunks, resolve_chunk_size
from cryosnake.provenance import code_version

try:
    cs_config.validate(config, CRYOSNAKE_DIR / "config" / "schema.yaml")
    cs_config.check(config)
    # on a cluster the GPU is on the compute nodes, not necessarily on the submitting host
    BACKEND = cs_config.check_backend(config, on_this_host=workflow.local_exec)
except InputError as err:
    raise WorkflowError(f"cryosnake: {err}")

OUT = config["outdir"]
ENVS = CRYOSNAKE_DIR / "envs"
THREADS = config["compute"]["threads"]
# GPUs per job for the rules that run kernels (E-steps, Significant's start and iterations):
# the `gpu` resource schedules them on GPU nodes (SLURM: --gpus), limits how many run at once
# locally (`--resources gpu=N`) and tells the job which backend to use (1: cuda, 0: cpu).
GPUS = 1 if BACKEND == "cuda" else 0

# Fingerprints of the code behind each family of rules (package version + source hash).
CODE = {
    "data": code_version("cryosnake.pipeline.data"),
    "ml2d": code_version("cryosnake.pipeline.ml2d"),
    "significant": code_version("cryosnake.pipeline.significant"),
    "plots": code_version("cryosnake.plots"),
    "reprojection": code_version("cryosnake.pipeline.reprojection"),
    "summary": code_version("cryosnake.summary"),
    "demo_check": code_version("cryosnake.pipeline.demo_check"),
}
DEMO = config["particles"] == "demo"


def _describe_particles():
    """(number of particles, image stacks) of the input, read at start-up."""
    if config["particles"] == "demo":
        return config["demo"]["n_particles"], [f"{OUT}/demo/particles.mrcs"]
    try:
        return describe(config["particles"])
    except InputError as err:
        raise WorkflowError(f"cryosnake: {err}")


def _input_box():
    """The box (px) of the input particles for `compute.chunk_size: auto`: the demo's, or the
    header of the (first) image stack. 1 when no stack can be read: the import job then
    stops and names it."""
    if DEMO:
        return config["demo"]["box"]
    stacks = INPUT_STACKS if INPUT_STACKS else [config["particles"]]
    try:
        return mrc.header_info(stacks[0])["shape"][-1]
    except (OSError, ValueError):  # no readable MRC stack
        return 1


N_PARTICLES, INPUT_STACKS = _describe_particles()
# Particles per E-step job: compute.chunk_size, or from the particle count and box with `auto`
# (cryosnake.io.particles.auto_chunk_size); never from --cores, so a rerun with other cores
# finds the same chunk files.
CHUNK_SIZE = resolve_chunk_size(config["compute"]["chunk_size"], N_PARTICLES, _input_box())
N_CHUNKS = n_chunks(N_PARTICLES, CHUNK_SIZE)
CHUNKS = [f"{c:04d}" for c in range(N_CHUNKS)]


def image_files(path):
    """A user file of images (MRC stack, or STAR naming images) and the stacks it names."""
    if path is None:
        return []
    if str(path).endswith(".star"):
        try:
            return [path, *describe(path)[1]]
        except InputError as err:
            raise WorkflowError(f"cryosnake: {err}")
    return [path]


wildcard_constraints:
    iter=r"\d{3}",
    chunk=r"\d{4}",


def read_json(path):
    """A JSON file the workflow wrote, read at DAG time; a damaged one is named."""
    try:
        with reading_intermediate(path, "delete it and rerun; the step that wrote it is "
                                  "recomputed"):
            return jsonfile.read_json(path)
    except InputError as err:
        raise WorkflowError(f"cryosnake: {err}")


# --- ML2D -----------------------------------------------------------------------------------

ML2D = f"{OUT}/ml2d"
ML2D_GENERATE = not config["ml2d"]["references"]
# MLF2D: the defocus group of every particle, computed once by the start job for the E-steps
ML2D_GROUPS = f"{ML2D}/start/defocus_groups.npz" if config["ml2d"]["fourier"] else None
# the particles as the E-step jobs read them (image locations, CTF): no STAR parsing per job
ML2D_INDEX = f"{ML2D}/start/particles.npz"
ML2D_MAX_ITERATIONS = config["ml2d"]["max_iterations"]
INPUT_STAR = f"{OUT}/input/particles.star"
INPUT_SUMMARY = f"{OUT}/input/summary.json"


def ml2d_algorithm_params():
    """The ml2d keys that change the numbers (a change recomputes from iteration 0).
    max_iterations only decides where the chain stops, so it is left out."""
    keys = dict(config["ml2d"])
    keys.pop("max_iterations")
    keys.pop("write_subsets")  # only asks for more outputs (rule ml2d_subsets)
    if not keys["fourier"]:
        for k in ("ctf_correction", "phase_flipped", "high_res_limit"):
            keys.pop(k)
    return keys


def ml2d_n_classes():
    """K: ml2d.classes, or the number of user references."""
    if not config["ml2d"]["references"]:
        return config["ml2d"]["classes"]
    from cryosnake.pipeline.ml2d import count_references

    return count_references(config["ml2d"]["references"])


# One particle STAR per class (rule ml2d_subsets; in the default target with write_subsets).
ML2D_SUBSETS = [f"{ML2D}/class_{k:03d}.star" for k in range(1, ml2d_n_classes() + 1)]


def ml2d_model(i):
    """model.json that iteration i's E-step works against."""
    if i == 0:
        return f"{ML2D}/start/model.json"
    return f"{ML2D}/iter_{i - 1:03d}/model.json"


def ml2d_estep_inputs(wildcards):
    i = int(wildcards.iter)
    model = ml2d_model(i)
    inputs = {
        "index": ML2D_INDEX,
        "summary": INPUT_SUMMARY,
        "model": model,
        "references": model.replace("model.json", "references.mrcs"),
    }
    if ML2D_GROUPS:
        inputs["groups"] = ML2D_GROUPS
    if i >= 2:  # iteration 1 starts from a fresh state (the start model has other classes)
        inputs["state"] = f"{ML2D}/iter_{i - 1:03d}/chunks/state_{wildcards.chunk}.npz"
    return inputs


def estep_mem_mb(wildcards, input):
    box = read_json(input.summary)["box"]
    return 1500 + (CHUNK_SIZE * box * box * 4 * 8) // 2**20


def ml2d_iteration_done(i):
    """Whether iteration i's M-step outputs (model.json and references.mrcs) are on disk."""
    folder = f"{ML2D}/iter_{i:03d}"
    return Path(f"{folder}/model.json").exists() and Path(f"{folder}/references.mrcs").exists()


def ml2d_final_iteration():
    """The iteration the final outputs come from: the first converged one, or max_iterations.

    Every M-step is a checkpoint. An iteration whose model.json and references.mrcs are on
    disk is read through checkpoints.get, so Snakemake uses it only once it knows the files
    are current (same config and code). The first iteration without them is returned as
    plain files: the final rule then depends on them like on any missing input, so raising
    max_iterations after a finished run continues the chain (a checkpoint target would not be
    checked for reruns while the final outputs exist), lowering it picks the earlier
    iteration, and a rerun after a deleted (damaged) model.json or references.mrcs recomputes
    that iteration (ml2d_final_inputs).
    """
    i = 1
    while True:
        if not ml2d_iteration_done(i):
            return i
        checkpoints.ml2d_mstep.get(iter=f"{i:03d}")
        model = f"{ML2D}/iter_{i:03d}/model.json"
        if i >= ML2D_MAX_ITERATIONS or read_json(model)["converged"]:
            return i
        i += 1


def ml2d_final_inputs(wildcards):
    """The final iteration's files; while that iteration is still to compute, its E-step sums
    too.

    The sums are there for the rerun after a deleted model.json or references.mrcs (issue 15).
    Snakemake reruns a job for missing outputs only when the job is a target or feeds one that
    runs: a missing input of a job whose outputs exist triggers nothing, so with the final
    outputs on disk a rerun would say "Nothing to be done" and leave the hole. With the sums,
    the set of inputs differs from the one the final rule last ran with (Snakemake records it),
    so the final rule is due, and with it the missing M-step and E-steps it needs. The set is
    read again when that M-step (a checkpoint) has finished, so the final rule runs with, and
    records, the set without the sums: the next run finds nothing to do. (Where the recomputed
    files have the checksums recorded for the final outputs, Snakemake then skips the final
    rule and what follows, as the workflow is deterministic.)
    """
    i = ml2d_final_iteration()
    folder = f"{ML2D}/iter_{i:03d}"
    inputs = {
        "particles": INPUT_STAR,
        "model": f"{folder}/model.json",
        "references": f"{folder}/references.mrcs",
        "assignments": expand(f"{folder}/chunks/assignments_{{chunk}}.npz", chunk=CHUNKS),
    }
    if not ml2d_iteration_done(i):
        inputs["sums"] = expand(f"{folder}/chunks/sums_{{chunk}}.npz", chunk=CHUNKS)
    return inputs


# --- Reconstruct Significant ----------------------------------------------------------------

SIG = f"{OUT}/significant"
SIG_ITERATIONS = config["significant"]["iterations"]


def significant_algorithm_params(*keys):
    """The significant keys that change the numbers (keep_intermediate only keeps files), or
    only ``keys`` (the preparation and the start read few of them).

    `iterations` is one of them: the alpha schedule reaches alphaF on the last iteration, so
    every iteration's significance depends on it."""
    params = dict(config["significant"])
    params.pop("keep_intermediate")
    return {k: params[k] for k in keys} if keys else params


def significant_keep(path):
    """Intermediate iteration files: kept with keep_intermediate, else temporary (removed once
    the next iteration has used them; a rerun after a kill still finds the last one)."""
    return path if config["significant"]["keep_intermediate"] else temp(path)


def significant_prepare_inputs(wildcards):
    if config["significant"]["input"] == "ml2d":
        return {"averages": f"{OUT}/ml2d/classes.mrcs",
                "classes_star": f"{OUT}/ml2d/classes.star"}
    return {"averages": config["significant"]["input"],
            "images": image_files(config["significant"]["input"])[1:]}


def significant_start_inputs(wildcards):
    inputs = {"averages": f"{SIG}/input/averages.mrcs", "info": f"{SIG}/input/info.json"}
    if config["significant"]["reference"]:
        inputs["reference"] = config["significant"]["reference"]
    return inputs


# --- figures --------------------------------------------------------------------------------


def ml2d_plot_inputs(wildcards):
    last = ml2d_final_iteration()
    first = 0 if ML2D_GENERATE else 1
    return {
        "classes": f"{ML2D}/classes.mrcs",
        "classes_star": f"{ML2D}/classes.star",
        "models": [f"{ML2D}/iter_{i:03d}/model.json" for i in range(first, last + 1)],
    }
