"""Validating a config: the schema, finite numbers, and the checks across keys the schema cannot
express (from tables alone, no data loaded); every failure is one line naming the key."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..attacks import info as attack_info
from ..collide.options import check_smooth_iters
from ..core.errors import ConfigError
from ..core.schema import fill_defaults, numbers, key_path, schema
from ..data import info as dataset_info
from ..models import sources
from ..models.specs import model_specs
from .jobs import attack_models
from .read import _check_size, read_yaml
from .study import semirobust_study


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Validate `config` in place, fill in every default, and return it.

    Checks the schema, that every number is finite, and the constraints across keys (classes and
    S against the dataset's class counts, figure indices against the grid). Raises ConfigError
    with one line naming the key and what is allowed.
    """
    import jsonschema

    if not isinstance(config, dict):
        raise ConfigError(f"the configuration must be a mapping of keys, not {type(config).__name__}")
    _check_size(config)
    fill_defaults(schema(), config)
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        # For oneOf/anyOf the deepest sub-error names the actual problem.
        best = jsonschema.exceptions.best_match([err])
        raise ConfigError(f"invalid configuration key {key_path(best.absolute_path)}: {best.message}")
    # JSON Schema's bounds let NaN through (every comparison with it is false), and YAML reads
    # .nan and .inf as numbers: no number of a config may be either.
    for where, value in numbers(config):
        if not math.isfinite(value):
            raise ConfigError(f"invalid configuration key {key_path(where)}: {value} is not a finite number")
    check_across_keys(config)
    return config


def check_across_keys(config: dict[str, Any]) -> None:
    """The checks across keys that the schema cannot express, from tables alone (no data loaded):
    each failure is one line naming the key and what is allowed."""
    model_specs(config)   # every model's merged training block (names the model if inconsistent)
    for name, entry in config["models"].items():
        if sources.is_loaded(entry):
            sources.check_loaded(f"models.{name}", entry)
    a, b = (int(c) for c in config["pairs"]["classes"])
    per_class = int(config["pairs"]["per_class"])
    if a == b:
        raise ConfigError(f"pairs.classes: the two classes must differ, not [{a}, {b}]")
    for dataset in sorted({entry["dataset"] for entry in config["models"].values()}):
        meta = dataset_info.info(dataset)
        for c in (a, b):
            if not 0 <= c < meta.num_classes:
                raise ConfigError(f"pairs.classes: {c} is not a class of {dataset} (classes 0..{meta.num_classes - 1})")
        available = min(meta.train_per_class[a], meta.train_per_class[b])
        if per_class > available:
            raise ConfigError(f"pairs.per_class = {per_class}, but {dataset} has {available} training examples of "
                              f"class {a if meta.train_per_class[a] <= meta.train_per_class[b] else b} "
                              f"(allowed 1..{available})")
    box = config["collision"]["box"]
    if box is not None and not box[0] < box[1]:
        raise ConfigError(f"collision.box = {box}: need lo < hi (or null for an unboxed adversary)")
    search = config["collision"]["search"]
    try:
        check_smooth_iters(search["smooth_iters"], search["step"], search["max_iter"])
    except ValueError as err:
        raise ConfigError(f"collision.search.{err}") from None
    attack_models(config)   # every name in attacks.models is a model
    for norm, grid in config["attacks"]["eps"].items():
        users = [name for name in config["attacks"]["run"] if attack_info.ATTACKS[name].norm == norm]
        if users and not grid:
            raise ConfigError(f"attacks.eps.{norm} is empty, but attacks.run asks for {', '.join(users)}")
    projections, shown = int(config["collision"]["projections"]), int(config["figures"]["collision_projection"])
    if shown >= projections:
        raise ConfigError(f"figures.collision_projection = {shown}, but collision.projections = {projections} "
                          f"(allowed 0..{projections - 1})")
    for study in config["semirobust"]["studies"]:
        semirobust_study(config, study)


def load(path: str | Path) -> dict[str, Any]:
    """Read a YAML config and validate it (defaults filled in)."""
    return validate(read_yaml(path) or {})
