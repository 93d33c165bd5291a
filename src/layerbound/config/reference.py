"""The configuration reference (docs/config_reference.md), written from the schema so it cannot
drift from it: every key, what values it takes, its default and the schema's description.

    python -m layerbound.config.reference > docs/config_reference.md

`tests/test_docs.py` checks that the committed page is this module's output.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from ..core.schema import resolve, schema

HEADER = """# Configuration reference

Every key of a config file, generated from the schema (`src/layerbound/core/config.schema.yaml`) by
`python -m layerbound.config.reference > docs/config_reference.md`; a test checks that this page is
its output. What the keys mean in practice, with examples: [Configuration](configuration.md).
A model entry (`models.<name>`) is either a trained model or, with `source`, a loaded one.

| key | values | default | description |
| --- | --- | --- | --- |
"""

_BOUNDS = (("minimum", ">= {}"), ("exclusiveMinimum", "> {}"), ("maximum", "<= {}"), ("exclusiveMaximum", "< {}"))


def _values(node: dict[str, Any]) -> str:
    """What a key accepts, in a few words: its enum, type and bounds."""
    node = resolve(node)
    if "enum" in node:
        return ", ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    for key in ("oneOf", "anyOf"):
        if key in node:
            return " or ".join(_values(option) for option in node[key])
    kind = node.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" or (isinstance(kind, list) and "array" in kind):
        items = node.get("items")
        if isinstance(items, dict):
            text += f" of {_values(items)}"
        sizes = [node.get("minItems"), node.get("maxItems")]
        if sizes[0] is not None and sizes[0] == sizes[1]:
            text += f" ({sizes[0]} items)"
    bounds = [fmt.format(node[key]) for key, fmt in _BOUNDS if key in node]
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _properties(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A mapping's keys with what `allOf` adds to them (the training block takes the types of a
    model's train block and gives its own defaults)."""
    merged: dict[str, dict[str, Any]] = {}
    for part in node.get("allOf", []):
        for key, sub in _properties(resolve(part)).items():
            merged[key] = dict(sub)
    for key, sub in node.get("properties", {}).items():
        merged[key] = {**resolve(merged.get(key, {})), **sub}
    return merged


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rows(node: dict[str, Any] | None = None, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key, values, default, description) of every key below `node` (the whole schema by default),
    depth first in the schema's order; a mapping of named entries (models) shows as `<name>`."""
    node = resolve(schema() if node is None else node)
    branches = [("", node)]
    if "if" in node:   # a model entry: the loaded branch's keys, then the trained one's
        branches = [(" (loaded)", node["then"]), (" (trained)", node.get("else", {}))]
    for label, branch in branches:
        branch = resolve(branch)
        for key, sub in _properties(branch).items():
            full = f"{prefix}{key}"
            resolved = resolve(sub)
            default = f"`{json.dumps(sub['default'])}`" if "default" in sub else ""
            nested = _properties(resolved) or "if" in resolved or isinstance(resolved.get("additionalProperties"), dict)
            values = "mapping" if nested and resolved.get("type", "object") == "object" else _values(sub)
            description = sub.get("description") or resolved.get("description", "")
            yield f"`{full}`{label}", _cell(values), _cell(default), _cell(description)
            if _properties(resolved) or "if" in resolved:
                yield from rows(resolved, full + ".")
            extra = resolved.get("additionalProperties")
            if isinstance(extra, dict) and not _properties(resolved):
                yield from rows(extra, full + ".<name>.")


def markdown() -> str:
    return HEADER + "".join(f"| {' | '.join(row)} |\n" for row in rows())


if __name__ == "__main__":
    print(markdown(), end="")
