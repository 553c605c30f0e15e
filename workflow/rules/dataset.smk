# Training lists: the source alone, the generated set alone, and their union (counts checked):
# the RCS subset + the generated set, or (runs with online RCS) the whole source + the generated set.


rule dataset_source:
    input:
        demo_world(),
    output:
        "results/dataset/source.csv",
    params:
        p=stage("combine"),
    log:
        "logs/dataset/source.log",
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.combined source --params {params.p:q} --out {output} > {log} 2>&1"


rule dataset_generated:
    input:
        "results/generation/dataset/manifest.csv",
    output:
        "results/dataset/generated.csv",
    params:
        p=stage("combine"),
    log:
        "logs/dataset/generated.log",
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.combined generated --params {params.p:q} --generated {input} "
        "--out {output} > {log} 2>&1"


rule dataset_combined:
    input:
        subset="results/rcs/source_subset.csv",
        generated="results/generation/dataset/manifest.csv",
    output:
        "results/dataset/combined.csv",
    params:
        p=stage("combine"),
    log:
        "logs/dataset/combined.log",
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.combined combined --params {params.p:q} --subset {input.subset} "
        "--generated {input.generated} --out {output} > {log} 2>&1"


rule dataset_combined_full:
    input:
        world=demo_world(),
        generated="results/generation/dataset/manifest.csv",
    output:
        "results/dataset/combined_full.csv",
    params:
        p=stage("combine"),
    log:
        "logs/dataset/combined_full.log",
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.combined combined_full --params {params.p:q} "
        "--generated {input.generated} --out {output} > {log} 2>&1"
