"""Rule demo_data: simulate the built-in demo dataset."""

from pathlib import Path

from cryosnake.pipeline.data import demo_job
from cryosnake.pipeline.runtime import rule_job

with rule_job(snakemake.log[0], snakemake.threads, "demo_data"):
    demo_job(snakemake.params.demo, Path(snakemake.output.star).parent)
