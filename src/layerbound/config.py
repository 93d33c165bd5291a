"""The experiment configuration: validated against the schema, which is the one source of defaults.

The schema (`core/config.schema.yaml`, package data) says what every key means, which values it allows and what it
defaults to. `validate` checks a config against it and fills in every default (Snakemake's Snakefile
calls the same function), so the rest of the package reads a complete config and repeats no default.
The dataclasses here take their field defaults from the schema too, for library use without a
config. Nothing here imports torch: the workflow plans its jobs without it.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .models import architectures, sources, zoo
from .data import info as dataset_info
from .attacks import info as attack_info
from .core.errors import ConfigError

# Package data (pyproject.toml), so an installed copy reads the schema its code was written for.
SCHEMA = resources.files("layerbound.core") / "config.schema.yaml"

TRAINING_METHODS = ("benign", "pgd", "trades")
NORMS = ("l2", "linf")


@lru_cache(maxsize=None)
def schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA.read_text())


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A local `$ref` ("#/$defs/name") followed to its definition."""
    while "$ref" in node:
        node = schema()["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _fill_defaults(node: dict[str, Any], instance: Any) -> None:
    """Set the schema's defaults into `instance`, depth first (as jsonschema's FAQ validator does).

    A node with `if` / `then` / `else` (a model entry: loaded when it has `source`, else trained)
    takes the defaults of the branch the instance's keys select."""
    if not isinstance(instance, dict):
        return
    node = _resolve(node)
    if "if" in node:
        chosen = node["then"] if all(k in instance for k in node["if"].get("required", ())) else node.get("else", {})
        _fill_defaults(chosen, instance)
    for key, sub in node.get("properties", {}).items():
        if "default" in sub:
            instance.setdefault(key, copy.deepcopy(sub["default"]))
        if key in instance:
            _fill_defaults(sub, instance[key])
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        for key in set(instance) - set(node.get("properties", {})):
            _fill_defaults(extra, instance[key])


def _where(path) -> str:
    """A JSON path as the config key a user writes: collision.sweeps[0].m."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


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
    _fill_defaults(schema(), config)
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        # For oneOf/anyOf the deepest sub-error names the actual problem.
        best = jsonschema.exceptions.best_match([err])
        raise ConfigError(f"invalid configuration key {_where(best.absolute_path)}: {best.message}")
    # JSON Schema's bounds let NaN through (every comparison with it is false), and YAML reads
    # .nan and .inf as numbers: no number of a config may be either.
    for where, value in _numbers(config):
        if not math.isfinite(value):
            raise ConfigError(f"invalid configuration key {_where(where)}: {value} is not a finite number")
    check_across_keys(config)
    return config


def check_across_keys(config: dict[str, Any]) -> None:
    """The checks across keys that the schema cannot express, from tables alone (no data loaded):
    each failure is one line naming the key and what is allowed."""
    model_specs(config)   # every model's merged training block (names the model if inconsistent)
    for name, entry in config["models"].items():
        if sources.is_loaded(entry):
            check_loaded(f"models.{name}", entry)
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


def check_options(section: str, where: str, **values: Any) -> None:
    """Check values of a section's keys (`collision`, `losses`, ...) against what a config may hold
    there, for callers that take them as arguments (the Python API, the command run by hand): the
    schema's rules and finite numbers, so both refuse what a config would (one value of a key that
    holds a list, such as collision.m, is checked as a list of it). One line naming `where` and the
    key otherwise."""
    import jsonschema

    properties = _resolve(schema()["properties"][section])["properties"]
    for key, value in values.items():
        value = _plain(value)
        node = {**properties[key], "$defs": schema()["$defs"]}
        listed = [value] if node.get("type") == "array" and not isinstance(value, list) else value
        errors = list(jsonschema.Draft202012Validator(node).iter_errors(listed))
        if errors:
            reason = jsonschema.exceptions.best_match(errors).message
            raise ConfigError(f"{where}: {key} = {value!r} is not allowed ({reason}; as {section}.{key} of a config)")
        for _, number in _numbers(value):
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
    _fill_defaults(node, entry)
    errors = list(jsonschema.Draft202012Validator({**node, "$defs": schema()["$defs"]}).iter_errors(entry))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"invalid model key {_where(best.absolute_path)}: {best.message}")
    return entry


def check_loaded(where: str, entry: dict[str, Any], files: bool = True) -> None:
    """The checks of a loaded model's entry (`where`: its key, models.NAME) that need no torch: keys
    that fit its source, the normalization's length, the weights file present (nothing is ever
    downloaded). `files=False` skips what concerns the weights file (a checkpoint holds the weights)."""
    source = entry["source"]
    channels = dataset_info.info(entry["dataset"]).input_shape[0]
    if entry["small_inputs"] and source != "torchvision":
        raise ConfigError(f"{where}.small_inputs adapts torchvision architectures only, not source {source}")
    allowed = {"torchvision": {"arch", "weights", "kwargs", "train"}, "python": {"factory", "weights", "kwargs", "train"},
               "robustbench": {"arch", "threat_model", "model_dir"}}[source]
    # Keys of other sources would be ignored silently; the schema's defaults are not the user's.
    stray = [k for k in ("arch", "factory", "threat_model", "train") if k in entry and k not in allowed]
    stray += [k for k in ("weights", "kwargs") if entry.get(k) not in (None, {}) and k not in allowed]
    if stray:
        raise ConfigError(f"{where}.{stray[0]} does not apply to source {source} (its keys: {', '.join(sorted(allowed))})")
    if "train" in entry and entry.get("weights") is not None:
        raise ConfigError(f"{where}: weights and train exclude each other (train: the workflow trains it from scratch; "
                          "weights: it is loaded from that file)")
    if files and source == "torchvision" and "train" not in entry and entry.get("weights") is None:
        raise ConfigError(f"{where}: a torchvision model needs weights (a local state_dict file) or a train block "
                          "(the workflow trains it)")
    for key in ("weights", "pretrained", "num_classes"):
        if key in entry["kwargs"]:
            raise ConfigError(f"{where}.kwargs.{key}: not allowed (num_classes is the dataset's; weights come from "
                              f"the local file {where}.weights, never from a download)")
    norm = entry["normalization"]
    if norm is not None:
        for key in ("mean", "std"):
            if len(norm[key]) != channels:
                raise ConfigError(f"{where}.normalization.{key} has {len(norm[key])} values, but {entry['dataset']} "
                                  f"images have {channels} channel{'s' if channels != 1 else ''}")
    if files and entry.get("weights") is not None and not Path(entry["weights"]).is_file():
        raise ConfigError(f"{where}.weights: file {entry['weights']} does not exist")
    if source == "robustbench":
        problem = zoo.robustbench_missing(entry, weights=files)
        if problem:
            raise ConfigError(f"{where}: {problem}")


def _numbers(node: Any, where: tuple = ()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _numbers(value, where + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _numbers(value, where + (index,))
    elif isinstance(node, float):
        yield where, node


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
            raise ConfigError(f"invalid configuration key {_where(where[:4])}: the configuration holds more than "
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
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None


def load(path: str | Path) -> dict[str, Any]:
    """Read a YAML config and validate it (defaults filled in)."""
    return validate(read_yaml(path) or {})


def defaults(section: str) -> dict[str, Any]:
    """The schema's defaults of a config section, e.g. defaults("collision")["search"]."""
    filled: dict[str, Any] = {}
    _fill_defaults(schema(), filled)
    return filled[section]


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


# --- training jobs (the dataclasses the training code takes) ------------------------------------

_TRAIN = defaults("training")
_EVAL = defaults("evaluation")


@dataclass
class TrainConfig:
    method: str = _TRAIN["method"]
    epochs: int = _TRAIN["epochs"]
    batch_size: int = _TRAIN["batch_size"]
    lr: float = _TRAIN["lr"]
    momentum: float = _TRAIN["momentum"]
    weight_decay: float = _TRAIN["weight_decay"]
    norm: str = _TRAIN["norm"]
    eps: float = _TRAIN["eps"]
    steps: int = _TRAIN["steps"]
    step_size: float | None = None  # None: 2.5 eps / steps
    beta: float = _TRAIN["beta"]    # TRADES trade-off
    warmup_epochs: float = _TRAIN["warmup_epochs"]  # eps grows linearly from 0 over these epochs

    def __post_init__(self) -> None:
        if self.method not in TRAINING_METHODS:
            raise ValueError(f"training method must be one of {TRAINING_METHODS}, not {self.method!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, not {self.norm!r}")
        if self.method != "benign" and self.eps <= 0:
            raise ValueError(f"training method {self.method!r} needs a budget eps > 0")
        if self.step_size is None and self.eps > 0:
            self.step_size = 2.5 * self.eps / self.steps
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must lie in [0, epochs={self.epochs}], not {self.warmup_epochs}")

    def budget_at(self, epoch_progress: float) -> float:
        """The training budget after `epoch_progress` epochs (a linear ramp during warm-up).

        Adversarial training at the full budget from the first step can collapse to a constant
        classifier (l2 eps = 2 on MNIST does, here); ramping eps up, as Gowal et al. 2019 do,
        avoids that. The step size scales with the budget.
        """
        if self.warmup_epochs <= 0:
            return self.eps
        return self.eps * min(1.0, epoch_progress / self.warmup_epochs)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class EvalConfig:
    norm: str = _EVAL["norm"]
    eps: float = _EVAL["eps"]
    steps: int = _EVAL["steps"]
    examples: int = _EVAL["examples"]


@dataclass
class ModelSpec:
    """A model the workflow trains: a registry architecture, or (with `source`) a torchvision or
    python network (the keys of sources.spec) trained from scratch."""

    name: str
    dataset: str
    arch: str
    padding: str | None = "same"   # registry networks only (None with a source)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: dict[str, Any] | None = None


@dataclass
class LoadedSpec:
    """A model loaded instead of trained (a `models:` entry with `source`, see sources.py)."""

    name: str
    dataset: str
    arch: str                  # the architecture's name: torchvision or zoo name, or the factory
    source: dict[str, Any]     # sources.spec: what decides the network
    taps: list[str] | None = None


def model_specs(config: dict[str, Any]) -> dict[str, ModelSpec | LoadedSpec]:
    """Every configured model: trained ones with the global `training` block merged under their own
    `train` block, loaded ones with their source spec."""
    specs = {}
    for name, entry in config["models"].items():
        if sources.is_loaded(entry) and "train" not in entry:
            specs[name] = LoadedSpec(name=name, dataset=entry["dataset"], arch=sources.display_arch(entry),
                                     source=sources.spec(entry), taps=entry.get("taps"))
            continue
        train = {**copy.deepcopy(config["training"]), **entry.get("train", {})}
        loaded = sources.is_loaded(entry)
        try:
            specs[name] = ModelSpec(name=name, dataset=entry["dataset"], arch=sources.display_arch(entry),
                                    padding=None if loaded else entry["padding"], train=TrainConfig.from_dict(train),
                                    source=sources.spec(entry) if loaded else None)
        except ValueError as err:
            raise ConfigError(f"models.{name}: {err}") from None
    return specs


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
            "options": {key: dict(block[key]) for key in ATTACK_OPTION_BLOCKS}, **_source_of(spec)}


def _source_of(spec: ModelSpec | LoadedSpec) -> dict[str, Any]:
    """{"source": the model entry} of a loaded or source-trained model, which rebuilds its network
    from the checkpoint (a checkpoint never chooses code); {} for a registry model, whose jobs stay
    as they were before sources existed."""
    return {} if spec.source is None else {"source": spec.source}


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
            **_source_of(model_specs(config)[name])}


def fab_pairs_job_json(config: dict[str, Any], name: str) -> str:
    return json.dumps(fab_pairs_job(config, name), sort_keys=True)


# --- paper 003's subnetwork robustness study (the jobs of workflow/rules/semirobust.smk) ------------

ATTACK_KEYS = ("method", "norm", "eps", "steps", "step_size")
RETRAIN_KEYS = ("trials", "epochs", "tolerance", "lr", "momentum", "weight_decay", "batch_size")


def semirobust_study(config: dict[str, Any], study: str) -> dict[str, Any]:
    """A study's robust and regular model specs, checked against each other; one line naming the key
    when the models are unknown, differ in dataset or architecture, are trained the wrong way, or
    an f_b size does not start at a stage boundary."""
    where = f"semirobust.studies.{study}"
    entry = config["semirobust"]["studies"].get(study)
    if entry is None:
        raise ConfigError(f"{where}: no such study; studies: {', '.join(config['semirobust']['studies']) or 'none'}")
    specs = model_specs(config)
    for role in ("robust", "regular"):
        if entry[role] not in specs:
            raise ConfigError(f"{where}.{role} names {entry[role]!r}, which is not a key of models: "
                              f"({', '.join(specs)})")
    robust, regular = specs[entry["robust"]], specs[entry["regular"]]
    for role, spec in (("robust", robust), ("regular", regular)):
        if isinstance(spec, LoadedSpec):
            # The study needs to know how each network was trained: robust, or benign.
            raise ConfigError(f"{where}.{role}: model {spec.name!r} is loaded from weights (source "
                              f"{config['models'][spec.name]['source']}); the study takes models the workflow "
                              "trains (a registry arch, or a torchvision / python source with a train block)")
    for key in ("dataset", "arch", "padding", "source"):
        if getattr(robust, key) != getattr(regular, key):
            raise ConfigError(f"{where}: robust model {robust.name!r} and regular model {regular.name!r} differ in "
                              f"{key} ({getattr(robust, key)} vs {getattr(regular, key)}); f_b moves between them")
    if robust.train.method == "benign":
        raise ConfigError(f"{where}.robust: model {robust.name!r} is trained benign; the robust network (f_a*, f_b*) "
                          "is adversarially trained (pgd or trades)")
    if regular.train.method != "benign":
        raise ConfigError(f"{where}.regular: model {regular.name!r} is trained with {regular.train.method}; the "
                          "regular network (f_a, f_b) is trained benign")
    if robust.source is None:
        choices, rule = architectures.fb_layer_choices(robust.arch), "f_b starts at a layer boundary and f_a keeps one layer"
    else:
        # Any conv or linear module, counted from the output in execution order (the reference code's rule).
        count = len(sources.weight_layers(config["models"][robust.name]))
        choices, rule = list(range(1, count)), f"it has {count} conv and linear layers and f_a keeps one"
    for k in entry["fb_layers"]:
        if k not in choices:
            shown = f"1..{choices[-1]}" if robust.source is not None and choices else str(choices)
            raise ConfigError(f"{where}.fb_layers: {robust.arch} cannot have f_b = its last {k} weight layers "
                              f"({rule}); allowed {shown}")
    attacks = {role: study_attack(*study_attack_keys(config, study, role), robust.train, config["attacks"])
               for role in ("train_attack", "eval_attack")}
    return {"robust": robust, "regular": regular, "fb_layers": list(entry["fb_layers"]), **attacks}


def study_attack_keys(config: dict[str, Any], study: str, role: str) -> tuple[dict[str, Any], str]:
    """A study's attack keys: the block's `role` with the study's own keys over them, and where the
    keys that decide it come from (for error messages)."""
    own = config["semirobust"]["studies"][study].get(role, {})
    where = f"semirobust.studies.{study}.{role}" if own else f"semirobust.{role}"
    return {**config["semirobust"][role], **own}, where


# Paper 003, Section 3.1: iterative attacks take "an eps-step of 1/255 and a number of iterations
# equal to min(4 + eps, 1.25 * eps)" (eps in 255ths: 10, 20 and 36 iterations at 8, 16 and 32 / 255).
PAPER003_STEP = 1.0 / 255.0
# The study's attacks: `pgd` is adversary.py's Madry PGD (the training attack of the workflow's
# models, any norm); the others are the attack module's (torchattacks), their norm fixed.
STUDY_ITERATIVE = ("pgd", "bim", "pgd_linf", "pgd_l2")


def paper003_iterations(eps: float) -> int:
    """Paper 003's iterations for an l_inf budget eps in pixels: min(4 + e, 1.25 e), e = 255 eps."""
    e = float(eps) * 255.0
    return int(math.floor(min(4.0 + e, 1.25 * e) + 1e-9))


def study_attack(spec: dict[str, Any], where: str, robust: TrainConfig, attacks_block: dict[str, Any]) -> dict[str, Any]:
    """A study attack with every null key resolved: norm (the method's own for the attack module's
    attacks, else the robust model's), eps (the robust model's, when the norm is its own), and for
    iterative attacks steps and step size (`schedule: paper003`: paper 003's rule; else the robust
    model's own when eps and steps are, else 2.5 eps / steps). C&W and AutoAttack take their settings
    from the `attacks:` block (`options`), the one place they are set."""
    method = spec["method"]
    own_norm = None if method == "pgd" else attack_info.ATTACKS[method].norm
    norm = spec["norm"] if spec["norm"] is not None else (own_norm or robust.norm)
    if own_norm is not None and norm != own_norm:
        raise ConfigError(f"{where}.norm: {method} attacks in {own_norm}, not {norm} (leave norm null)")
    if spec["eps"] is not None:
        eps = float(spec["eps"])
    elif norm == robust.norm and robust.eps > 0:
        eps = float(robust.eps)
    else:
        raise ConfigError(f"{where}.eps: the robust model is trained in {robust.norm}; a {norm} attack needs its own eps")
    if not eps > 0:
        raise ConfigError(f"{where}.eps: the attack needs a budget > 0")
    out = {"method": method, "norm": norm, "eps": eps, "schedule": spec["schedule"], "options": {}}
    given = [key for key in ("steps", "step_size") if spec[key] is not None]
    if method not in STUDY_ITERATIVE:
        if given or spec["schedule"] != "given":
            key = given[0] if given else "schedule"
            where_set = "it takes one step of eps" if method == "fgsm" else f"set them in attacks.{method.split('_')[0]}"
            raise ConfigError(f"{where}.{key}: {method} has no steps or step size of its own here ({where_set})")
        if method == "fgsm":
            out.update(steps=1, step_size=eps)
        else:
            block = "cw" if method == "cw_l2" else "autoattack"
            out.update(steps=int(attacks_block[block]["steps"]), step_size=None, options={block: dict(attacks_block[block])})
        return out
    if spec["schedule"] == "paper003":
        if given:
            raise ConfigError(f"{where}.{given[0]}: schedule paper003 sets steps and step size (leave them null)")
        if norm != "linf":
            raise ConfigError(f"{where}.schedule: paper003's rule (steps of 1/255) is for linf attacks, not {norm}")
        out.update(steps=paper003_iterations(eps), step_size=PAPER003_STEP)
        if out["steps"] < 1:
            raise ConfigError(f"{where}.eps: {eps} is below 1/255, where paper003's rule gives no iteration")
        return out
    steps = int(spec["steps"]) if spec["steps"] is not None else int(robust.steps)
    if spec["step_size"] is not None:
        step_size = float(spec["step_size"])
    elif spec["eps"] is None and spec["steps"] is None and norm == robust.norm and robust.step_size is not None:
        step_size = float(robust.step_size)
    else:
        step_size = 2.5 * eps / steps
    out.update(steps=steps, step_size=step_size)
    return out


def semirobust_job(config: dict[str, Any], study: str, fb_layers: int | str) -> dict[str, Any]:
    """Everything that decides one Algorithm 1 run (a study at one f_b size), and nothing else: the
    workflow passes it as the rule's parameter, so a change to the study block re-runs only these."""
    resolved = semirobust_study(config, study)
    block = config["semirobust"]
    k = int(fb_layers)
    if k not in resolved["fb_layers"]:
        raise ConfigError(f"semirobust.studies.{study}.fb_layers is {resolved['fb_layers']}, not {k}")
    robust, regular = resolved["robust"], resolved["regular"]
    return {"seed": int(config["seed"]), "study": study, "dataset": robust.dataset, "arch": robust.arch,
            "robust": robust.name, "regular": regular.name, "fb_layers": k,
            "retrain": {key: block[key] for key in RETRAIN_KEYS},
            "train_examples": block["train_examples"], "test_examples": block["test_examples"],
            "train_attack": resolved["train_attack"], "eval_attack": resolved["eval_attack"],
            "estimators": list(block["estimators"]), "edge": dict(block["edge"]), **_source_of(robust)}


def semirobust_job_json(config: dict[str, Any], study: str, fb_layers: int | str) -> str:
    return json.dumps(semirobust_job(config, study, fb_layers), sort_keys=True)
