"""Rule significant_final: the final volume at the input box and pixel size."""

from cryosnake.pipeline.runtime import rule_job
from cryosnake.pipeline.significant import final_job

with rule_job(snakemake.log[0], snakemake.threads, "significant_final"):
    final_job(snakemake.input.volume, snakemake.input.angles, snakemake.input.info,
              snakemake.output.volume, snakemake.output.angles)
