"""The experiment configuration: a config file checked against the schema (the one source of
defaults) and against the registries of the stages below (datasets, architectures, loaded-model
sources, attacks), and each rule's job parameters built from it.

The schema (`core/config.schema.yaml`, package data, read by `core.schema`) says what every key
means, which values it allows and what it defaults to. `validate` checks a config against it, fills
in every default (Snakemake's Snakefile calls the same function) and checks the keys against each
other, so the rest of the package reads a complete config and repeats no default. The model
dataclasses (`models.specs`) take their field defaults from the schema too, for library use without
a config. Nothing here imports torch: the workflow plans its jobs without it.

Modules: `read` (a config file, strictly), `validate` (the schema and the checks across keys), `jobs`
(each rule's job parameters and environment), `study` (paper 003's studies), `reference` (the
generated reference page). The names below are the package's face, those of `core.schema` and
`models.specs` included.
"""

from ..core.errors import ConfigError
from ..core.schema import SCHEMA, check_options, defaults, fill_loaded_defaults, schema
from ..models.sources import check_loaded
from ..models.specs import NORMS, TRAINING_METHODS, EvalConfig, LoadedSpec, ModelSpec, TrainConfig, model_specs, source_of
from .jobs import (ATTACK_OPTION_BLOCKS, attack_job, attack_job_json, attack_models, fab_pairs_job,
                   fab_pairs_job_json, headline_budget, import_job, job_environment, job_from_dict, pairs_args,
                   training_job, training_job_json)
from .read import MAX_VALUES, read_yaml
from .study import (paper003_iterations, semirobust_job, semirobust_job_json, semirobust_study, study_attack,
                    study_attack_keys)
from .validate import check_across_keys, load, validate

__all__ = [
    "ATTACK_OPTION_BLOCKS", "MAX_VALUES", "NORMS", "SCHEMA", "TRAINING_METHODS", "ConfigError", "EvalConfig",
    "LoadedSpec", "ModelSpec", "TrainConfig", "attack_job", "attack_job_json", "attack_models",
    "check_across_keys", "check_loaded", "check_options", "defaults", "fab_pairs_job", "fab_pairs_job_json",
    "fill_loaded_defaults", "headline_budget", "import_job", "job_environment", "job_from_dict", "load",
    "model_specs", "pairs_args", "paper003_iterations", "read_yaml", "schema", "semirobust_job", "semirobust_job_json",
    "semirobust_study", "source_of", "study_attack", "study_attack_keys", "training_job", "training_job_json",
    "validate",
]
