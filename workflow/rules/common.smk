# Shared set-up: configuration checks at start-up, paths, chunking.
import json

from snakemake.exceptions import WorkflowError

from cryosnake import config as cs_config
from cryosnake.errors import InputError
from cryosnake.io.particles import n_chunks
from cryosnake.pipeline.data import count_particles

try:
    cs_config.validate(config, Path(workflow.basedir) / "config" / "schema.yaml")
    cs_config.check(config)
    # on a cluster the GPU is on the compute nodes, not necessarily on the submitting host
    BACKEND = cs_config.check_backend(config, on_this_host=workflow.local_exec)
except InputError as err:
    raise WorkflowError(f"cryosnake: {err}")

OUT = config["outdir"]
ENVS = Path(workflow.basedir) / "envs"
THREADS = config["compute"]["threads"]
CHUNK_SIZE = config["compute"]["chunk_size"]
# GPUs per job for the rules that run kernels (E-steps, Significant's start and iterations):
# the `gpu` resource schedules them on GPU nodes (SLURM: --gpus) and, locally, limits how
# many run at once with `--resources gpu=N`.
GPUS = 1 if BACKEND == "cuda" else 0


def _n_particles():
    if config["particles"] == "demo":
        return config["demo"]["n_particles"]
    try:
        return count_particles(config["particles"])
    except InputError as err:
        raise WorkflowError(f"cryosnake: {err}")


N_PARTICLES = _n_particles()
N_CHUNKS = n_chunks(N_PARTICLES, CHUNK_SIZE)
CHUNKS = [f"{c:04d}" for c in range(N_CHUNKS)]


wildcard_constraints:
    iter=r"\d{3}",
    chunk=r"\d{4}",


def read_json(path):
    with open(path) as fh:
        return json.load(fh)


# --- ML2D -----------------------------------------------------------------------------------

ML2D = f"{OUT}/ml2d"
ML2D_GENERATE = not config["ml2d"]["references"]
INPUT_STAR = f"{OUT}/input/particles.star"
INPUT_SUMMARY = f"{OUT}/input/summary.json"


def ml2d_algorithm_params():
    """The ml2d keys that change the numbers (a change recomputes from iteration 0).
    max_iterations only decides where the chain stops, so it is left out."""
    keys = dict(config["ml2d"])
    keys.pop("max_iterations")
    if not keys["fourier"]:
        for k in ("ctf_correction", "phase_flipped", "high_res_limit"):
            keys.pop(k)
    return keys


def ml2d_model(i):
    """model.json that iteration i's E-step works against."""
    if i == 0:
        return f"{ML2D}/start/model.json"
    return f"{ML2D}/iter_{i - 1:03d}/model.json"


def ml2d_estep_inputs(wildcards):
    i = int(wildcards.iter)
    model = ml2d_model(i)
    inputs = {
        "particles": INPUT_STAR,
        "summary": INPUT_SUMMARY,
        "model": model,
        "references": model.replace("model.json", "references.mrcs"),
    }
    if i >= 2:  # iteration 1 starts from a fresh state (the start model has other classes)
        inputs["state"] = f"{ML2D}/iter_{i - 1:03d}/chunks/state_{wildcards.chunk}.npz"
    return inputs


def estep_mem_mb(wildcards, input):
    box = read_json(input.summary)["box"]
    return 1500 + (CHUNK_SIZE * box * box * 4 * 8) // 2**20


def ml2d_final_iteration():
    """Walk the M-step checkpoints: the first converged iteration, or max_iterations."""
    i = 1
    while True:
        model = checkpoints.ml2d_mstep.get(iter=f"{i:03d}").output.model
        if i >= config["ml2d"]["max_iterations"] or read_json(model)["converged"]:
            return i
        i += 1


def ml2d_final_inputs(wildcards):
    i = ml2d_final_iteration()
    folder = f"{ML2D}/iter_{i:03d}"
    return {
        "particles": INPUT_STAR,
        "model": f"{folder}/model.json",
        "references": f"{folder}/references.mrcs",
        "assignments": expand(f"{folder}/chunks/assignments_{{chunk}}.npz", chunk=CHUNKS),
    }


# --- Reconstruct Significant ----------------------------------------------------------------

SIG = f"{OUT}/significant"
SIG_ITERATIONS = config["significant"]["iterations"]


def significant_algorithm_params():
    """The significant keys that change the numbers (keep_intermediate only keeps files)."""
    keys = dict(config["significant"])
    keys.pop("keep_intermediate")
    return keys


def significant_keep(path):
    """Intermediate iteration files: kept with keep_intermediate, else temporary (removed once
    the next iteration has used them; a rerun after a kill still finds the last one)."""
    return path if config["significant"]["keep_intermediate"] else temp(path)


def significant_prepare_inputs(wildcards):
    if config["significant"]["input"] == "ml2d":
        return {"averages": f"{OUT}/ml2d/classes.mrcs",
                "classes_star": f"{OUT}/ml2d/classes.star"}
    return {"averages": config["significant"]["input"]}


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
