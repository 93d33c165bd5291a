# layerbound: layer-by-layer lower bounds on adversarial loss. Setup only; stages live in workflow/rules/.
import sys

from snakemake.utils import min_version

from layerbound.config import ConfigError, validate

min_version("9.0")


# A config file given with --configfile replaces config.yaml instead of merging into it, so a paper
# config never inherits the default experiment's models.
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


# Checks every key against workflow/schemas/config.schema.yaml (and the constraints across keys)
# and fills in its defaults; a bad key fails here, before any job is planned, in one line.
try:
    validate(config)
except ConfigError as err:
    sys.exit(f"layerbound: {err}")


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/collide.smk"
include: "workflow/rules/losses.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/attacks.smk"
include: "workflow/rules/semirobust.smk"
include: "workflow/rules/claims.smk"


rule all:
    input:
        PLAN.all_targets(),
    default_target: True
