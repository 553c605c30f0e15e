# The demo world (mode: demo): a source domain and five targets in the real datasets' layouts.


rule render_demo:
    output:
        world=DEMO_WORLD,
        grid="results/demo/world_grid.png",
    log:
        "logs/demo/render.log",
    benchmark:
        "results/benchmarks/demo/render.tsv"
    params:
        p=stage("render_demo"),
        root=lambda wildcards, output: os.path.dirname(output.world),
    threads: 2
    resources:
        **execution("render_demo"),
    conda:
        "../envs/flexseg.yaml"
    shell:
        "python -m flexseg.data.demo --params {params.p:q} --out {params.root} "
        "--grid {output.grid} --workers {threads} > {log} 2>&1"
