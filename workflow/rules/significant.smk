# Reconstruct Significant: one job per iteration; the alpha schedule runs from alpha0 to
# alphaF over `iterations`, so changing `iterations` recomputes every iteration (the 2D
# classes are kept). Intermediate volumes/angles are temporary unless keep_intermediate.


rule significant_prepare:
    input:
        unpack(significant_prepare_inputs),
    output:
        averages=f"{SIG}/input/averages.mrcs",
        info=f"{SIG}/input/info.json",
    params:
        significant=significant_algorithm_params("input", "target_resolution", "classes"),
        sampling=config["sampling"],
        code=CODE["significant"],
    log:
        f"{OUT}/logs/significant_prepare.log",
    benchmark:
        f"{OUT}/benchmarks/significant_prepare.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/significant_prepare.py"


rule significant_start:
    input:
        unpack(significant_start_inputs),
    output:
        volume=significant_keep(f"{SIG}/iter_000/volume.mrc"),
    params:
        significant=significant_algorithm_params("reference", "target_resolution", "seed"),
        code=CODE["significant"],
    log:
        f"{OUT}/logs/significant_start.log",
    benchmark:
        f"{OUT}/benchmarks/significant_start.tsv"
    threads: THREADS
    resources:
        gpu=GPUS,
        mem_mb=4000,
        runtime=30,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/significant_start.py"


rule significant_iteration:
    input:
        averages=f"{SIG}/input/averages.mrcs",
        info=f"{SIG}/input/info.json",
        volume=lambda w: f"{SIG}/iter_{int(w.iter) - 1:03d}/volume.mrc",
    output:
        volume=significant_keep(f"{SIG}/iter_{{iter}}/volume.mrc"),
        angles=significant_keep(f"{SIG}/iter_{{iter}}/angles.star"),
        stats=f"{SIG}/iter_{{iter}}/stats.json",
    params:
        significant=significant_algorithm_params(),
        code=CODE["significant"],
    log:
        f"{OUT}/logs/significant/iter_{{iter}}.log",
    benchmark:
        f"{OUT}/benchmarks/significant/iter_{{iter}}.tsv"
    threads: THREADS
    resources:
        gpu=GPUS,
        mem_mb=6000,
        runtime=120,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/significant_iteration.py"


ruleorder: significant_start > significant_iteration


# The final volume and angles; `snakemake significant` (the target rule in the Snakefile) asks
# for them.
rule significant_final:
    input:
        volume=f"{SIG}/iter_{SIG_ITERATIONS:03d}/volume.mrc",
        angles=f"{SIG}/iter_{SIG_ITERATIONS:03d}/angles.star",
        info=f"{SIG}/input/info.json",
    output:
        volume=f"{SIG}/volume.mrc",
        angles=f"{SIG}/angles.star",
    params:
        code=CODE["significant"],
    log:
        f"{OUT}/logs/significant_final.log",
    benchmark:
        f"{OUT}/benchmarks/significant_final.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/significant_final.py"
