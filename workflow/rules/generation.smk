# Diffusion generation: job table -> (demo: train the tiny generator) -> K shards -> merged set;
# or, with generation.released set, a released DGInStyle set checked and placed as the merged set
# (then no job table, demo generator or shard is planned).
# The demo generator runs on the CPU (generation/demo has no device setting), on one thread:
# beside a one-thread training job on a 2-core machine, two threads oversubscribe the cores and
# made the chain 2-4x slower (measured); alone, a second thread gained only 10-40 %.


rule generation_jobs:
    input:
        stats="results/rcs/class_stats.json",
    output:
        jobs="results/generation/jobs.csv",
    log:
        "logs/generation/jobs.log",
    benchmark:
        "results/benchmarks/generation/jobs.tsv"
    params:
        p=stage("generation_jobs"),
    priority: 10
    localrule: True
    threads: 1
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m generation.jobs --params {params.p:q} --stats {input.stats} "
        "--out {output.jobs} > {log} 2>&1"


rule demo_generator_prior:
    input:
        world=DEMO_WORLD,
    output:
        prior=directory(f"{DEMO_MODEL}/prior"),
    log:
        "logs/generation/demo_prior.log",
    benchmark:
        "results/benchmarks/generation/demo_prior.tsv"
    params:
        p=stage("demo_generator"),
        root=lambda wildcards, input: os.path.dirname(input.world),
    priority: 10
    threads: 1
    resources:
        **execution("demo_generator"),
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m generation.demo prior --params {params.p:q} --world {params.root} "
        "--out {output.prior} --threads {threads} > {log} 2>&1"


rule demo_generator_source:
    input:
        world=DEMO_WORLD,
        prior=f"{DEMO_MODEL}/prior",
    output:
        source_unet=directory(f"{DEMO_MODEL}/source_unet"),
    log:
        "logs/generation/demo_source.log",
    benchmark:
        "results/benchmarks/generation/demo_source.tsv"
    params:
        p=stage("demo_generator"),
        root=lambda wildcards, input: os.path.dirname(input.world),
    priority: 10
    threads: 1
    resources:
        **execution("demo_generator"),
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m generation.demo source --params {params.p:q} --world {params.root} "
        "--prior {input.prior} --out {output.source_unet} --threads {threads} > {log} 2>&1"


rule demo_generator_controlnet:
    input:
        world=DEMO_WORLD,
        prior=f"{DEMO_MODEL}/prior",
        source_unet=f"{DEMO_MODEL}/source_unet",
    output:
        controlnet=directory(f"{DEMO_MODEL}/controlnet"),
    log:
        "logs/generation/demo_controlnet.log",
    benchmark:
        "results/benchmarks/generation/demo_controlnet.tsv"
    params:
        p=stage("demo_generator"),
        root=lambda wildcards, input: os.path.dirname(input.world),
    priority: 10
    threads: 1
    resources:
        **execution("demo_generator"),
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m generation.demo controlnet --params {params.p:q} --world {params.root} "
        "--prior {input.prior} --source-unet {input.source_unet} --out {output.controlnet} "
        "--threads {threads} > {log} 2>&1"


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
        manifest="results/generation/shards/{shard}/manifest.csv",
    log:
        "logs/generation/shard_{shard}.log",
    benchmark:
        "results/benchmarks/generation/shard_{shard}.tsv"
    params:
        p=stage("generate"),
        shards=len(SHARDS),
        # the shard's images and labels, kept across kills: a rerun generates only what is missing
        work=lambda wildcards, output: os.path.dirname(output.manifest),
        models=lambda wildcards, input: (
            f"--prior {input.prior} --controlnet {input.controlnet}"
            if "prior" in input.keys()
            else ""
        ),
    priority: 10
    threads: config["generation"]["sampler"]["threads"]
    resources:
        **execution("generate"),
        gpu=1,
    conda:
        "../envs/flexseg.yaml"
    shell:
        gpu_job(
            "python -m generation.shard --params {params.p:q} --jobs {input.jobs} "
            "--shard {wildcards.shard} --num-shards {params.shards} {params.models} "
            "--manifest {output.manifest} --work-dir {params.work} --threads {threads} "
            "--tile-batch {resources.tile_batch} --device {resources.device} > {log} 2>&1"
        )


if RELEASED:

    rule import_released:
        input:
            images=f"{RELEASED['root']}/images",
            labels=f"{RELEASED['root']}/labels",
        output:
            manifest="results/generation/dataset/manifest.csv",
            grid="results/generation/samples_grid.png",
        log:
            "logs/generation/import_released.log",
        benchmark:
            "results/benchmarks/generation/import_released.tsv"
        params:
            p=stage("import_released"),
        conda:
            "../envs/flexseg.yaml"
        shell:
            "python -m generation.released --params {params.p:q} --out {output.manifest} "
            "--grid {output.grid} > {log} 2>&1"

else:

    rule merge_generated:
        input:
            shards=expand("results/generation/shards/{shard}/manifest.csv", shard=SHARDS),
        output:
            manifest="results/generation/dataset/manifest.csv",
            grid="results/generation/samples_grid.png",
        log:
            "logs/generation/merge.log",
        params:
            p=stage("merge_generated"),
        localrule: True
        conda:
            "../envs/flexseg.yaml"
        shell:
            "python -m generation.merge --params {params.p:q} --shards {input.shards} "
            "--out {output.manifest} --grid {output.grid} > {log} 2>&1"
