"""The plan as the claims need it (layerbound.plan.claims): a row's `Instance`, and `ClaimGrid` for
the layers searched per (model, method, m), which are projected, and the groups of models
compared by training method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..collide.units import is_projected
from ..config import ModelSpec
from ..models import architectures
from .plan import Plan
from .units import network_taps


@dataclass
class Instance:
    """One row of the table: a claim on named merged files (`units`: role -> unit key)."""

    claim: str
    dataset: str
    pairset: str
    collision_method: str
    m: str
    models: list[str]
    layers: list[str]
    units: dict[str, tuple]
    params: dict[str, Any] = field(default_factory=dict)
    fab: str | None = None


class ClaimGrid:
    """The plan as the claims need it: layers per (model, method, m), projection, training groups."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.trained = {name: spec for name, spec in plan.specs.items() if isinstance(spec, ModelSpec)}

    def searches(self):
        """(dataset, pairset, method, m) of every model's layers, in plan order."""
        seen = []
        for (dataset, pairset, method, _), per_m in self.plan.figure_layers.items():
            for m in per_m:
                if (dataset, pairset, method, m) not in seen:
                    seen.append((dataset, pairset, method, m))
        return seen

    def layers(self, where, model) -> list[str]:
        dataset, pairset, method, m = where
        return list(self.plan.figure_layers.get((dataset, pairset, method, model), {}).get(m, []))

    def key(self, where, model, layer) -> tuple | None:
        dataset, pairset, method, m = where
        key = (dataset, pairset, method, model, layer, int(m))
        return key if key in self.plan.units else None

    def projected(self, key) -> bool:
        unit = self.plan.units[key]
        return is_projected(unit.model, unit.layer, unit.m, unit.n_j)

    def projected_layers(self, where, model) -> list[str]:
        """Paper 001's layers of a model: its post-activation taps, when all but the logits are projected."""
        post = [layer for layer in self.layers(where, model) if not layer.endswith("_pre")]
        if all(self.projected(self.key(where, model, layer)) for layer in post if layer != "logits"):
            return post
        return []

    def every_tap(self, model, layers) -> bool:
        """Whether `layers` are all the model's post-activation taps (so its steps are the network's)."""
        return list(layers) == [t for t in network_taps(self.plan.config, model) if not t.endswith("_pre")]

    def registry(self, model) -> bool:
        spec = self.trained.get(model)
        return spec is not None and spec.source is None

    def layer_kinds(self, model) -> dict[str, str]:
        """'conv' or 'dense' for each post-activation tap of a registry model (logits: dense)."""
        arch = self.trained[model].arch
        kinds = ["conv" if isinstance(layer, architectures.Conv) else "dense" for layer in architectures.layers(arch)]
        return dict(zip(architectures.tap_names(arch), kinds + ["dense"]))

    def fcnn(self, model) -> bool:
        """Paper 002's FCNN family: a registry network whose first two hidden layers are fully connected."""
        if not self.registry(model):
            return False
        hidden = architectures.layers(self.trained[model].arch)
        return len(hidden) >= 2 and all(isinstance(layer, architectures.Dense) for layer in hidden[:2])

    def groups(self) -> list[list[str]]:
        """Trained models of one dataset, architecture and padding (compared by training method)."""
        out: dict[tuple, list[str]] = {}
        for name, spec in self.trained.items():
            out.setdefault((spec.dataset, spec.arch, spec.padding), []).append(name)
        return list(out.values())

    def method(self, model) -> str:
        return self.trained[model].train.method

    def budget(self, model) -> tuple[str, float]:
        train = self.trained[model].train
        return train.norm, float(train.eps)

    def training(self, model) -> tuple:
        train = self.trained[model].train
        return ("benign",) if train.method == "benign" else (train.method, train.norm, float(train.eps))


def instance(claim, where, models, layers, units, **extra) -> Instance:
    dataset, pairset, method, m = where
    return Instance(claim, dataset, pairset, method, str(m), list(models), list(layers), dict(units), **extra)
