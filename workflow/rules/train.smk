# One training job per (experiment, model, seed). Checkpoints beside the outputs survive a kill.


rule train:
    input:
        data_list,
    output:
        model="results/train/{experiment}/{model}/seed{seed}/model.pt",
        log_csv="results/train/{experiment}/{model}/seed{seed}/loss_log.csv",
    params:
        p=stage("train"),
    log:
        "logs/train/{experiment}/{model}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{experiment}/{model}/seed{seed}.tsv"
    threads: config["training"]["threads"]
    resources:
        gpu=config["training"]["nproc"],
        cpu_load=cpu_load,
        **execution("train"),
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m flexseg.train --params {params.p:q} --data {input} "
            "--out-dir results/train/{wildcards.experiment}/{wildcards.model}/seed{wildcards.seed} "
            "--threads {threads} --workers {resources.workers} --device {resources.device} "
            "--log-every {resources.log_every} --checkpoint-every {resources.checkpoint_every} "
            "> {log} 2>&1"
        )
