# One training job per (experiment, model, seed). Checkpoints beside the outputs survive a kill.


rule train:
    input:
        unpack(train_inputs),
        weights=encoder_weights,
    output:
        model="results/train/{experiment}/{model}/seed{seed}/model.pt",
        log_csv="results/train/{experiment}/{model}/seed{seed}/loss_log.csv",
    params:
        p=stage("train"),
        online=lambda wildcards, input: (
            f"--online-rcs {input.online_rcs}" if "online_rcs" in input.keys() else ""
        ),
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
            "python -m flexseg.train --params {params.p:q} --data {input.data} {params.online} "
            "--out-dir results/train/{wildcards.experiment}/{wildcards.model}/seed{wildcards.seed} "
            "--threads {threads} --workers {resources.workers} --device {resources.device} "
            "--log-every {resources.log_every} --checkpoint-every {resources.checkpoint_every} "
            "> {log} 2>&1"
        )
