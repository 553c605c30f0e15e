# Random weights in the hub layout (random_weights.enabled): the paper's architectures where there
# is no model hub. Each rule writes the folders the config names, which the rules that load them
# take as inputs (diffusion_weights, encoder_weights in common.smk); without random_weights those
# folders must exist.

if RANDOM_WEIGHTS and DIFFUSION_WEIGHTS:

    rule random_weights_diffusion:
        output:
            prior=directory(DIFFUSION_WEIGHTS["base"]),
            controlnet=directory(DIFFUSION_WEIGHTS["controlnet"]),
        log:
            "logs/weights/diffusion.log",
        benchmark:
            "results/benchmarks/weights/diffusion.tsv"
        params:
            p=stage("random_weights_diffusion"),
        threads: 1
        resources:
            **execution("random_weights_diffusion"),
        conda:
            "../envs/flexseg.yaml"
        shell:
            "python -m generation.random_weights diffusion --params {params.p:q} "
            "--prior {output.prior:q} --controlnet {output.controlnet:q} > {log} 2>&1"


if RANDOM_WEIGHTS and ENCODER_WEIGHTS:

    rule random_weights_encoders:
        output:
            [directory(folder) for folder in dict.fromkeys(ENCODER_WEIGHTS.values())],
        log:
            "logs/weights/encoders.log",
        benchmark:
            "results/benchmarks/weights/encoders.tsv"
        params:
            p=stage("random_weights_encoders"),
        threads: 1
        resources:
            **execution("random_weights_encoders"),
        conda:
            "../envs/flexseg.yaml"
        shell:
            "python -m generation.random_weights encoders --params {params.p:q} > {log} 2>&1"
