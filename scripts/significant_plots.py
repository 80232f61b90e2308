"""Rule significant_plots: volume views, angular distribution, progress."""

from cryosnake import plots
from cryosnake.pipeline.runtime import rule_job

with rule_job(snakemake.log[0], 1, "significant_plots"):
    plots.volume_views(snakemake.input.volume, snakemake.output.volume)
    plots.angular_distribution(snakemake.input.angles, snakemake.output.angles)
    plots.significant_progress(snakemake.input.stats, snakemake.output.progress)
