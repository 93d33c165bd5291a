# layerbound: layer-by-layer lower bounds on adversarial loss. Setup only; stages live in workflow/rules/.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, schema="workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/collide.smk"
include: "workflow/rules/losses.smk"


rule all:
    input:
        all_targets(),
    default_target: True
