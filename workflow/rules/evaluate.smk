# One evaluation job per (run, dataset): mIoU, per-class IoU, boundary/interior error, panels.


rule evaluate:
    input:
        world=demo_world(),
        model="results/train/{experiment}/{model}/seed{seed}/model.pt",
    output:
        metrics="results/evaluate/{experiment}/{model}/seed{seed}/{dataset}/metrics.json",
        panels=report(
            "results/evaluate/{experiment}/{model}/seed{seed}/{dataset}/panels.png",
            caption="../report/panels.rst",
            category="Qualitative",
            subcategory="{dataset}",
            labels={"run": "{experiment} {model} seed {seed}", "dataset": "{dataset}"},
        ),
    params:
        p=stage("evaluate"),
    log:
        "logs/evaluate/{experiment}/{model}/seed{seed}/{dataset}.log",
    benchmark:
        "results/benchmarks/evaluate/{experiment}/{model}/seed{seed}/{dataset}.tsv"
    threads: 1
    resources:
        gpu=1,
        cpu_load=cpu_load,
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.evaluate --params {params.p:q} --checkpoint {input.model} --threads {threads} "
        "--out-dir results/evaluate/{wildcards.experiment}/{wildcards.model}/seed{wildcards.seed}/{wildcards.dataset} "
        "> {log} 2>&1"
