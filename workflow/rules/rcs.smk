# Rare-class sampling: per-image class statistics, then the rare-class source subset and the
# online RCS table (runs with training.online_rcs draw their source samples from it).


rule class_stats:
    input:
        world=demo_world(),
    output:
        stats="results/rcs/class_stats.json",
    log:
        "logs/rcs/class_stats.log",
    benchmark:
        "results/benchmarks/rcs/class_stats.tsv"
    params:
        p=stage("class_stats"),
    priority: 10
    threads: config["rcs"]["workers"]
    resources:
        **execution("class_stats"),
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.rcs stats --params {params.p:q} --out {output.stats} "
        "--workers {threads} > {log} 2>&1"


rule rcs_subset:
    input:
        stats="results/rcs/class_stats.json",
    output:
        subset="results/rcs/source_subset.csv",
    log:
        "logs/rcs/subset.log",
    params:
        p=stage("rcs_subset"),
    localrule: True
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.rcs subset --params {params.p:q} --stats {input.stats} "
        "--out {output.subset} > {log} 2>&1"


rule rcs_online:
    input:
        stats="results/rcs/class_stats.json",
    output:
        table="results/rcs/online_rcs.json",
    log:
        "logs/rcs/online.log",
    params:
        p=stage("rcs_online"),
    localrule: True
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.rcs online --params {params.p:q} --stats {input.stats} "
        "--out {output.table} > {log} 2>&1"
