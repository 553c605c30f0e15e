# FLEX-Seg: RCS crops -> diffusion generation -> combined dataset -> training -> evaluation -> tables.
# The demo default runs with no data and no weights; the paper's runs: --configfile config/paper/<run>.yaml
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/rcs.smk"
include: "workflow/rules/generation.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/quality.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        final_outputs(),
