"""Rule ml2d_estep: the E-step of one particle chunk."""

from cryosnake.pipeline.ml2d import estep_job
from cryosnake.pipeline.runtime import job_backend, rule_job

w = snakemake.wildcards
with rule_job(snakemake.log[0], snakemake.threads, f"ml2d_estep {w.iter}/{w.chunk}",
              end_process=True):
    estep_job(snakemake.input.index, int(w.chunk), snakemake.params.chunk_size, int(w.iter),
              snakemake.params.ml2d, job_backend(snakemake.resources),
              snakemake.input.model, snakemake.input.get("state"), snakemake.output.sums,
              snakemake.output.state, snakemake.output.assignments,
              snakemake.input.get("groups"))  # MLF2D only
