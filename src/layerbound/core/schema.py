"""The schema (`core/config.schema.yaml`, package data): the one source of every key's meaning, allowed
values and default, and the helpers that read it: defaults filled in, one section's defaults,
values checked as a config key would be."""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from .errors import ConfigError

# Package data (pyproject.toml), so an installed copy reads the schema its code was written for.
SCHEMA = resources.files("layerbound.core") / "config.schema.yaml"


@lru_cache(maxsize=None)
def schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA.read_text())


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A local `$ref` ("#/$defs/name") followed to its definition."""
    while "$ref" in node:
        node = schema()["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def fill_defaults(node: dict[str, Any], instance: Any) -> None:
    """Set the schema's defaults into `instance`, depth first (as jsonschema's FAQ validator does).

    A node with `if` / `then` / `else` (a model entry: loaded when it has `source`, else trained)
    takes the defaults of the branch the instance's keys select."""
    if not isinstance(instance, dict):
        return
    node = resolve(node)
    if "if" in node:
        chosen = node["then"] if all(k in instance for k in node["if"].get("required", ())) else node.get("else", {})
        fill_defaults(chosen, instance)
    for key, sub in node.get("properties", {}).items():
        if "default" in sub:
            instance.setdefault(key, copy.deepcopy(sub["default"]))
        if key in instance:
            fill_defaults(sub, instance[key])
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        for key in set(instance) - set(node.get("properties", {})):
            fill_defaults(extra, instance[key])


def key_path(path) -> str:
    """A JSON path as the config key a user writes: collision.sweeps[0].m."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"



def defaults(section: str) -> dict[str, Any]:
    """The schema's defaults of a config section, e.g. defaults("collision")["search"]."""
    filled: dict[str, Any] = {}
    fill_defaults(schema(), filled)
    return filled[section]


def check_options(section: str, where: str, **values: Any) -> None:
    """Check values of a section's keys (`collision`, `losses`, ...) against what a config may hold
    there, for callers that take them as arguments (the Python API, the command run by hand): the
    schema's rules and finite numbers, so both refuse what a config would (one value of a key that
    holds a list, such as collision.m, is checked as a list of it). One line naming `where` and the
    key otherwise."""
    import jsonschema

    properties = resolve(schema()["properties"][section])["properties"]
    for key, value in values.items():
        value = _plain(value)
        node = {**properties[key], "$defs": schema()["$defs"]}
        listed = [value] if node.get("type") == "array" and not isinstance(value, list) else value
        errors = list(jsonschema.Draft202012Validator(node).iter_errors(listed))
        if errors:
            reason = jsonschema.exceptions.best_match(errors).message
            raise ConfigError(f"{where}: {key} = {value!r} is not allowed ({reason}; as {section}.{key} of a config)")
        for _, number in numbers(value):
            if not math.isfinite(number):
                raise ConfigError(f"{where}: {key} = {value!r}: {number} is not a finite number")


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as the lists and Python numbers a YAML config holds."""
    if hasattr(value, "tolist") and not isinstance(value, (list, dict, str)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def fill_loaded_defaults(entry: dict[str, Any]) -> dict[str, Any]:
    """A loaded model's entry (`source` ...) with the schema's defaults filled in, validated."""
    import jsonschema

    node = schema()["$defs"]["loaded_model"]
    fill_defaults(node, entry)
    errors = list(jsonschema.Draft202012Validator({**node, "$defs": schema()["$defs"]}).iter_errors(entry))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"invalid model key {key_path(best.absolute_path)}: {best.message}")
    return entry


def numbers(node: Any, where: tuple = ()):
    """Every float of a config with its path (for the finite-number check)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from numbers(value, where + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from numbers(value, where + (index,))
    elif isinstance(node, float):
        yield where, node
