# Input data: the built-in demo dataset and the import of any supported particle format.
# The image stacks the particles point to are inputs: a stack overwritten in place reruns the
# import and everything after it.


rule demo_data:
    output:
        star=f"{OUT}/demo/particles.star",
        stack=f"{OUT}/demo/particles.mrcs",
        truth=f"{OUT}/demo/ground_truth.star",
        phantom=f"{OUT}/demo/phantom.mrc",
        views=f"{OUT}/demo/views.mrcs",
    params:
        demo=config["demo"],
        code=CODE["data"],
    log:
        f"{OUT}/logs/demo_data.log",
    benchmark:
        f"{OUT}/benchmarks/demo_data.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/demo_data.py"


rule import_particles:
    input:
        source=(
            f"{OUT}/demo/particles.star" if config["particles"] == "demo" else config["particles"]
        ),
        stacks=INPUT_STACKS,
    output:
        star=f"{OUT}/input/particles.star",
        summary=f"{OUT}/input/summary.json",
    params:
        sampling=config["sampling"],
        require_ctf=config["ml2d"]["fourier"] and config["ml2d"]["ctf_correction"],
        code=CODE["data"],
    log:
        f"{OUT}/logs/import_particles.log",
    benchmark:
        f"{OUT}/benchmarks/import_particles.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/import_particles.py"
