# What a scientist looks at: figures (in the Snakemake report) and the final summary.


rule ml2d_plots:
    input:
        unpack(ml2d_plot_inputs),
    output:
        gallery=report(
            f"{OUT}/ml2d/gallery.png",
            caption="../report/ml2d_gallery.rst",
            category="ML2D",
        ),
        convergence=report(
            f"{OUT}/ml2d/convergence.png",
            caption="../report/ml2d_convergence.rst",
            category="ML2D",
        ),
    params:
        code=CODE["plots"],
    log:
        f"{OUT}/logs/ml2d_plots.log",
    benchmark:
        f"{OUT}/benchmarks/ml2d_plots.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/ml2d_plots.py"


rule significant_plots:
    input:
        volume=f"{SIG}/volume.mrc",
        angles=f"{SIG}/angles.star",
        stats=expand(f"{SIG}/iter_{{i:03d}}/stats.json", i=range(1, SIG_ITERATIONS + 1)),
    output:
        volume=report(
            f"{SIG}/volume.png",
            caption="../report/volume.rst",
            category="Reconstruct Significant",
        ),
        angles=report(
            f"{SIG}/angular_distribution.png",
            caption="../report/angular_distribution.rst",
            category="Reconstruct Significant",
        ),
        progress=report(
            f"{SIG}/progress.png",
            caption="../report/progress.rst",
            category="Reconstruct Significant",
        ),
    params:
        code=CODE["plots"],
    log:
        f"{OUT}/logs/significant_plots.log",
    benchmark:
        f"{OUT}/benchmarks/significant_plots.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/significant_plots.py"


# The reprojection check: each average beside the volume's projection at its assigned pose.
rule significant_reprojections:
    input:
        volume=f"{SIG}/volume.mrc",
        angles=f"{SIG}/angles.star",
        averages=f"{SIG}/input/averages.mrcs",
        info=f"{SIG}/input/info.json",
    output:
        star=f"{SIG}/reprojections.star",
        stack=f"{SIG}/reprojections.mrcs",
        png=report(
            f"{SIG}/reprojections.png",
            caption="../report/reprojections.rst",
            category="Reconstruct Significant",
        ),
    params:
        code=CODE["reprojection"],
    log:
        f"{OUT}/logs/significant_reprojections.log",
    benchmark:
        f"{OUT}/benchmarks/significant_reprojections.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/significant_reprojections.py"


# The built-in demo knows its truth: the classes and the volume scored against it.
rule demo_check:
    input:
        truth=f"{OUT}/demo/ground_truth.star",
        views=f"{OUT}/demo/views.mrcs",
        phantom=f"{OUT}/demo/phantom.mrc",
        particles=f"{ML2D}/particles.star",
        classes=f"{ML2D}/classes.mrcs",
        volume=f"{SIG}/volume.mrc",
    output:
        f"{OUT}/demo/check.json",
    params:
        code=CODE["demo_check"],
    log:
        f"{OUT}/logs/demo_check.log",
    benchmark:
        f"{OUT}/benchmarks/demo_check.tsv"
    threads: THREADS
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/demo_check.py"


rule summary:
    input:
        particles=INPUT_STAR,
        ml2d_model=f"{ML2D}/model.json",
        classes=f"{ML2D}/classes.mrcs",
        classes_star=f"{ML2D}/classes.star",
        volume=f"{SIG}/volume.mrc",
        angles=f"{SIG}/angles.star",
        significant_stats=f"{SIG}/iter_{SIG_ITERATIONS:03d}/stats.json",
        significant_info=f"{SIG}/input/info.json",
        reprojections=f"{SIG}/reprojections.star",
        demo_check=f"{OUT}/demo/check.json" if DEMO else [],
        plots=[
            f"{ML2D}/gallery.png",
            f"{ML2D}/convergence.png",
            f"{SIG}/volume.png",
            f"{SIG}/angular_distribution.png",
            f"{SIG}/progress.png",
            f"{SIG}/reprojections.png",
        ],
    output:
        report(f"{OUT}/summary.txt", caption="../report/summary.rst", category="Summary"),
    params:
        phase_flipped=(
            config["ml2d"]["phase_flipped"]
            if config["ml2d"]["fourier"] and config["ml2d"]["ctf_correction"]
            else None
        ),
        code=CODE["summary"],
    log:
        f"{OUT}/logs/summary.log",
    benchmark:
        f"{OUT}/benchmarks/summary.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        str(ENVS / "cryosnake.yaml")
    script:
        "../../scripts/summary.py"
