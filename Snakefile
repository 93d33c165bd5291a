# layerbound: layer-by-layer lower bounds on adversarial loss. Setup only; stages live in workflow/rules/.
import sys

from snakemake.utils import min_version

from layerbound.core.errors import LayerboundError
from layerbound.plan.startup import check_job_python, start

min_version("9.0")


# A config file given with --configfile replaces config.yaml instead of merging into it, so a paper
# config never inherits the default experiment's models.
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


# Re-reads the config files (a key given twice fails), checks every key against the package's
# schema, src/layerbound/core/config.schema.yaml (and the constraints across keys), fills in its defaults,
# checks that the results folder is this config's, and plans every job (layer names of loaded
# models included): a problem fails here, before any job, in one line.
try:
    PLAN, CONFIG_FILES = start(config, workflow.config_settings.configfiles or workflow.configfiles)
    # Outside conda every job runs the `python` on PATH: it must be able to import layerbound.
    if "CONDA" not in {m.name for m in workflow.deployment_settings.deployment_method}:
        check_job_python()
except LayerboundError as err:
    sys.exit(f"layerbound: {err}")


include: "workflow/rules/cluster.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/run.smk"
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
