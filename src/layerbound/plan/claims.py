"""Where a configuration can test each of the papers' claims (layerbound.bounds.claims).

`instances(plan)` finds the rows a configuration can test (from the models' training methods,
architectures and the layers and m they are searched at, never from model names); `job(plan)` is
what the workflow's claims rule reads. Like the plan, this imports neither torch nor pandas.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from ..bounds.claims import CLAIMS, EQUIVALENCE_MARGIN, FAB_LOSSES, unit_name
from ..bounds.eps import eps_grid
from ..core.names import INPUT_MODEL
from ..core.paths import path
from ..models import architectures
from .claim_grid import ClaimGrid, Instance, instance
from .plan import Plan
from .units import tap_widths


def _depth_claims(grid: ClaimGrid) -> list[Instance]:
    out = []
    for where in grid.searches():
        for model in grid.plan.figure_models():
            layers = grid.projected_layers(where, model)
            if len(layers) < 2:
                continue
            seq = {f"l{i}": grid.key(where, model, layer) for i, layer in enumerate(layers)}
            ends = {"first": seq["l0"], "last": seq[f"l{len(layers) - 1}"]}
            out.append(instance("001_distance_grows_with_depth", where, [model], [layers[0], layers[-1]], ends))
            out.append(instance("001_loss_falls_with_depth", where, [model], [layers[0], layers[-1]], ends))
            out.append(instance("001_first_layer_weakest", where, [model], layers, seq))
            if len(layers) < 3 or not grid.every_tap(model, layers):
                continue   # the step claims are about the network's consecutive layers
            out.append(instance("001_large_first_step", where, [model], layers, seq))
            if grid.registry(model):
                kinds = grid.layer_kinds(model)
                steps = [i for i in range(len(layers) - 1)
                         if (kinds.get(layers[i]), kinds.get(layers[i + 1])) == ("conv", "dense")]
                if steps:
                    out.append(instance("001_large_conv_to_dense_step", where, [model], layers, seq,
                                         params={"step": steps[0]}))
            if layers[-1] == "logits":
                out.append(instance("001_little_gain_at_logits", where, [model], layers, seq))
    return out


def _training_claims(grid: ClaimGrid) -> list[Instance]:
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
                        out.append(instance("001_benign_least_robust", where, [b, adv], ["logits"], keys))
            pgd = [name for name in group if grid.method(name) == "pgd"]
            trades = [name for name in group if grid.method(name) == "trades"]
            for p in pgd:
                for t in trades:
                    if grid.budget(p) != grid.budget(t):
                        continue
                    layers_p, layers_t = grid.projected_layers(where, p), grid.projected_layers(where, t)
                    if layers_p and layers_t and layers_p[0] == layers_t[0] and layers_p[0] != "logits":
                        first = layers_p[0]
                        out.append(instance("001_trades_cliff_earlier", where, [p, t], [first],
                                             {"pgd": grid.key(where, p, first), "trades": grid.key(where, t, first)}))
                    if grid.registry(p):
                        kinds = grid.layer_kinds(p)
                        dense = [layer for layer in layers_p if kinds.get(layer) == "dense" and layer in layers_t]
                        if len(dense) >= 2:
                            units = {f"pgd{i}": grid.key(where, p, layer) for i, layer in enumerate(dense)}
                            units.update({f"trades{i}": grid.key(where, t, layer) for i, layer in enumerate(dense)})
                            out.append(instance("001_trades_fc_separation", where, [p, t], dense, units))
                    keys = {"pgd": grid.key(where, p, "logits"), "trades": grid.key(where, t, "logits")}
                    if all(keys.values()):
                        out.append(instance("001_trades_more_robust", where, [p, t], ["logits"], keys))
    return out


def _m_sweep_claims(grid: ClaimGrid) -> list[Instance]:
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


def _architecture_claims(grid: ClaimGrid) -> list[Instance]:
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
                        out.append(instance(claim, where, [small, medium], [layer], units))
    return out


def _unprojected_first_layer_claims(grid: ClaimGrid) -> list[Instance]:
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
                out.append(instance("unprojected_first_layer_as_input", where, [model], [layer],
                                     {"layer": key, "input": baseline}))
    return out


def _fab_claims(grid: ClaimGrid) -> list[Instance]:
    out = []
    for dataset, pairset, method, model, m in grid.plan.fab_comparisons():
        where = (dataset, pairset, method, m)
        points = path("fab_pairs", grid.plan.root, dataset=dataset, pairset=pairset, model=model)
        # Two rows: FAB's loss as the two-class cross-entropy over the pair's classes (the statistic
        # as first registered), and as the model's own cross-entropy over all its classes (docs/claims.md).
        for fab_loss in FAB_LOSSES:
            out.append(instance("001_fab_above_collision", where, [model], ["logits"],
                                {"logits": grid.key(where, model, "logits")}, fab=points,
                                params={"fab_loss": fab_loss}))
    return out


def _fcnn_taps(grid: ClaimGrid, where, model) -> dict[str, tuple]:
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


def _fcnn_layer_claims(grid: ClaimGrid) -> list[Instance]:
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
                    out.append(instance(claim, where, [model], [_layer_of(k) for k in units.values()], units))
    return out


def _fcnn_training_claims(grid: ClaimGrid) -> list[Instance]:
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
                        out.append(instance("002_second_relu_larger_for_benign", where, [b, adv],
                                             [_layer_of(taps[b]["linear2"]), _layer_of(taps[b]["relu2"])], units))
                    common = [layer for layer in grid.layers(where, b) if layer in grid.layers(where, adv)]
                    for layer in common:
                        keys = {"benign": grid.key(where, b, layer), "adversarial": grid.key(where, adv, layer)}
                        if not any(grid.projected(k) for k in keys.values()):
                            out.append(instance("002_adversarial_more_robust_every_layer", where, [b, adv], [layer],
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
                    out.append(instance("002_larger_train_eps_more_robust", where, [lo, hi], layer, units))
                for triple in zip(names, names[1:], names[2:]):
                    units = {f"e{i}": taps[n]["linear1"] for i, n in enumerate(triple)}
                    out.append(instance("002_diminishing_returns_of_train_eps", where, list(triple), layer, units,
                                         params={"eps": [grid.budget(n)[1] for n in triple]}))
            for p in (n for n in fcnns if grid.method(n) == "pgd"):
                for t in (n for n in fcnns if grid.method(n) == "trades"):
                    if grid.budget(p) == grid.budget(t) and all(r in taps[m] for m in (p, t) for r in ("linear1", "relu2")):
                        units = {f"{who}_{r}": taps[m][r] for who, m in (("pgd", p), ("trades", t))
                                 for r in ("linear1", "relu2")}
                        out.append(instance("002_pgd_trades_gap_fades", where, [p, t],
                                             [_layer_of(taps[p]["linear1"]), _layer_of(taps[p]["relu2"])], units))
    return out


def _width_claims(grid: ClaimGrid) -> list[Instance]:
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
                        out.append(instance("002_narrower_less_robust", where, [narrow, wide], [layer], keys))
    return out


def _method_claims(grid: ClaimGrid) -> list[Instance]:
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
    grid = ClaimGrid(plan)
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
