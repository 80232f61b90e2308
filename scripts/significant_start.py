"""Rule significant_start: the iteration-0 volume (reference or random start)."""

from cryosnake.pipeline.runtime import job_backend, rule_job
from cryosnake.pipeline.significant import start_job

with rule_job(snakemake.log[0], snakemake.threads, "significant_start"):
    start_job(snakemake.input.averages, snakemake.input.info, snakemake.params.significant,
              snakemake.input.get("reference"), job_backend(snakemake.resources),
              snakemake.output.volume)
