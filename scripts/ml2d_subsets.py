"""Rule ml2d_subsets: one RELION particle STAR per ML2D class."""

from cryosnake.pipeline.ml2d import subsets_job
from cryosnake.pipeline.runtime import rule_job

with rule_job(snakemake.log[0], snakemake.threads, "ml2d_subsets"):
    subsets_job(snakemake.input.particles, snakemake.output.subsets)
