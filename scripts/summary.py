"""Rule summary: print and write the run summary."""

from cryosnake.pipeline.jobs import rule_job
from cryosnake.summary import write_run_summary

with rule_job(snakemake.log[0], 1, "summary"):
    print(write_run_summary(snakemake.config["outdir"], snakemake.output[0]))
