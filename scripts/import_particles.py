"""Rule import_particles: any supported particle format -> canonical RELION 3.1 STAR."""

from cryosnake.pipeline.data import import_job
from cryosnake.pipeline.runtime import rule_job

with rule_job(snakemake.log[0], snakemake.threads, "import_particles"):
    import_job(snakemake.input[0], snakemake.output.star, snakemake.output.summary,
               sampling=snakemake.params.sampling, require_ctf=snakemake.params.require_ctf)
