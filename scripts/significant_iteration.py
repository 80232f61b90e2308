"""Rule significant_iteration: significant assignment + weighted reconstruction."""

from cryosnake.pipeline.runtime import job_backend, rule_job
from cryosnake.pipeline.significant import iteration_job

it = int(snakemake.wildcards.iter)
with rule_job(snakemake.log[0], snakemake.threads, f"significant_iteration {it}",
              end_process=True):
    iteration_job(snakemake.input.averages, snakemake.input.info, snakemake.input.volume, it,
                  snakemake.params.significant, job_backend(snakemake.resources),
                  snakemake.output.volume, snakemake.output.angles, snakemake.output.stats)
