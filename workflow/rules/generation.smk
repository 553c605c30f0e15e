# Diffusion generation: job table -> (demo: train the tiny generator) -> K shards -> merged set;
# or, with generation.released set, a released DGInStyle set checked and placed as the merged set
# (then no job table, demo generator or shard is planned).
# The demo generator's jobs run on one thread: beside a one-thread training job on a 2-core
# machine, two threads oversubscribe the cores and made the chain 2-4x slower (measured); alone,
# a second thread gained only 10-40 %.


rule generation_jobs:
    input:
        "results/rcs/class_stats.json",
    output:
        "results/generation/jobs.csv",
    params:
        p=stage("generation_jobs"),
    log:
        "logs/generation/jobs.log",
    benchmark:
        "results/benchmarks/generation/jobs.tsv"
    priority: 10
    threads: 1
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m generation.jobs --params {params.p:q} --stats {input} --out {output} > {log} 2>&1"


rule demo_generator_prior:
    input:
        world=DEMO_WORLD,
    output:
        directory(f"{DEMO_MODEL}/prior"),
    params:
        p=stage("demo_generator"),
        root=lambda wildcards, input: os.path.dirname(input.world),
    log:
        "logs/generation/demo_prior.log",
    benchmark:
        "results/benchmarks/generation/demo_prior.tsv"
    priority: 10
    threads: 1
    resources:
        gpu=1,
        cpu_load=cpu_load,
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m generation.demo prior --params {params.p:q} --world {params.root} "
            "--out {output} --threads {threads} > {log} 2>&1"
        )


rule demo_generator_source:
    input:
        world=DEMO_WORLD,
        prior=f"{DEMO_MODEL}/prior",
    output:
        directory(f"{DEMO_MODEL}/source_unet"),
    params:
        p=stage("demo_generator"),
        root=lambda wildcards, input: os.path.dirname(input.world),
    log:
        "logs/generation/demo_source.log",
    benchmark:
        "results/benchmarks/generation/demo_source.tsv"
    priority: 10
    threads: 1
    resources:
        gpu=1,
        cpu_load=cpu_load,
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m generation.demo source --params {params.p:q} --world {params.root} "
            "--prior {input.prior} --out {output} --threads {threads} > {log} 2>&1"
        )


rule demo_generator_controlnet:
    input:
        world=DEMO_WORLD,
        prior=f"{DEMO_MODEL}/prior",
        source_unet=f"{DEMO_MODEL}/source_unet",
    output:
        directory(f"{DEMO_MODEL}/controlnet"),
    params:
        p=stage("demo_generator"),
        root=lambda wildcards, input: os.path.dirname(input.world),
    log:
        "logs/generation/demo_controlnet.log",
    benchmark:
        "results/benchmarks/generation/demo_controlnet.tsv"
    priority: 10
    threads: 1
    resources:
        gpu=1,
        cpu_load=cpu_load,
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m generation.demo controlnet --params {params.p:q} --world {params.root} "
            "--prior {input.prior} --source-unet {input.source_unet} --out {output} "
            "--threads {threads} > {log} 2>&1"
        )


rule generate_shard:
    input:
        unpack(
            lambda wildcards: {
                "jobs": "results/generation/jobs.csv",
                **demo_models(),
                **diffusion_weights(),
            }
        ),
    output:
        "results/generation/shards/{shard}/manifest.csv",
    params:
        p=stage("generate"),
        shards=len(SHARDS),
        models=lambda wildcards, input: (
            f"--prior {input.prior} --controlnet {input.controlnet}" if "prior" in input.keys() else ""
        ),
    log:
        "logs/generation/shard_{shard}.log",
    benchmark:
        "results/benchmarks/generation/shard_{shard}.tsv"
    priority: 10
    threads: 1
    resources:
        gpu=1,
        cpu_load=cpu_load,
        **execution("generate"),
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m generation.shard --params {params.p:q} --jobs {input.jobs} --shard {wildcards.shard} "
            "--num-shards {params.shards} {params.models} --out-dir results/generation/shards/{wildcards.shard} "
            "--threads {threads} --tile-batch {resources.tile_batch} --device {resources.device} "
            "> {log} 2>&1"
        )


if RELEASED:

    rule import_released:
        input:
            images=f"{RELEASED['root']}/images",
            labels=f"{RELEASED['root']}/labels",
        output:
            manifest="results/generation/dataset/manifest.csv",
            grid="results/generation/samples_grid.png",
        params:
            p=stage("import_released"),
        log:
            "logs/generation/import_released.log",
        benchmark:
            "results/benchmarks/generation/import_released.tsv"
        conda:
            "../envs/flexseg.yaml"
        shell:
            "python -m generation.released --params {params.p:q} --out {output.manifest} "
            "--grid {output.grid} > {log} 2>&1"

else:

    rule merge_generated:
        input:
            expand("results/generation/shards/{shard}/manifest.csv", shard=SHARDS),
        output:
            manifest="results/generation/dataset/manifest.csv",
            grid="results/generation/samples_grid.png",
        params:
            p=stage("merge_generated"),
        log:
            "logs/generation/merge.log",
        conda:
            "../envs/flexseg.yaml"
        shell:
            "python -m generation.merge --params {params.p:q} --shards {input} --out {output.manifest} "
            "--grid {output.grid} > {log} 2>&1"
