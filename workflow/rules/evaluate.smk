# One evaluation job per (run, dataset): mIoU, per-class IoU, boundary/interior error, panels;
# then the paper's Fig. 5 per (model, dataset) from the panel tiles of the compared runs, and its
# Fig. 2 per model: the compared runs' predictions on a few generated training images.

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
        tiles="results/evaluate/{experiment}/{model}/seed{seed}/{dataset}/panels.npz",
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
        **execution("evaluate"),
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m flexseg.evaluate --params {params.p:q} --checkpoint {input.model} --threads {threads} "
            "--device {resources.device} "
            "--out-dir results/evaluate/{wildcards.experiment}/{wildcards.model}/seed{wildcards.seed}/{wildcards.dataset} "
            "> {log} 2>&1"
        )


rule compare_panels:
    input:
        lambda w: [
            f"results/evaluate/{e}/{w.model}/seed{config['run']['seeds'][0]}/{w.dataset}/panels.npz"
            for e in config["tables"]["compare_panels"]
        ],
    output:
        report(
            "results/figures/compare/{model}/{dataset}.png",
            caption="../report/compare_panels.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"model": "{model}", "dataset": "{dataset}"},
        ),
    params:
        titles=experiment_titles(config, config["tables"]["compare_panels"]),
    log:
        "logs/compare_panels/{model}/{dataset}.log",
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.figures compare --panels {input:q} --titles {params.titles:q} "
        "--out {output:q} > {log} 2>&1"


rule motivation_panels:
    input:
        manifest="results/generation/dataset/manifest.csv",
        models=lambda w: [
            f"results/train/{e}/{w.model}/seed{config['run']['seeds'][0]}/model.pt"
            for e in config["tables"]["motivation_panels"]["experiments"]
        ],
    output:
        report(
            "results/figures/motivation/{model}.png",
            caption="../report/motivation_panels.rst",
            category="Figures",
            labels={"model": "{model}"},
        ),
    params:
        titles=experiment_titles(config, config["tables"]["motivation_panels"]["experiments"]),
        images=config["tables"]["motivation_panels"]["images"],
    log:
        "logs/motivation_panels/{model}.log",
    threads: 1
    resources:
        gpu=1,
        cpu_load=cpu_load,
        **execution("evaluate"),
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m flexseg.figures generated --manifest {input.manifest} "
            "--checkpoints {input.models:q} --titles {params.titles:q} --images {params.images} "
            "--device {resources.device} --out {output:q} > {log} 2>&1"
        )
