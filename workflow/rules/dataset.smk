# Training lists: the source alone, the generated set alone, and their union (counts checked):
# the RCS subset + the generated set, or (runs with online RCS) the whole source + the generated set.


rule dataset_source:
    input:
        world=demo_world(),
    output:
        data="results/dataset/source.csv",
    log:
        "logs/dataset/source.log",
    params:
        p=stage("combine"),
    localrule: True
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.combined source --params {params.p:q} --out {output.data} "
        "> {log} 2>&1"


rule dataset_generated:
    input:
        generated="results/generation/dataset/manifest.csv",
    output:
        data="results/dataset/generated.csv",
    log:
        "logs/dataset/generated.log",
    params:
        p=stage("combine"),
    localrule: True
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.combined generated --params {params.p:q} "
        "--generated {input.generated} --out {output.data} > {log} 2>&1"


rule dataset_combined:
    input:
        subset="results/rcs/source_subset.csv",
        generated="results/generation/dataset/manifest.csv",
    output:
        data="results/dataset/combined.csv",
    log:
        "logs/dataset/combined.log",
    params:
        p=stage("combine"),
    localrule: True
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.combined combined --params {params.p:q} --subset {input.subset} "
        "--generated {input.generated} --out {output.data} > {log} 2>&1"


rule dataset_combined_full:
    input:
        world=demo_world(),
        generated="results/generation/dataset/manifest.csv",
    output:
        data="results/dataset/combined_full.csv",
    log:
        "logs/dataset/combined_full.log",
    params:
        p=stage("combine"),
    localrule: True
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.combined combined_full --params {params.p:q} "
        "--generated {input.generated} --out {output.data} > {log} 2>&1"
