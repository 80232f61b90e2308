"""Rule ml2d_start: the global average (generated classes) or the user references."""

from cryosnake.pipeline.ml2d import start_job
from cryosnake.pipeline.runtime import rule_job

with rule_job(snakemake.log[0], snakemake.threads, "ml2d_start"):
    start_job(snakemake.input.particles, snakemake.params.ml2d, snakemake.params.chunk_size,
              snakemake.output.model, snakemake.output.references, snakemake.output.index,
              snakemake.output.get("groups") or None)  # MLF2D only
