"""Rule ml2d_mstep: gather the chunk sums of one iteration and update the model."""

from cryosnake.pipeline.data import read_summary
from cryosnake.pipeline.ml2d import mstep_job
from cryosnake.pipeline.runtime import rule_job

with rule_job(snakemake.log[0], snakemake.threads, f"ml2d_mstep {snakemake.wildcards.iter}",
              end_process=True):
    mstep_job(snakemake.input.model, snakemake.input.sums, snakemake.params.ml2d,
              read_summary(snakemake.input.summary)["sampling"], snakemake.output.model,
              snakemake.output.references)
