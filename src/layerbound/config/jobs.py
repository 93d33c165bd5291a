"""The workflow's job parameters: everything that decides one job's output and nothing else, so a
config change re-runs exactly the jobs it affects (pair sampling, training, import, attack and FAB
jobs), and the jobs' environment."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

from ..attacks import info as attack_info
from ..core.errors import ConfigError
from ..models.specs import EvalConfig, LoadedSpec, ModelSpec, TrainConfig, model_specs, source_of


def job_environment(config: dict[str, Any], workflow_dir: str | os.PathLike = ".") -> dict[str, str]:
    """The environment of the workflow's jobs: where they run and read data (the defaults of the
    `layerbound` command's --device, --data-dir and --download, so they are not rule parameters;
    a LAYERBOUND_DEVICE already set overrides the config's device), and the workflow's folder.

    The jobs run `python -m layerbound` of the environment that runs Snakemake, so no PYTHONPATH
    is set; the rules' conda environment installs the package from `workflow_dir` (the Snakefile's
    folder) when it is created (envs/layerbound.post-deploy.sh reads LAYERBOUND_WORKFLOW_DIR)."""
    device = os.environ.get("LAYERBOUND_DEVICE", config["device"])
    return {"LAYERBOUND_DEVICE": device, "LAYERBOUND_DATA_DIR": config["data_dir"],
            "LAYERBOUND_DOWNLOAD": "1" if config["download"] else "0",
            "LAYERBOUND_WORKFLOW_DIR": str(workflow_dir)}


def pairs_args(config: dict[str, Any]) -> str:
    """The `layerbound sample-pairs` arguments that decide the pair set: its two classes, the
    points per class and the experiment seed."""
    (a, b), per_class = config["pairs"]["classes"], config["pairs"]["per_class"]
    return f"--classes {int(a)} {int(b)} --per-class {int(per_class)} --seed {int(config['seed'])}"


def training_job(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Everything that determines model `name`'s weights, and nothing else.

    The workflow passes this as a rule parameter, so a checkpoint is retrained exactly when its
    own resolved settings change (not when, say, the eps grid or another model changes).
    """
    specs = model_specs(config)
    if name not in specs:
        raise ConfigError(f"model {name!r} is not in the config; models: {', '.join(specs)}")
    if isinstance(specs[name], LoadedSpec):
        raise ConfigError(f"model {name!r} is loaded (source {specs[name].source['source']}), not trained: "
                          "`layerbound import-model` makes its checkpoint")
    model = asdict(specs[name])
    if model["source"] is None:
        del model["source"]   # a registry model's job stays as it was before sources could be trained
    return {"seed": config["seed"], "model": model, "evaluation": dict(config["evaluation"])}


def import_job(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Everything that determines loaded model `name`'s checkpoint and metrics: its source spec
    (the weights file's contents are the import rule's input), the seed and the evaluation."""
    specs = model_specs(config)
    if not isinstance(specs.get(name), LoadedSpec):
        raise ConfigError(f"model {name!r} is not a loaded model of the config (one with `source`)")
    return {"seed": config["seed"], "model": asdict(specs[name]), "evaluation": dict(config["evaluation"])}


def training_job_json(config: dict[str, Any], name: str) -> str:
    return json.dumps(training_job(config, name), sort_keys=True)


def job_from_dict(job: dict[str, Any]) -> tuple[int, ModelSpec, EvalConfig]:
    model = dict(job["model"])
    model["train"] = TrainConfig.from_dict(model["train"])
    return int(job["seed"]), ModelSpec(**model), EvalConfig(**job["evaluation"])


# --- evaluation attacks (attacks.py runs them; this only resolves what each model's job is) -----

ATTACK_OPTION_BLOCKS = ("pgd", "bim", "cw", "fab", "autoattack")


def attack_models(config: dict[str, Any]) -> list[str]:
    """The models the attack stage evaluates (`attacks.models`), in config order."""
    chosen = config["attacks"]["models"]
    if chosen == "all":
        return list(config["models"])
    for name in chosen:
        if name not in config["models"]:
            raise ConfigError(f"attacks.models names {name!r}, which is not a key of models:")
    return [name for name in config["models"] if name in chosen]


def headline_budget(spec: ModelSpec | LoadedSpec, evaluation: dict[str, Any]) -> tuple[str, float]:
    """(norm, eps) of a model's headline robust accuracy: its training budget when adversarially
    trained, the `evaluation` block's budget for benign and loaded models (as the sidecar's PGD)."""
    if isinstance(spec, ModelSpec) and spec.train.method != "benign":
        return spec.train.norm, float(spec.train.eps)
    return evaluation["norm"], float(evaluation["eps"])


def attack_job(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Everything that determines model `name`'s robust-accuracy table, and nothing else (a rule
    parameter: a change to it re-runs only that table and what reads it).

    Each attack of `attacks.run` runs at every budget of its norm's grid; the headline budget is
    added to its norm's grid, and the AutoAttack of that norm runs at least there.
    """
    if name not in attack_models(config):
        raise ConfigError(f"model {name!r} is not attacked (attacks.models: {config['attacks']['models']})")
    spec = model_specs(config)[name]
    block = config["attacks"]
    norm, eps = headline_budget(spec, config["evaluation"])
    headline = attack_info.autoattack_of(norm)
    grids = {n: sorted({float(e) for e in block["eps"][n]}) for n in attack_info.NORMS}
    grids[norm] = sorted(set(grids[norm]) | {eps})
    attacks = [{"name": a, "norm": attack_info.ATTACKS[a].norm, "eps": grids[attack_info.ATTACKS[a].norm]}
               for a in block["run"]]
    if headline not in block["run"]:
        attacks.append({"name": headline, "norm": norm, "eps": [eps]})
    return {"seed": int(config["seed"]), "dataset": spec.dataset, "model": name,
            "examples": int(block["examples"]), "batch_size": int(block["batch_size"]),
            "headline": {"attack": headline, "norm": norm, "eps": eps}, "attacks": attacks,
            "options": {key: dict(block[key]) for key in ATTACK_OPTION_BLOCKS}, **source_of(spec)}


def attack_job_json(config: dict[str, Any], name: str) -> str:
    return json.dumps(attack_job(config, name), sort_keys=True)


def fab_pairs_job(config: dict[str, Any], name: str) -> dict[str, Any]:
    """What determines the FAB points of model `name` on the pair set (paper 001, Section 6.1)."""
    if name not in attack_models(config):
        raise ConfigError(f"model {name!r} is not attacked (attacks.models: {config['attacks']['models']})")
    fab = dict(config["attacks"]["fab"])
    steps = config["attacks"]["fab_comparison"]["steps"]
    fab["steps"] = int(steps) if steps is not None else fab["steps"]
    return {"seed": int(config["seed"]), "model": name, "batch_size": int(config["attacks"]["batch_size"]), "fab": fab,
            **source_of(model_specs(config)[name])}


def fab_pairs_job_json(config: dict[str, Any], name: str) -> str:
    return json.dumps(fab_pairs_job(config, name), sort_keys=True)


# --- paper 003's subnetwork robustness study (the jobs of workflow/rules/semirobust.smk) ------------
