"""Rule summary: print and write the run summary of the final outputs."""

from pathlib import Path

from cryosnake.pipeline.jobs import rule_job
from cryosnake.summary import RunFiles, write_run_summary

inp = snakemake.input
with rule_job(snakemake.log[0], 1, "summary"):
    files = RunFiles.of(Path(snakemake.output[0]).parent, ml2d_model=inp.ml2d_model,
                        classes=inp.classes, classes_star=inp.classes_star, volume=inp.volume,
                        angles=inp.angles, significant_stats=inp.significant_stats,
                        plots=inp.plots)
    print(write_run_summary(files, snakemake.output[0]))
