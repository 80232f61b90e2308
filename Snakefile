# cryosnake: cryo-EM single-particle processing as a Snakemake workflow.
#
#   snakemake --cores all                                   # demo -> ML2D -> Reconstruct Significant
#   snakemake -s PATH/TO/Snakefile --cores all --configfile my.yaml   # your data, from your folder
#   snakemake --cores all ml2d                              # 2D classification only (or: significant)
#
# The default config, rules and scripts are found relative to this file; relative paths in
# your config and all outputs are relative to the folder you run snakemake in.
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# This checkout: the folder of this Snakefile, also when cryosnake is a module of another
# workflow (workflow.basedir is then the host's folder).
CRYOSNAKE_DIR = Path(str(workflow.current_basedir))
# cryosnake included as a module of another workflow ("Inside your own workflow", README)
AS_MODULE = Path(workflow.basedir).resolve() != CRYOSNAKE_DIR.resolve()

# Use this checkout's cryosnake package, here and in every job's script (local, conda, SLURM).
sys.path.insert(0, str(CRYOSNAKE_DIR))
from cryosnake.pipeline.runtime import use_package_from  # noqa: E402

use_package_from(CRYOSNAKE_DIR)


configfile: str(CRYOSNAKE_DIR / "config" / "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/ml2d.smk"
include: "workflow/rules/significant.smk"
include: "workflow/rules/report.smk"


rule all:
    # the default target when run directly, never the host's when cryosnake is a module
    default_target: not AS_MODULE
    input:
        f"{OUT}/ml2d/classes.mrcs",
        f"{OUT}/ml2d/particles.star",
        f"{OUT}/significant/volume.mrc",
        f"{OUT}/ml2d/gallery.png",
        f"{OUT}/ml2d/convergence.png",
        f"{OUT}/significant/volume.png",
        f"{OUT}/summary.txt",
        ML2D_SUBSETS if config["ml2d"]["write_subsets"] else [],


# Targets by stage: `snakemake ml2d` (the 2D classes, ML2D or MLF2D), `snakemake significant`
# (the initial volume, and the classes it needs).
rule ml2d:
    input:
        rules.ml2d_final.output,


rule significant:
    input:
        rules.significant_final.output,
