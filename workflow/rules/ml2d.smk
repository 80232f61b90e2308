# ML2D / MLF2D: one E-step job per particle chunk and iteration, one M-step per iteration.
# The M-step is a checkpoint: after each one the final-iteration function reads model.json
# and either asks for the next iteration or stops (converged, or ml2d.max_iterations).
# A rerun resumes after the last completed M-step; nothing completed is recomputed. Raising
# max_iterations after a finished run continues from its last iteration, lowering it takes
# the outputs of an earlier one, and an iteration whose model.json or references.mrcs was
# deleted is recomputed, also when the final outputs exist (ml2d_final_iteration and
# ml2d_final_inputs in common.smk).

rule ml2d_start:
    input:
        particles=INPUT_STAR,
        references=image_files(config["ml2d"]["references"]),
    output:
        model=f"{ML2D}/start/model.json" if ML2D_GENERATE else f"{ML2D}/iter_000/model.json",
        references=(
            f"{ML2D}/start/references.mrcs"
            if ML2D_GENERATE
            else f"{ML2D}/iter_000/references.mrcs"
        ),
        index=ML2D_INDEX,
        groups=ML2D_GROUPS or [],
    params:
        ml2d=ml2d_algorithm_params(),
        chunk_size=CHUNK_SIZE,
        code=CODE["ml2d"],
    log:
        f"{OUT}/logs/ml2d_start.log",
    benchmark:
        f"{OUT}/benchmarks/ml2d_start.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/ml2d_start.py"


rule ml2d_estep:
    input:
        unpack(ml2d_estep_inputs),
    output:
        sums=f"{ML2D}/iter_{{iter}}/chunks/sums_{{chunk}}.npz",
        state=f"{ML2D}/iter_{{iter}}/chunks/state_{{chunk}}.npz",
        assignments=f"{ML2D}/iter_{{iter}}/chunks/assignments_{{chunk}}.npz",
    params:
        ml2d=ml2d_algorithm_params(),
        chunk_size=CHUNK_SIZE,
        code=CODE["ml2d"],
    log:
        f"{OUT}/logs/ml2d/estep_{{iter}}_{{chunk}}.log",
    benchmark:
        f"{OUT}/benchmarks/ml2d/estep_{{iter}}_{{chunk}}.tsv"
    threads: THREADS
    resources:
        gpu=GPUS,
        mem_mb=estep_mem_mb,
        runtime=240,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/ml2d_estep.py"


checkpoint ml2d_mstep:
    input:
        summary=INPUT_SUMMARY,
        model=lambda w: ml2d_model(int(w.iter)),
        references=lambda w: ml2d_model(int(w.iter)).replace("model.json", "references.mrcs"),
        sums=expand(f"{ML2D}/iter_{{{{iter}}}}/chunks/sums_{{chunk}}.npz", chunk=CHUNKS),
    output:
        model=f"{ML2D}/iter_{{iter}}/model.json",
        references=f"{ML2D}/iter_{{iter}}/references.mrcs",
    params:
        ml2d=ml2d_algorithm_params(),
        code=CODE["ml2d"],
    log:
        f"{OUT}/logs/ml2d/mstep_{{iter}}.log",
    benchmark:
        f"{OUT}/benchmarks/ml2d/mstep_{{iter}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/ml2d_mstep.py"


ruleorder: ml2d_start > ml2d_mstep


# The final ML2D outputs; `snakemake ml2d` (the target rule in the Snakefile) asks for them.
rule ml2d_final:
    input:
        unpack(ml2d_final_inputs),
    output:
        classes=f"{ML2D}/classes.mrcs",
        classes_star=f"{ML2D}/classes.star",
        particles=f"{ML2D}/particles.star",
        model=f"{ML2D}/model.json",
        model_star=f"{ML2D}/model.star",
        xmd=f"{ML2D}/particles.xmd",
    params:
        ml2d=ml2d_algorithm_params(),
        code=CODE["ml2d"],
    log:
        f"{OUT}/logs/ml2d_final.log",
    benchmark:
        f"{OUT}/benchmarks/ml2d_final.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/ml2d_final.py"


# Per-class particle STARs: a rule of their own, so that switching ml2d.write_subsets (which
# only adds them to the default target) reruns nothing of ML2D or Reconstruct Significant.
rule ml2d_subsets:
    input:
        particles=f"{ML2D}/particles.star",
    output:
        subsets=ML2D_SUBSETS,
    params:
        code=CODE["ml2d"],
    log:
        f"{OUT}/logs/ml2d_subsets.log",
    benchmark:
        f"{OUT}/benchmarks/ml2d_subsets.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/ml2d_subsets.py"
