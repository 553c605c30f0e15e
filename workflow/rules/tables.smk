# The results: a long CSV, Table 1 (results/table.csv + .md), the boundary/interior figure, and
# (depending on what was evaluated) Table 2, the domain gap and the comparison with the paper.
from flexseg.config import stage_params
from flexseg.tables import optional_tables, parse_params

TABLE_SETTINGS, TABLE_EXPERIMENTS = parse_params(stage_params(config, "tables"))
# The same decision the tables command takes from the metrics files, taken from their paths
# results/evaluate/<experiment>/<model>/seed<seed>/<dataset>/metrics.json.
OPTIONAL_TABLES = optional_tables(
    [(Path(p).parts[-5], Path(p).parts[-2]) for p in all_metrics()],
    TABLE_EXPERIMENTS,
    TABLE_SETTINGS,
)


rule tables:
    input:
        all_metrics(),
    output:
        table=report("results/table.csv", caption="../report/table1.rst", category="Tables"),
        markdown=report(
            "results/table.md", caption="../report/table1_md.rst", category="Tables"
        ),
        long=report("results/tables/long.csv", caption="../report/long.rst", category="Tables"),
        figure=report(
            "results/figures/boundary_interior.png",
            caption="../report/boundary_interior.rst",
            category="Figures",
        ),
        **{
            key: report(f"results/{path}", caption=f"../report/{key}.rst", category="Tables")
            for key, path in OPTIONAL_TABLES.items()
        },
    params:
        p=stage("tables"),
    log:
        "logs/tables/tables.log",
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.tables --params {params.p:q} --metrics {input} --out-dir results "
        "> {log} 2>&1"
