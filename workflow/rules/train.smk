# One training job per (experiment, model, seed). Checkpoints beside the outputs survive a kill.


rule train:
    input:
        unpack(train_inputs),
        weights=encoder_weights,
    output:
        model="results/train/{experiment}/{model}/seed{seed}/model.pt",
        loss_log="results/train/{experiment}/{model}/seed{seed}/loss_log.csv",
        resolved_config="results/train/{experiment}/{model}/seed{seed}/config.json",
    log:
        "logs/train/{experiment}/{model}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{experiment}/{model}/seed{seed}.tsv"
    params:
        p=stage("train"),
        # with online RCS, the table the trainer draws source images by
        online=lambda wildcards, input: (
            f"--online-rcs {input.online_rcs}" if "online_rcs" in input.keys() else ""
        ),
        # the resume state (last.pt), kept across kills: a rerun resumes from it
        checkpoints="results/train/{experiment}/{model}/seed{seed}/checkpoints",
    threads: config["training"]["threads"]
    resources:
        **execution("train"),
        gpu=config["training"]["nproc"],
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m flexseg.train --params {params.p:q} --data {input.data} {params.online} "
            "--model-file {output.model} --loss-log {output.loss_log} "
            "--resolved-config {output.resolved_config} --checkpoint-dir {params.checkpoints} "
            "--threads {threads} --workers {resources.workers} --device {resources.device} "
            "--log-every {resources.log_every} --checkpoint-every {resources.checkpoint_every} "
            "> {log} 2>&1"
        )
