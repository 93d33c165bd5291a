"""Papers 001 and 002's qualitative findings as claims, and where a configuration can test them.

Each claim (docs/claims.md, chosen before any was computed on real results) is one finding,
written so that the paper predicts a statistic > 0, or for a statement of equivalence one within
+-EQUIVALENCE_MARGIN of 0. `instances(plan)` finds the rows a configuration can test (from the
models' training methods, architectures and the layers and m they are searched at, never from
model names); `job(plan)` is what the workflow's claims rule reads. The statistics, intervals and
verdicts are computed by layerbound.bounds.claim_statistics. Like the plan, this imports neither torch
nor pandas.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..models import architectures
from ..config import ModelSpec
from ..core.names import INPUT_MODEL
from ..plan.plan import Plan, eps_grid, is_projected, network_taps, path, tap_widths

__all__ = ["CLAIMS", "EQUIVALENCE_MARGIN", "Claim", "Instance", "instances", "job", "input_files", "unit_name", "write_job"]

EQUIVALENCE_MARGIN = 0.05 * math.log(2.0)   # nats of mean loss A (docs/claims.md, Verdicts)


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    where: str
    statement: str
    statistic: str
    needs: str                 # what a configuration must have to test it (the note of "not tested")
    equivalence: bool = False  # predicted near 0 rather than > 0


_AVG = "average step gain = (A(first) - A(last)) / (layers - 1)"
CLAIMS: dict[str, Claim] = {c.id: c for c in (
    Claim("001_distance_grows_with_depth", "001", "Sec. 4.3, Fig. 3",
          "as the feature extractor becomes deeper, the average adversarial distance increases",
          "D(last layer) - D(first layer)", "a model with >= 2 randomly projected layers (m < n_j)"),
    Claim("001_loss_falls_with_depth", "001", "Sec. 6.3, Figs. 8-9",
          "as we move through the layers, robustness increases; the optimal loss decreases",
          "A(first layer) - A(last layer)", "a model with >= 2 randomly projected layers (m < n_j)"),
    Claim("001_first_layer_weakest", "001", "Sec. 6.6, Figs. 8, 13, 14",
          "the first convolutional layer often learns less robust features even when the model as a whole is robust",
          "A(first layer) - max of A over the other layers", "a model with >= 2 randomly projected layers (m < n_j)"),
    Claim("001_large_first_step", "001", "Sec. 6.3",
          "a relatively large improvement from layer one to layer two",
          f"A(layer 1) - A(layer 2) - {_AVG}", "a model with >= 3 randomly projected layers"),
    Claim("001_large_conv_to_dense_step", "001", "Sec. 6.3",
          "a large improvement from layer four to layer five: a distinct gap between the convolutional and the fully "
          "connected layers", f"A(last conv layer) - A(first dense layer) - {_AVG}",
          "a registry CNN with conv and dense layers (>= 3 layers, randomly projected)"),
    Claim("001_little_gain_at_logits", "001", "Sec. 6.3, 6.6",
          "from layer six to the logits, not much robustness improvement despite the reduction from 512 to 10",
          f"{_AVG} - [A(layer before the logits) - A(logits)]", "a model with the logits and >= 3 layers"),
    Claim("001_benign_least_robust", "001", "Sec. 6.5-6.6, Fig. 13 vs 8",
          "benign training achieves very limited robustness; for robust models the optimal loss at the logit layer "
          "remains low", "A(benign, logits) - A(adversarially trained, logits)",
          "a benign and a PGD or TRADES model of one dataset and architecture, with the logits"),
    Claim("001_trades_cliff_earlier", "001", "Sec. 6.5, Fig. 14 vs 8",
          "TRADES have layer-one robustness cliffs at lower adversarial budgets than PGD",
          "E(PGD, first layer) - E(TRADES, first layer)",
          "a PGD and a TRADES model of one architecture, norm and budget, first layer randomly projected"),
    Claim("001_trades_fc_separation", "001", "Sec. 6.5, Fig. 14 vs 8",
          "TRADES achieves more separation between fully-connected layer curves",
          "spread(TRADES) - spread(PGD), spread = max - min of A over the dense layers (logits included)",
          "a PGD and a TRADES registry CNN of one norm and budget with >= 2 dense layers"),
    Claim("001_trades_more_robust", "001", "Sec. 6.5",
          "TRADES significantly outperforms plain PGD (robust test accuracy; tested at the logits)",
          "A(PGD, logits) - A(TRADES, logits)", "a PGD and a TRADES model of one architecture, norm and budget"),
    Claim("001_loss_falls_with_m", "001", "Sec. 6.2, Fig. 6",
          "as the projection dimension m increases, the loss decreases (first conv layer)",
          "A(layer, smallest m) - A(layer, largest m)", "a model with a layer searched at >= 2 m (collision.sweeps)"),
    Claim("001_small_cnn_less_robust", "001", "Sec. 6.4, Fig. 10 vs 8",
          "the small CNN exhibits lower overall robustness", "A(small, logits) - A(medium, logits)",
          "a small and a medium CNN of one dataset and training"),
    Claim("001_small_cnn_first_layer_better", "001", "Sec. 6.4, Fig. 10 vs 8",
          "the small CNN's first convolutional layer appears to perform better", "A(medium, conv1) - A(small, conv1)",
          "a small and a medium CNN of one dataset and training, conv1 randomly projected"),
    Claim("001_small_cnn_second_layer_similar", "001", "Sec. 6.4, Fig. 10 vs 8",
          "the small CNN's second layer achieves a similar level of robustness to that of the medium CNN",
          "A(small, conv2) - A(medium, conv2), equivalence", "a small and a medium CNN of one dataset and training, "
          "conv2 randomly projected", equivalence=True),
    Claim("unprojected_first_layer_as_input", "001, 002", "001 Sec. 6.3, Fig. 7; 002 Sec. 4.2, App. F.3, Fig. 11",
          "without projection, the initial layers' robustness measure remains essentially the same as at the input "
          "level; a linear convolutional layer does not increase the lower bound",
          "A(layer) - A(input), equivalence", "an unprojected first layer at least as wide as the input, and the "
          "input baseline at that m", equivalence=True),
    Claim("001_fab_above_collision", "001", "Sec. 6.1, Fig. 5a",
          "the FAB loss remains consistently higher than our collision-based loss",
          "min over the eps grid of [FAB cross-entropy - optimal collision cross-entropy at the logits]",
          "the FAB comparison of a model (attacks.fab_comparison)"),
    Claim("002_first_relu_raises_bound", "002", "Sec. 4.2, Figs. 3-4",
          "the first ReLU activation layer contributes significantly to an increase in the lower bound",
          "A(fc1) - A(fc1_pre)", "an FCNN searched unprojected at fc1_pre and fc1"),
    Claim("002_second_linear_adds_little", "002", "Sec. 4.2, Figs. 3-4",
          "the second linear layer does not lead to much additional increase in the loss",
          "[A(fc1) - A(fc1_pre)] - [A(fc2_pre) - A(fc1)]", "an FCNN searched unprojected at fc1_pre, fc1 and fc2_pre"),
    Claim("002_second_relu_raises_bound", "002", "Sec. 4.2, Figs. 3-4",
          "the second set of ReLU activations does have a measurable impact on robustness",
          "A(fc2) - A(fc2_pre)", "an FCNN searched unprojected at fc2_pre and fc2"),
    Claim("002_second_relu_larger_for_benign", "002", "Sec. 4.2, Figs. 3-4",
          "the second ReLU's impact is particularly large for the benign network",
          "[A(fc2) - A(fc2_pre)] of the benign model - the same of the adversarially trained one",
          "a benign and a PGD or TRADES FCNN searched unprojected at fc2_pre and fc2"),
    Claim("002_adversarial_more_robust_every_layer", "002", "Sec. 4.2, Figs. 2, 5",
          "layers extracted from robustly trained networks are more robust than their benign counterparts",
          "A(benign, layer) - A(adversarially trained, layer)",
          "a benign and a PGD or TRADES FCNN searched unprojected at a common layer"),
    Claim("002_larger_train_eps_more_robust", "002", "Sec. 4.2, Fig. 2",
          "first linear layer: robustness increases with the training budget eps_train",
          "A(lower eps_train, fc1_pre) - A(next higher eps_train, fc1_pre)",
          "FCNNs of one training method and norm at >= 2 budgets, searched unprojected at fc1_pre"),
    Claim("002_diminishing_returns_of_train_eps", "002", "Sec. 4.2, Fig. 2",
          "the marginal benefits of a larger training budget reduce as eps_train increases",
          "g(e1, e2) - g(e2, e3), g(a, b) = [A(a, fc1_pre) - A(b, fc1_pre)] / (b - a), consecutive budgets",
          "FCNNs of one training method and norm at >= 3 budgets, searched unprojected at fc1_pre"),
    Claim("002_pgd_trades_gap_fades", "002", "Sec. 4.2, Fig. 2 vs 5",
          "a significant PGD / TRADES difference at the first linear layer largely disappears by the second ReLU",
          "|A(PGD, fc1_pre) - A(TRADES, fc1_pre)| - |A(PGD, fc2) - A(TRADES, fc2)|",
          "a PGD and a TRADES FCNN of one norm and budget searched unprojected at fc1_pre and fc2"),
    Claim("002_narrower_less_robust", "002", "App. F.1, Fig. 6",
          "as the width of the feature extractor decreases, so does its robustness",
          "A(narrower, layer) - A(wider, layer)", "two FCNNs of one dataset and training whose layers differ only in "
          "width, searched unprojected at a common layer"),
    Claim("polytope_at_most_jacobian", "issue 27", "our two searches (not a paper statement)",
          "paper 002's polytope descent finds collisions at most as far as paper 001's Algorithm 1",
          "D(jacobian) - D(polytope), same model, layer and m", "a layer searched by both methods"),
)}


# --- where a configuration can test each claim --------------------------------------------------------

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


def unit_name(key: tuple) -> str:
    return "/".join(str(part) for part in key)


class _Grid:
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


def _instance(claim, where, models, layers, units, **extra) -> Instance:
    dataset, pairset, method, m = where
    return Instance(claim, dataset, pairset, method, str(m), list(models), list(layers), dict(units), **extra)


def _depth_claims(grid: _Grid) -> list[Instance]:
    out = []
    for where in grid.searches():
        for model in grid.plan.figure_models():
            layers = grid.projected_layers(where, model)
            if len(layers) < 2:
                continue
            seq = {f"l{i}": grid.key(where, model, layer) for i, layer in enumerate(layers)}
            ends = {"first": seq["l0"], "last": seq[f"l{len(layers) - 1}"]}
            out.append(_instance("001_distance_grows_with_depth", where, [model], [layers[0], layers[-1]], ends))
            out.append(_instance("001_loss_falls_with_depth", where, [model], [layers[0], layers[-1]], ends))
            out.append(_instance("001_first_layer_weakest", where, [model], layers, seq))
            if len(layers) < 3 or not grid.every_tap(model, layers):
                continue   # the step claims are about the network's consecutive layers
            out.append(_instance("001_large_first_step", where, [model], layers, seq))
            if grid.registry(model):
                kinds = grid.layer_kinds(model)
                steps = [i for i in range(len(layers) - 1)
                         if (kinds.get(layers[i]), kinds.get(layers[i + 1])) == ("conv", "dense")]
                if steps:
                    out.append(_instance("001_large_conv_to_dense_step", where, [model], layers, seq,
                                         params={"step": steps[0]}))
            if layers[-1] == "logits":
                out.append(_instance("001_little_gain_at_logits", where, [model], layers, seq))
    return out


def _training_claims(grid: _Grid) -> list[Instance]:
    """Paper 001's comparisons of training methods (benign vs adversarial; PGD vs TRADES)."""
    out = []
    for where in grid.searches():
        for group in grid.groups():
            benign = [name for name in group if grid.method(name) == "benign"]
            adversarial = [name for name in group if grid.method(name) != "benign"]
            for b in benign:
                for adv in adversarial:
                    keys = {"benign": grid.key(where, b, "logits"), "adversarial": grid.key(where, adv, "logits")}
                    if all(keys.values()):
                        out.append(_instance("001_benign_least_robust", where, [b, adv], ["logits"], keys))
            pgd = [name for name in group if grid.method(name) == "pgd"]
            trades = [name for name in group if grid.method(name) == "trades"]
            for p in pgd:
                for t in trades:
                    if grid.budget(p) != grid.budget(t):
                        continue
                    layers_p, layers_t = grid.projected_layers(where, p), grid.projected_layers(where, t)
                    if layers_p and layers_t and layers_p[0] == layers_t[0] and layers_p[0] != "logits":
                        first = layers_p[0]
                        out.append(_instance("001_trades_cliff_earlier", where, [p, t], [first],
                                             {"pgd": grid.key(where, p, first), "trades": grid.key(where, t, first)}))
                    if grid.registry(p):
                        kinds = grid.layer_kinds(p)
                        dense = [layer for layer in layers_p if kinds.get(layer) == "dense" and layer in layers_t]
                        if len(dense) >= 2:
                            units = {f"pgd{i}": grid.key(where, p, layer) for i, layer in enumerate(dense)}
                            units.update({f"trades{i}": grid.key(where, t, layer) for i, layer in enumerate(dense)})
                            out.append(_instance("001_trades_fc_separation", where, [p, t], dense, units))
                    keys = {"pgd": grid.key(where, p, "logits"), "trades": grid.key(where, t, "logits")}
                    if all(keys.values()):
                        out.append(_instance("001_trades_more_robust", where, [p, t], ["logits"], keys))
    return out


def _m_sweep_claims(grid: _Grid) -> list[Instance]:
    out = []
    for (dataset, pairset, method, model), per_m in grid.plan.figure_layers.items():
        if len(per_m) < 2:
            continue
        layer = grid.plan.m_sweep_layer(dataset, pairset, method, model)
        if layer is None:
            continue
        small, large = min(per_m), max(per_m)
        units = {"small_m": (dataset, pairset, method, model, layer, small),
                 "large_m": (dataset, pairset, method, model, layer, large)}
        out.append(Instance("001_loss_falls_with_m", dataset, pairset, method, f"{small} vs {large}", [model], [layer],
                            units))
    return out


def _architecture_claims(grid: _Grid) -> list[Instance]:
    """Paper 001, Sec. 6.4: the small CNN against the medium one of the same training."""
    out = []
    claims = (("001_small_cnn_less_robust", "logits"), ("001_small_cnn_first_layer_better", "conv1"),
              ("001_small_cnn_second_layer_similar", "conv2"))
    for where in grid.searches():
        for small in (n for n in grid.trained if grid.registry(n) and grid.trained[n].arch == "small"):
            for medium in (n for n in grid.trained if grid.registry(n) and grid.trained[n].arch == "medium"):
                if (grid.trained[small].dataset, grid.training(small)) != (grid.trained[medium].dataset,
                                                                           grid.training(medium)):
                    continue
                for claim, layer in claims:
                    if layer in grid.projected_layers(where, small) and layer in grid.projected_layers(where, medium):
                        units = {"small": grid.key(where, small, layer), "medium": grid.key(where, medium, layer)}
                        out.append(_instance(claim, where, [small, medium], [layer], units))
    return out


def _unprojected_first_layer_claims(grid: _Grid) -> list[Instance]:
    """The leading layers that are unprojected and at least as wide as the input, against the input."""
    out = []
    for where in grid.searches():
        baseline = grid.key(where, INPUT_MODEL, "input")
        if baseline is None:
            continue
        n_0 = grid.plan.units[baseline].n_j
        for model in grid.plan.figure_models():
            for layer in grid.layers(where, model):
                key = grid.key(where, model, layer)
                if grid.projected(key) or grid.plan.units[key].n_j < n_0:
                    break
                out.append(_instance("unprojected_first_layer_as_input", where, [model], [layer],
                                     {"layer": key, "input": baseline}))
    return out


def _fab_claims(grid: _Grid) -> list[Instance]:
    out = []
    for dataset, pairset, method, model, m in grid.plan.fab_comparisons():
        where = (dataset, pairset, method, m)
        points = path("fab_pairs", grid.plan.root, dataset=dataset, pairset=pairset, model=model)
        out.append(_instance("001_fab_above_collision", where, [model], ["logits"],
                             {"logits": grid.key(where, model, "logits")}, fab=points))
    return out


def _fcnn_taps(grid: _Grid, where, model) -> dict[str, tuple]:
    """Paper 002's roles of an FCNN's unprojected taps: linear1 = fc1_pre, relu1 = fc1, linear2, relu2."""
    if not grid.fcnn(model):
        return {}
    first, second = architectures.tap_names(grid.trained[model].arch)[:2]
    roles = {"linear1": f"{first}_pre", "relu1": first, "linear2": f"{second}_pre", "relu2": second}
    out = {}
    for role, layer in roles.items():
        key = grid.key(where, model, layer)
        if key is not None and not grid.projected(key):
            out[role] = key
    return out


def _layer_of(key: tuple) -> str:
    return key[4]


def _fcnn_layer_claims(grid: _Grid) -> list[Instance]:
    out = []
    needs = {"002_first_relu_raises_bound": ("linear1", "relu1"),
             "002_second_linear_adds_little": ("linear1", "relu1", "linear2"),
             "002_second_relu_raises_bound": ("linear2", "relu2")}
    for where in grid.searches():
        for model in grid.plan.figure_models():
            taps = _fcnn_taps(grid, where, model)
            for claim, roles in needs.items():
                if all(role in taps for role in roles):
                    units = {role: taps[role] for role in roles}
                    out.append(_instance(claim, where, [model], [_layer_of(k) for k in units.values()], units))
    return out


def _fcnn_training_claims(grid: _Grid) -> list[Instance]:
    out = []
    for where in grid.searches():
        for group in grid.groups():
            fcnns = [name for name in group if grid.fcnn(name)]
            taps = {name: _fcnn_taps(grid, where, name) for name in fcnns}
            benign = [n for n in fcnns if grid.method(n) == "benign"]
            adversarial = [n for n in fcnns if grid.method(n) != "benign"]
            for b in benign:
                for adv in adversarial:
                    if all(r in taps[m] for m in (b, adv) for r in ("linear2", "relu2")):
                        units = {f"{who}_{r}": taps[m][r] for who, m in (("benign", b), ("adversarial", adv))
                                 for r in ("linear2", "relu2")}
                        out.append(_instance("002_second_relu_larger_for_benign", where, [b, adv],
                                             [_layer_of(taps[b]["linear2"]), _layer_of(taps[b]["relu2"])], units))
                    common = [layer for layer in grid.layers(where, b) if layer in grid.layers(where, adv)]
                    for layer in common:
                        keys = {"benign": grid.key(where, b, layer), "adversarial": grid.key(where, adv, layer)}
                        if not any(grid.projected(k) for k in keys.values()):
                            out.append(_instance("002_adversarial_more_robust_every_layer", where, [b, adv], [layer],
                                                 keys))
            by_budget: dict[tuple, list[str]] = {}
            for name in adversarial:
                if "linear1" in taps[name]:
                    by_budget.setdefault((grid.method(name), grid.budget(name)[0]), []).append(name)
            for names in by_budget.values():
                names = sorted(names, key=lambda n: grid.budget(n)[1])
                eps = [grid.budget(n)[1] for n in names]
                if len(set(eps)) != len(eps):
                    continue   # two models at one budget: which is "next" is not defined
                layer = [_layer_of(taps[names[0]]["linear1"])]
                for lo, hi in zip(names, names[1:]):
                    units = {"lower": taps[lo]["linear1"], "higher": taps[hi]["linear1"]}
                    out.append(_instance("002_larger_train_eps_more_robust", where, [lo, hi], layer, units))
                for triple in zip(names, names[1:], names[2:]):
                    units = {f"e{i}": taps[n]["linear1"] for i, n in enumerate(triple)}
                    out.append(_instance("002_diminishing_returns_of_train_eps", where, list(triple), layer, units,
                                         params={"eps": [grid.budget(n)[1] for n in triple]}))
            for p in (n for n in fcnns if grid.method(n) == "pgd"):
                for t in (n for n in fcnns if grid.method(n) == "trades"):
                    if grid.budget(p) == grid.budget(t) and all(r in taps[m] for m in (p, t) for r in ("linear1", "relu2")):
                        units = {f"{who}_{r}": taps[m][r] for who, m in (("pgd", p), ("trades", t))
                                 for r in ("linear1", "relu2")}
                        out.append(_instance("002_pgd_trades_gap_fades", where, [p, t],
                                             [_layer_of(taps[p]["linear1"]), _layer_of(taps[p]["relu2"])], units))
    return out


def _width_claims(grid: _Grid) -> list[Instance]:
    """Paper 002, App. F.1: FCNNs of one training whose taps have the same names, next widths paired."""
    out = []
    for where in grid.searches():
        families: dict[tuple, list[str]] = {}
        for name in grid.plan.figure_models():
            if grid.fcnn(name):
                spec = grid.trained[name]
                family = (spec.dataset, grid.training(name), tuple(architectures.tap_names(spec.arch)))
                families.setdefault(family, []).append(name)
        for names in families.values():
            names = sorted(names, key=lambda n: sum(tap_widths(grid.plan.config["models"][n]).values()))
            for narrow, wide in zip(names, names[1:]):
                w_narrow = tap_widths(grid.plan.config["models"][narrow])
                w_wide = tap_widths(grid.plan.config["models"][wide])
                if not (all(w_narrow[t] <= w_wide[t] for t in w_narrow) and w_narrow != w_wide):
                    continue
                for layer in (name for name in grid.layers(where, narrow) if name in grid.layers(where, wide)):
                    keys = {"narrower": grid.key(where, narrow, layer), "wider": grid.key(where, wide, layer)}
                    if not any(grid.projected(k) for k in keys.values()):
                        out.append(_instance("002_narrower_less_robust", where, [narrow, wide], [layer], keys))
    return out


def _method_claims(grid: _Grid) -> list[Instance]:
    out = []
    for key in grid.plan.units:
        dataset, pairset, method, model, layer, m = key
        other = (dataset, pairset, "jacobian", model, layer, m)
        if method == "polytope" and model != INPUT_MODEL and other in grid.plan.units:
            out.append(Instance("polytope_at_most_jacobian", dataset, pairset, "jacobian vs polytope", str(m), [model],
                                [layer], {"jacobian": other, "polytope": key}))
    return out


def instances(plan: Plan) -> list[Instance]:
    """Every row a configuration can test, in the order of CLAIMS."""
    grid = _Grid(plan)
    found = []
    for family in (_depth_claims, _training_claims, _m_sweep_claims, _architecture_claims,
                   _unprojected_first_layer_claims, _fab_claims, _fcnn_layer_claims, _fcnn_training_claims,
                   _width_claims, _method_claims):
        found += family(grid)
    order = {claim: i for i, claim in enumerate(CLAIMS)}
    return sorted(found, key=lambda inst: order[inst.claim])


def job(plan: Plan) -> dict[str, Any]:
    """What the claims rule passes: the eps grid, the bootstrap, the merged files by name and the
    instances on them (a change to any re-runs the table, and nothing else does)."""
    found = instances(plan)
    units = {}
    for inst in found:
        for key in inst.units.values():
            units[unit_name(key)] = plan.units[key].merged_path(plan.root)
    rows = []
    for inst in found:
        row = asdict(inst)
        row["units"] = {role: unit_name(key) for role, key in inst.units.items()}
        rows.append(row)
    return {"eps": eps_grid(plan.config["losses"]["eps"]).tolist(), "replicates": int(plan.config["losses"]["bootstrap"]),
            "margin": EQUIVALENCE_MARGIN, "units": units, "instances": rows}


def write_job(job_json: str, out: str, log: str | None = None) -> None:
    """Write a job (as JSON text) for the claims rule, and a line saying what it holds to `log`."""
    from ..core.store import write_text

    write_text(out, job_json)
    if log:
        loaded = json.loads(job_json)
        tested = sorted({inst["claim"] for inst in loaded["instances"]})
        write_text(log, f"{len(loaded['instances'])} rows of {len(tested)} claims on "
                        f"{len(loaded['units'])} merged files: {', '.join(tested)}\n")


def input_files(job_: Mapping[str, Any]) -> list[str]:
    """The merged distance files and FAB point tables a job reads."""
    fab = [inst["fab"] for inst in job_["instances"] if inst.get("fab")]
    return list(dict.fromkeys(list(job_["units"].values()) + fab))
