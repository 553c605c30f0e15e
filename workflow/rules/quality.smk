# The generated set's quality report: a source-only segmenter scores the merged set (mIoU per
# condition and class, Eq. 1 boundary band vs interior), next to its score on the held-out source
# images (held_out). Scoring reads only the manifest's set and the model file, so it reruns when
# either changes (or its own params); the report joins the scores with the reference's
# metrics.json in seconds, and reruns whenever the evaluation of that reference does.


rule quality_score:
    input:
        manifest="results/generation/dataset/manifest.csv",
        model=quality_checkpoint(),
    output:
        scores=f"{QUALITY_DIR}/scores.json",
        panels=f"{QUALITY_DIR}/panels.npz",
    log:
        "logs/generation/quality_score.log",
    benchmark:
        "results/benchmarks/generation/quality_score.tsv"
    params:
        p=stage("quality"),
    threads: config["evaluation"]["threads"]
    resources:
        **execution("quality"),
        gpu=1,
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m flexseg.quality score --params {params.p:q} --manifest {input.manifest} "
            "--checkpoint {input.model:q} --scores {output.scores} --panels {output.panels} "
            "--threads {threads} --device {resources.device} > {log} 2>&1"
        )


rule quality_reference:
    input:
        world=demo_world(),
        model=quality_checkpoint(),
    output:
        metrics=f"{QUALITY_DIR}/reference/metrics.json",
        panels=f"{QUALITY_DIR}/reference/panels.png",
        tiles=f"{QUALITY_DIR}/reference/panels.npz",
    log:
        "logs/generation/quality_reference.log",
    benchmark:
        "results/benchmarks/generation/quality_reference.tsv"
    params:
        p=lambda wildcards: params_json(
            config, "evaluate", dataset=config["held_out"], **quality_run_names()
        ),
    threads: config["evaluation"]["threads"]
    resources:
        **execution("evaluate"),
        gpu=1,
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m flexseg.evaluate --params {params.p:q} --checkpoint {input.model:q} "
            "--metrics {output.metrics} --panels {output.panels} --tiles {output.tiles} "
            "--threads {threads} --device {resources.device} > {log} 2>&1"
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
    log:
        "logs/generation/quality_report.log",
    params:
        reference=lambda wildcards, input: (
            f"--reference {input.reference}" if input.reference else ""
        ),
    localrule: True
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.quality report --scores {input.scores} --panels {input.panels} "
        "{params.reference} --out-csv {output.table} --figure {output.figure} > {log} 2>&1"
