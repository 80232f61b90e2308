"""Rule demo_check: score the run's classes and volume against the demo's truth."""

from cryosnake.pipeline.demo_check import demo_check_job
from cryosnake.pipeline.runtime import rule_job

inp = snakemake.input
with rule_job(snakemake.log[0], snakemake.threads, "demo_check"):
    demo_check_job(inp.truth, inp.views, inp.phantom, inp.particles, inp.classes, inp.volume,
                   snakemake.output[0])
