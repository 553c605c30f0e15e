# Rare-class sampling: per-image class statistics, then the rare-class source subset and the
# online RCS table (runs with training.online_rcs draw their source samples from it).


rule class_stats:
    input:
        demo_world(),
    output:
        "results/rcs/class_stats.json",
    params:
        p=stage("class_stats"),
    log:
        "logs/rcs/class_stats.log",
    benchmark:
        "results/benchmarks/rcs/class_stats.tsv"
    priority: 10
    threads: config["rcs"]["workers"]
    resources:
        cpu_load=cpu_load,
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.rcs stats --params {params.p:q} --out {output} --workers {threads} "
        "> {log} 2>&1"


rule rcs_subset:
    input:
        "results/rcs/class_stats.json",
    output:
        "results/rcs/source_subset.csv",
    params:
        p=stage("rcs_subset"),
    log:
        "logs/rcs/subset.log",
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.rcs subset --params {params.p:q} --stats {input} --out {output} > {log} 2>&1"


rule rcs_online:
    input:
        "results/rcs/class_stats.json",
    output:
        "results/rcs/online_rcs.json",
    params:
        p=stage("rcs_online"),
    log:
        "logs/rcs/online.log",
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.rcs online --params {params.p:q} --stats {input} --out {output} > {log} 2>&1"
