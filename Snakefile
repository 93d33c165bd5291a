# layerbound: layer-by-layer lower bounds on adversarial loss. Setup only; stages live in workflow/rules/.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"
report: "workflow/report/workflow.rst"


validate(config, schema="workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/collide.smk"
include: "workflow/rules/losses.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        all_targets(),
    default_target: True
