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
    BACKEND = cs_config.check_backend(config)
except InputError as err:
    raise WorkflowError(f"cryosnake: {err}")

OUT = config["outdir"]
ENVS = Path(workflow.basedir) / "envs"
THREADS = config["compute"]["threads"]
CHUNK_SIZE = config["compute"]["chunk_size"]


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
