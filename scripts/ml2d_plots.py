"""Rule ml2d_plots: class gallery and convergence figures."""

from cryosnake import plots
from cryosnake.pipeline.runtime import rule_job

with rule_job(snakemake.log[0], 1, "ml2d_plots"):
    plots.ml2d_gallery(snakemake.input.classes, snakemake.input.classes_star,
                       snakemake.output.gallery)
    plots.ml2d_convergence(snakemake.input.models, snakemake.output.convergence)
