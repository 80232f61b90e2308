"""Rule ml2d_final: final classes, class table and per-particle assignments."""

from cryosnake.pipeline.ml2d import final_job
from cryosnake.pipeline.runtime import rule_job

with rule_job(snakemake.log[0], snakemake.threads, "ml2d_final"):
    final_job(snakemake.input.particles, snakemake.input.model, snakemake.input.assignments,
              snakemake.params.ml2d, snakemake.output.classes, snakemake.output.classes_star,
              snakemake.output.particles, snakemake.output.model, snakemake.output.model_star,
              snakemake.output.xmd)
