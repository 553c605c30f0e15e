# The results: a long CSV, Table 1 (results/table.csv + .md), Table 2 when ablations ran.


rule tables:
    input:
        all_metrics(),
    output:
        table=report("results/table.csv", category="Tables"),
        markdown=report("results/table.md", category="Tables"),
        long="results/tables/long.csv",
    params:
        p=stage("tables"),
    log:
        "logs/tables/tables.log",
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.tables --params {params.p:q} --metrics {input} --out-dir results "
        "> {log} 2>&1"
