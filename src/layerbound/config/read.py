"""Reading a config file: YAML's safe loader, a key given twice refused, an alias bomb refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..core.errors import ConfigError, first_line
from ..core.schema import key_path

# At most this many values in a config, counting every value an alias repeats: the configs in this
# checkout have 166-795 (defaults filled in); a YAML alias bomb (aliases of aliases) expands to billions from a few hundred bytes,
# which anything that walks the config (validation, JSON job parameters) would take hours to visit.
MAX_VALUES = 100_000


def _check_size(config: Any) -> None:
    """Refuse a config with more than MAX_VALUES values (aliases expanded), naming where it grows;
    visits at most MAX_VALUES + 1 of them."""
    count, stack = 0, [((), config)]
    while stack:
        where, node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"invalid configuration key {key_path(where[:4])}: the configuration holds more than "
                              f"{MAX_VALUES} values once YAML aliases are expanded (an alias bomb?); write them out")
        if isinstance(node, dict):
            stack.extend((where + (key,), value) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((where + (index,), value) for index, value in enumerate(node))


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":   # `<<: *defaults` may be overridden below it
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue   # not hashable: the safe loader refuses it below
            line = key_node.start_mark.line + 1
            if key in lines:
                raise ConfigError(f"config file {self.name}: key {key!r} is given twice (lines {lines[key]} and "
                                  f"{line}); keep one")
            lines[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> Any:
    """A config file's contents, read with YAML's safe loader; a key given twice in one mapping, or
    text that is not YAML, fails in one line naming the file (and the key and both lines)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as stream:
            loader = _StrictLoader(stream)
            try:
                return loader.get_single_data()
            finally:
                loader.dispose()
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {first_line(err)}") from None
