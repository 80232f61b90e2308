"""Rule significant_prepare: the 2D averages at the working grid."""

from cryosnake.pipeline.runtime import rule_job
from cryosnake.pipeline.significant import prepare_job

with rule_job(snakemake.log[0], snakemake.threads, "significant_prepare"):
    prepare_job(snakemake.input.averages, snakemake.input.get("classes_star"),
                snakemake.params.significant, snakemake.params.sampling,
                snakemake.output.averages, snakemake.output.info)
