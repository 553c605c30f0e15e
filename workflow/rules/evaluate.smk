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
    log:
        "logs/evaluate/{experiment}/{model}/seed{seed}/{dataset}.log",
    benchmark:
        "results/benchmarks/evaluate/{experiment}/{model}/seed{seed}/{dataset}.tsv"
    params:
        p=stage("evaluate"),
    threads: config["evaluation"]["threads"]
    resources:
        **execution("evaluate"),
        gpu=1,
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m flexseg.evaluate --params {params.p:q} --checkpoint {input.model} "
            "--metrics {output.metrics} --panels {output.panels} --tiles {output.tiles} "
            "--threads {threads} --device {resources.device} > {log} 2>&1"
        )


rule compare_panels:
    input:
        tiles=lambda w: [
            f"results/evaluate/{e}/{w.model}/seed{config['run']['seeds'][0]}/{w.dataset}/panels.npz"
            for e in config["tables"]["compare_panels"]
        ],
    output:
        figure=report(
            "results/figures/compare/{model}/{dataset}.png",
            caption="../report/compare_panels.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"model": "{model}", "dataset": "{dataset}"},
        ),
    log:
        "logs/compare_panels/{model}/{dataset}.log",
    params:
        titles=experiment_titles(config, config["tables"]["compare_panels"]),
    localrule: True
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.figures compare --panels {input.tiles:q} --titles {params.titles:q} "
        "--out {output.figure:q} > {log} 2>&1"


rule motivation_panels:
    input:
        manifest="results/generation/dataset/manifest.csv",
        models=lambda w: [
            f"results/train/{e}/{w.model}/seed{config['run']['seeds'][0]}/model.pt"
            for e in config["tables"]["motivation_panels"]["experiments"]
        ],
    output:
        figure=report(
            "results/figures/motivation/{model}.png",
            caption="../report/motivation_panels.rst",
            category="Figures",
            labels={"model": "{model}"},
        ),
    log:
        "logs/motivation_panels/{model}.log",
    params:
        titles=experiment_titles(config, config["tables"]["motivation_panels"]["experiments"]),
        images=config["tables"]["motivation_panels"]["images"],
    threads: 1
    resources:
        **execution("evaluate"),
        gpu=1,
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m flexseg.figures generated --manifest {input.manifest} "
            "--checkpoints {input.models:q} --titles {params.titles:q} --images {params.images} "
            "--device {resources.device} --out {output.figure:q} > {log} 2>&1"
        )
