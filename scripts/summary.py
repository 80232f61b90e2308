"""Rule summary: print and write the run summary of the final outputs."""

from pathlib import Path

from cryosnake.io import star
from cryosnake.mlf2d import resolve_phase_flipped
from cryosnake.pipeline.runtime import rule_job
from cryosnake.summary import RunFiles, write_run_summary

inp = snakemake.input
with rule_job(snakemake.log[0], 1, "summary"):
    files = RunFiles.of(Path(snakemake.output[0]).parent, ml2d_model=inp.ml2d_model,
                        classes=inp.classes, classes_star=inp.classes_star, volume=inp.volume,
                        angles=inp.angles, significant_stats=inp.significant_stats,
                        significant_info=inp.significant_info,
                        demo_check=inp.demo_check or None,
                        reprojections=inp.reprojections, plots=inp.plots)
    if snakemake.params.phase_flipped is not None:  # MLF2D with CTF correction
        particles, optics = star.read_particles(inp.particles)
        flipped, origin = resolve_phase_flipped(snakemake.params.phase_flipped,
                                                star.merge_optics(particles, optics))
        files.phase_flip = f"{str(flipped).lower()} ({origin})"
    print(write_run_summary(files, snakemake.output[0]))
