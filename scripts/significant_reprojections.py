"""Rule significant_reprojections: each average beside the volume's projection at its pose."""

from cryosnake.pipeline.reprojection import reprojection_job
from cryosnake.pipeline.runtime import rule_job

inp, out = snakemake.input, snakemake.output
with rule_job(snakemake.log[0], 1, "significant_reprojections"):
    reprojection_job(inp.volume, inp.angles, inp.averages, inp.info, out.star, out.stack, out.png)
