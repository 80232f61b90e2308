"""Rule significant: the final volume at the input box and pixel size."""

from cryosnake.pipeline.jobs import rule_job
from cryosnake.pipeline.significant import final_job

with rule_job(snakemake.log[0], snakemake.threads, "significant"):
    final_job(snakemake.input.volume, snakemake.input.angles, snakemake.input.info,
              snakemake.output.volume, snakemake.output.angles)
