"""The models a config names, as the dataclasses the training and import code take (field defaults
from the schema, for library use without a config)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

from ..core.errors import ConfigError
from ..core.schema import defaults
from . import sources

TRAINING_METHODS = ("benign", "pgd", "trades")
NORMS = ("l2", "linf")

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


def source_of(spec: ModelSpec | LoadedSpec) -> dict[str, Any]:
    """{"source": the model entry} of a loaded or source-trained model, which rebuilds its network
    from the checkpoint (a checkpoint never chooses code); {} for a registry model, whose jobs stay
    as they were before sources existed."""
    return {} if spec.source is None else {"source": spec.source}
