# The results, one rule per table: Table 1 with the long table and the boundary/interior figure;
# Table 2, the domain gap and the comparison with the paper when the config asks for them
# (table_outputs(), common.smk).


rule tables:
    input:
        metrics=all_metrics(),
    output:
        table=report("results/table.csv", caption="../report/table1.rst", category="Tables"),
        markdown=report("results/table.md", caption="../report/table1_md.rst", category="Tables"),
        long=report("results/tables/long.csv", caption="../report/long.rst", category="Tables"),
        figure=report(
            "results/figures/boundary_interior.png",
            caption="../report/boundary_interior.rst",
            category="Figures",
        ),
    log:
        "logs/tables/tables.log",
    params:
        p=stage("tables"),
    localrule: True
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.tables main --params {params.p:q} --metrics {input.metrics} "
        "--table {output.table} --markdown {output.markdown} --long {output.long} "
        "--figure {output.figure} > {log} 2>&1"


rule ablation_table:
    input:
        metrics=all_metrics(),
    output:
        table=report(
            "results/tables/ablation.csv", caption="../report/ablation.rst", category="Tables"
        ),
        markdown=report(
            "results/tables/ablation.md", caption="../report/ablation_md.rst", category="Tables"
        ),
    log:
        "logs/tables/ablation.log",
    params:
        p=stage("tables"),
    localrule: True
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.tables ablation --params {params.p:q} --metrics {input.metrics} "
        "--table {output.table} --markdown {output.markdown} > {log} 2>&1"


rule domain_gap:
    input:
        metrics=all_metrics(),
    output:
        table=report(
            "results/tables/domain_gap.csv", caption="../report/domain_gap.rst", category="Tables"
        ),
    log:
        "logs/tables/domain_gap.log",
    params:
        p=stage("domain_gap"),
    localrule: True
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.tables domain-gap --params {params.p:q} --metrics {input.metrics} "
        "--table {output.table} > {log} 2>&1"


rule paper_comparison:
    input:
        metrics=all_metrics(),
    output:
        table=report(
            "results/tables/paper_comparison.csv",
            caption="../report/paper_comparison.rst",
            category="Tables",
        ),
    log:
        "logs/tables/paper_comparison.log",
    params:
        p=stage("tables"),
    localrule: True
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.tables paper-comparison --params {params.p:q} "
        "--metrics {input.metrics} --table {output.table} > {log} 2>&1"
