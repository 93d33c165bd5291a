"""Reading and validating an experiment configuration (the same schema Snakemake validates with)."""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from .train import EvalConfig, ModelSpec, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


def validate(config: dict[str, Any], schema: str | Path = SCHEMA) -> dict[str, Any]:
    """Validate in place (filling schema defaults) and return the config; raise ConfigError naming the key."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as snakemake_validate

    try:
        snakemake_validate(config, str(schema), set_default=True)
    except WorkflowError as err:
        # Keep the lines that name the problem and the key; drop the schema dump.
        lines = str(err).splitlines()
        keep = [l for l in lines if l.startswith(("ValidationError", "On instance", "Failed validating"))]
        raise ConfigError("invalid configuration: " + " | ".join(keep or lines[:3])) from None
    return config


def load(path: str | Path) -> dict[str, Any]:
    with open(path) as f:
        return validate(yaml.safe_load(f) or {})


def model_specs(config: dict[str, Any]) -> dict[str, ModelSpec]:
    """Every configured model with the global `training` defaults merged under its own `train` block."""
    defaults = config.get("training", {})
    specs = {}
    for name, entry in config["models"].items():
        train = {**copy.deepcopy(defaults), **entry.get("train", {})}
        try:
            specs[name] = ModelSpec(name=name, dataset=entry["dataset"], arch=entry["arch"],
                                    padding=entry.get("padding", "same"), train=TrainConfig.from_dict(train))
        except ValueError as err:
            raise ConfigError(f"models.{name}: {err}") from None
    return specs


def evaluation(config: dict[str, Any]) -> EvalConfig:
    return EvalConfig(**config.get("evaluation", {}))


def training_job(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Everything that determines model `name`'s weights, and nothing else.

    The workflow passes this as a rule parameter, so a checkpoint is retrained exactly when its
    own resolved settings change (not when, say, the eps grid or another model changes).
    """
    specs = model_specs(config)
    if name not in specs:
        raise ConfigError(f"model {name!r} is not in the config; models: {', '.join(specs)}")
    return {"seed": config["seed"], "model": asdict(specs[name]), "evaluation": asdict(evaluation(config))}


def job_from_dict(job: dict[str, Any]) -> tuple[int, ModelSpec, EvalConfig]:
    model = dict(job["model"])
    model["train"] = TrainConfig.from_dict(model["train"])
    return int(job["seed"]), ModelSpec(**model), EvalConfig(**job["evaluation"])
