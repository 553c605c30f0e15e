# The generated set's quality report: a source-only segmenter scores the merged set (mIoU per
# condition and class, Eq. 1 boundary band vs interior), next to its score on held-out source
# images. Scoring reads only the manifest's set and the model file, so it reruns when either
# changes (or its own params); the report joins the scores with the reference's metrics.json in
# seconds, and reruns whenever the evaluation of that reference does.


rule quality_score:
    input:
        manifest="results/generation/dataset/manifest.csv",
        model=quality_checkpoint(),
    output:
        scores=f"{QUALITY_DIR}/scores.json",
        panels=f"{QUALITY_DIR}/panels.npz",
    params:
        p=stage("quality"),
        out_dir=lambda wildcards, output: os.path.dirname(output.scores),
    log:
        "logs/generation/quality_score.log",
    benchmark:
        "results/benchmarks/generation/quality_score.tsv"
    threads: 1
    resources:
        gpu=1,
        cpu_load=cpu_load,
        **execution("quality"),
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m flexseg.quality score --params {params.p:q} --manifest {input.manifest} "
            "--checkpoint {input.model:q} --out-dir {params.out_dir} --threads {threads} "
            "--device {resources.device} > {log} 2>&1"
        )


rule quality_reference:
    input:
        world=demo_world(),
        model=quality_checkpoint(),
    output:
        metrics=f"{QUALITY_DIR}/reference/metrics.json",
        panels=f"{QUALITY_DIR}/reference/panels.png",
        tiles=f"{QUALITY_DIR}/reference/panels.npz",
    params:
        p=lambda wildcards: params_json(
            config, "evaluate", dataset=config["quality"]["reference"], **quality_run_names()
        ),
        out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
    log:
        "logs/generation/quality_reference.log",
    threads: 1
    resources:
        gpu=1,
        cpu_load=cpu_load,
        **execution("evaluate"),
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m flexseg.evaluate --params {params.p:q} --checkpoint {input.model:q} "
            "--threads {threads} --device {resources.device} --out-dir {params.out_dir} "
            "> {log} 2>&1"
        )


rule quality_report:
    input:
        scores=f"{QUALITY_DIR}/scores.json",
        panels=f"{QUALITY_DIR}/panels.npz",
        reference=quality_reference(),
    output:
        table=report(
            "results/generation/quality.csv",
            caption="../report/quality_table.rst",
            category="Generated set",
        ),
        figure=report(
            "results/generation/quality.png",
            caption="../report/quality.rst",
            category="Generated set",
        ),
    params:
        reference=lambda wildcards, input: (
            f"--reference {input.reference}" if input.reference else ""
        ),
    log:
        "logs/generation/quality_report.log",
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.quality report --scores {input.scores} --panels {input.panels} "
        "{params.reference} --out-csv {output.table} --figure {output.figure} > {log} 2>&1"
