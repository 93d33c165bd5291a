# Helpers shared by the rules: paths derived from the config, input functions, wildcard limits.
import json
import re
import shlex
from pathlib import Path

from layerbound import config as lb_config
from layerbound import losses as lb_losses

# Fails at start-up, naming the model, if a model's training block is inconsistent.
MODEL_SPECS = lb_config.model_specs(config)
# Rules call the package's CLI through `python -m`, with the checkout's src/ first on the path, so
# the same command works in the project venv and in the rules' conda environment (envs/).
PACKAGE_SRC = shlex.quote(str(Path(workflow.basedir) / "src"))
LAYERBOUND = f"PYTHONPATH={PACKAGE_SRC}${{PYTHONPATH:+:$PYTHONPATH}} python -m layerbound"
DOWNLOAD_FLAG = "--download" if config["download"] else ""
DATASETS = sorted({spec.dataset for spec in MODEL_SPECS.values()})


def _one_of(values):
    return "|".join(re.escape(v) for v in sorted(values))


wildcard_constraints:
    dataset=_one_of(DATASETS),
    model=_one_of(MODEL_SPECS),


def checkpoint_path(model):
    return f"results/models/{MODEL_SPECS[model].dataset}/{model}.pt"


def all_checkpoints():
    return [checkpoint_path(name) for name in MODEL_SPECS]


def training_job_json(wildcards):
    if MODEL_SPECS[wildcards.model].dataset != wildcards.dataset:
        raise ValueError(
            f"model {wildcards.model!r} is trained on {MODEL_SPECS[wildcards.model].dataset!r}, "
            f"not {wildcards.dataset!r}"
        )
    return json.dumps(lb_config.training_job(config, wildcards.model), sort_keys=True)


def all_shards():
    return [str(p) for unit in COLLIDE_UNITS.values() for p in unit.shard_paths("results")]


def all_targets():
    # Stage files define their target lists; rule all asks for the last product of each stage, and
    # for every shard too: Snakemake does not redo a missing intermediate file whose products are
    # present, and a deleted (say, corrupt) shard must be recomputed, and its merge redone.
    return all_checkpoints() + all_shards() + ["results/summary.csv"] + figures_targets()
