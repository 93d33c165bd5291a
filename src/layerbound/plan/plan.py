"""The plan: everything a validated configuration asks for, with the inputs of every rule.

`Plan(config)` lists every merged distance file (a `Unit`, plan/units.py), every figure, the
attack and claims files and the targets; the paths come from core/paths.py. It imports neither
torch nor matplotlib, so the workflow parses in a second or two.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import LoadedSpec, attack_models, model_specs
from ..core.errors import ConfigError
from ..core.names import INPUT_MODEL
from ..core.paths import RESULTS, path, pattern
from ..models import architectures
from ..collide.units import Unit
from .units import collision_options, find_unit, network_taps, pairset_name, units

# Order of the training methods in comparisons and legends.
TRAINING_ORDER = {"benign": 0, "pgd": 1, "trades": 2}


# --- the whole plan: units, figures, targets -----------------------------------------------------

class Plan:
    """Everything a validated configuration asks for, with the inputs of every rule.

    Units are keyed (dataset, pairset, collision_method, model, layer, m). The figure plan covers
    the trained models: per model and m its layers in network order; models of one dataset and
    architecture are compared by training method when there are two or more.
    """

    def __init__(self, config: dict[str, Any], root: str | None = None):
        self.config, self.root = config, os.path.normpath(root or config.get("results", RESULTS))
        self.specs = model_specs(config)   # fails naming the model if a training block is inconsistent
        self.units = {u.key: u for u in units(config)}
        self.datasets = sorted({spec.dataset for spec in self.specs.values()})
        self.figure_layers: dict[tuple, dict[int, list[str]]] = {}
        for u in self.units.values():
            if u.model != INPUT_MODEL:
                key = (u.dataset, u.pairset, u.collision_method, u.model)
                self.figure_layers.setdefault(key, {}).setdefault(u.m, []).append(u.layer)
        for key, per_m in self.figure_layers.items():
            taps = network_taps(config, key[3])
            self.figure_layers[key] = {m: architectures.network_order(per_m[m], taps) for m in sorted(per_m)}
        self.training_groups = self._training_groups()
        self.collision_figures = self._collision_figures_enabled()
        self.attack_models = attack_models(config)   # fails naming a model that is not configured

    def pattern(self, kind: str, under: str = "", suffix: str | None = None) -> str:
        """An output kind's path pattern under this run's results folder (module function `pattern`)."""
        return pattern(kind, self.root, under, suffix)

    def path(self, kind: str, **wildcards: Any) -> str:
        return path(kind, self.root, **wildcards)

    # lookups (errors name what the config does not ask for)
    def unit(self, dataset: str, pairset: str, collision_method: str, model: str, layer: str, m: int | str) -> Unit:
        return find_unit(self.units.values(), dataset, pairset, collision_method, model, layer, m)

    @property
    def trained_models(self) -> list[str]:
        return [name for name, spec in self.specs.items() if not isinstance(spec, LoadedSpec)]

    @property
    def loaded_models(self) -> list[str]:
        """The models loaded instead of trained (rule import_model makes their checkpoints)."""
        return [name for name, spec in self.specs.items() if isinstance(spec, LoadedSpec)]

    def model_file(self, kind: str, model: str) -> str:
        """The checkpoint or metrics sidecar path of a configured model."""
        return path(kind, self.root, dataset=self.specs[model].dataset, model=model)

    def _figure_key(self, dataset: str, pairset: str, collision_method: str, model: str) -> tuple:
        key = (dataset, pairset, collision_method, model)
        if key not in self.figure_layers:
            raise ConfigError(f"the config asks for no distances of {'/'.join(key)}")
        return key

    def layers_at(self, dataset: str, pairset: str, collision_method: str, model: str, m: int | str) -> list[str]:
        per_m = self.figure_layers[self._figure_key(dataset, pairset, collision_method, model)]
        if int(m) not in per_m:
            raise ConfigError(f"the config asks for no distances of {model} at m={m}")
        return per_m[int(m)]

    def baselines(self, dataset: str, pairset: str, collision_method: str, m: int | str) -> list[Unit]:
        return [u for u in self.units.values() if u.model == INPUT_MODEL
                and (u.dataset, u.pairset, u.collision_method, u.m) == (dataset, pairset, collision_method, int(m))]

    # inputs of the rules
    def shard_inputs(self, dataset, pairset, collision_method, model, layer, m, p, chunk) -> dict[str, str]:
        unit = self.unit(dataset, pairset, collision_method, model, layer, m)
        if int(p) >= unit.projections or int(chunk) >= unit.chunks:
            raise ConfigError(f"{model}/{layer}/m{m} has projections 0..{unit.projections - 1} and chunks "
                              f"0..{unit.chunks - 1}; there is no shard p{p}/c{chunk}")
        inputs = {"pairs": path("pairs", self.root, dataset=dataset, pairset=pairset)}
        if model != INPUT_MODEL:
            inputs["checkpoint"] = self.model_file("checkpoint", model)
        return inputs

    def model_tables(self, dataset, pairset, collision_method, model, m) -> list[str]:
        """The loss tables of a model's layers at m, then those of the input baselines at m."""
        layers = self.layers_at(dataset, pairset, collision_method, model, m)
        units_ = [self.unit(dataset, pairset, collision_method, model, layer, m) for layer in layers]
        return [u.losses_path(self.root) for u in units_ + self.baselines(dataset, pairset, collision_method, m)]

    def m_sweep_layer(self, dataset, pairset, collision_method, model) -> str | None:
        """The model's first layer in network order present at every m (a post-activation tap
        before a `_pre` one), or None when no layer is."""
        per_m = self.figure_layers[self._figure_key(dataset, pairset, collision_method, model)]
        common = [layer for layer in next(iter(per_m.values())) if all(layer in ls for ls in per_m.values())]
        return next((layer for layer in common if not layer.endswith("_pre")), common[0] if common else None)

    def m_sweep_tables(self, dataset, pairset, collision_method, model) -> list[str]:
        ms = sorted(self.figure_layers[self._figure_key(dataset, pairset, collision_method, model)])
        layer = self.m_sweep_layer(dataset, pairset, collision_method, model)
        tables = [self.unit(dataset, pairset, collision_method, model, layer, m).losses_path(self.root) for m in ms]
        # The input baseline exists at the main grid's m (it does not depend on m).
        main_m = self.config["collision"]["m"][0]
        return tables + [u.losses_path(self.root) for u in self.baselines(dataset, pairset, collision_method, main_m)
                         if u.layer == "input"]

    def collision_merged(self, dataset, pairset, collision_method, model, m) -> list[str]:
        """Merged distance files of the baselines and of the model's layers at m (Figure 3)."""
        layers = self.layers_at(dataset, pairset, collision_method, model, m)
        units_ = self.baselines(dataset, pairset, collision_method, m)
        units_ += [self.unit(dataset, pairset, collision_method, model, layer, m) for layer in layers]
        return [u.merged_path(self.root) for u in units_]

    def training_group(self, dataset, pairset, collision_method, arch, m) -> list[str]:
        key = (dataset, pairset, collision_method, arch, int(m))
        if key not in self.training_groups:
            raise ConfigError(f"no two models of architecture {arch} on {dataset} to compare at m={m}")
        return self.training_groups[key]

    def training_group_tables(self, dataset, pairset, collision_method, arch, m) -> list[str]:
        models = self.training_group(dataset, pairset, collision_method, arch, m)
        tables = [self.unit(dataset, pairset, collision_method, model, layer, m).losses_path(self.root)
                  for model in models for layer in self.layers_at(dataset, pairset, collision_method, model, m)]
        return tables + [u.losses_path(self.root) for u in self.baselines(dataset, pairset, collision_method, m)]

    def method_comparisons(self) -> dict[tuple, tuple[list[str], list[str]]]:
        """(dataset, pairset, model, m) -> (collision methods, their common layers), where two or
        more methods searched the same layers of a model at m."""
        found: dict[tuple, dict[str, list[str]]] = {}
        for (dataset, pairset, method, model), per_m in self.figure_layers.items():
            for m, layers in per_m.items():
                found.setdefault((dataset, pairset, model, m), {})[method] = layers
        out = {}
        for key, by_method in found.items():
            if len(by_method) < 2:
                continue
            first = next(iter(by_method.values()))
            common = [layer for layer in first if all(layer in ls for ls in by_method.values())]
            if common:
                out[key] = (sorted(by_method), common)
        return out

    def method_comparison_tables(self, dataset, pairset, model, m) -> list[str]:
        """Every compared method's loss tables of the common layers, and its input baseline."""
        key = (dataset, pairset, model, int(m))
        if key not in self.method_comparisons():
            raise ConfigError(f"no two collision methods searched the same layers of {model} at m={m}")
        methods, layers = self.method_comparisons()[key]
        tables = [self.unit(dataset, pairset, method, model, layer, m).losses_path(self.root)
                  for method in methods for layer in layers]
        return tables + [u.losses_path(self.root) for method in methods
                         for u in self.baselines(dataset, pairset, method, m) if u.layer == "input"]

    # the attack stage (robust accuracy tables; paper 001's FAB comparison)
    def attack_files(self, kind: str, model: str) -> str:
        """The robust-accuracy table (`attacks`) or its headline sidecar (`attacks_summary`) of a model."""
        if model not in self.attack_models:
            raise ConfigError(f"model {model!r} is not attacked (attacks.models)")
        return path(kind, self.root, dataset=self.specs[model].dataset, model=model)

    def fab_comparisons(self) -> list[tuple[str, str, str, str, int]]:
        """(dataset, pairset, collision method, model, m) of every FAB comparison figure: an
        attacked model whose logits layer has a loss table at m (paper 001, Figure 5)."""
        if not self.config["attacks"]["fab_comparison"]["enabled"]:
            return []
        out = []
        for (dataset, pairset, method, model), per_m in self.figure_layers.items():
            if model in self.attack_models:
                out += [(dataset, pairset, method, model, m) for m, layers in per_m.items() if "logits" in layers]
        return out

    def fab_comparison_inputs(self, dataset, pairset, collision_method, model, m) -> dict[str, str]:
        key = (dataset, pairset, collision_method, model, int(m))
        if key not in self.fab_comparisons():
            raise ConfigError(f"the config asks for no FAB comparison of {model} at m={m} (an attacked model with "
                              "layer logits and attacks.fab_comparison.enabled)")
        return {"points": path("fab_pairs", self.root, dataset=dataset, pairset=pairset, model=model),
                "table": self.unit(dataset, pairset, collision_method, model, "logits", m).losses_path(self.root),
                "metrics": self.model_file("metrics", model)}

    def attack_targets(self) -> list[str]:
        """Every robust-accuracy table with its sidecar, and the FAB comparisons' curves."""
        out = [self.attack_files(kind, model) for model in self.attack_models for kind in ("attacks", "attacks_summary")]
        for dataset, pairset, method, model, m in self.fab_comparisons():
            out.append(path("fab_curves", self.root, dataset=dataset, pairset=pairset, collision_method=method,
                            model=model, m=m))
        return out

    def figure_models(self) -> list[str]:
        return sorted({key[3] for key in self.figure_layers})

    # target lists
    def figure_targets(self) -> list[str]:
        """Every figure (PNG and PDF) and the report's summary the config asks for."""
        names = []
        for (dataset, pairset, method, model), per_m in self.figure_layers.items():
            where = {"dataset": dataset, "pairset": pairset, "collision_method": method, "model": model}
            for m in per_m:
                kinds = ["figure_layers", "figure_zero_one"] + (["figure_collisions"] if self.collision_figures else [])
                names += [path(kind, self.root, m=m, **where) for kind in kinds]
            if len(per_m) > 1 and self.m_sweep_layer(dataset, pairset, method, model) is not None:
                names.append(path("figure_m_sweep", self.root, **where))
        for dataset, pairset, method, arch, m in self.training_groups:
            names.append(path("figure_training_methods", self.root, dataset=dataset, pairset=pairset,
                              collision_method=method, arch=arch, m=m))
        for dataset, pairset, model, m in self.method_comparisons():
            names.append(path("figure_collision_methods", self.root, dataset=dataset, pairset=pairset, model=model, m=m))
        for dataset, pairset, method, model, m in self.fab_comparisons():
            names.append(path("figure_fab", self.root, dataset=dataset, pairset=pairset, collision_method=method,
                              model=model, m=m))
        targets = [f"{name}.{suffix}" for name in names for suffix in ("png", "pdf")]
        if self.figure_layers:
            targets += [path("report_html", self.root), path("report_csv", self.root)]
        return targets

    def all_targets(self) -> list[str]:
        # Every shard too: Snakemake does not redo a missing intermediate file whose products are
        # present, and a deleted (say, corrupt) shard must be recomputed and its merge redone.
        record = [path("run", self.root)]   # written first: the folder is this config's from then on
        checkpoints = [self.model_file("checkpoint", model) for model in self.specs]
        shards = [p for u in self.units.values() for p in u.shard_paths(self.root)]
        summary = [path("summary", self.root)] if self.units else []   # collision.models: [] searches nothing
        claims = [path("claims", self.root), path("claims_html", self.root)] if self.units else []
        return (record + checkpoints + shards + summary + claims + self.attack_targets() + self.figure_targets()
                + self.semirobust_targets())

    # paper 003's study
    def semirobust_runs(self) -> list[tuple[str, str, int]]:
        """(dataset, study, f_b size) of every Algorithm 1 run, in config order."""
        studies = self.config["semirobust"]["studies"]
        return [(self.specs[entry["robust"]].dataset, name, int(k)) for name, entry in studies.items()
                for k in entry["fb_layers"]]

    def semirobust_result(self, dataset: str, study: str, fb_layers: int | str) -> str:
        return path("semirobust", self.root, dataset=dataset, study=study, fb_layers=int(fb_layers))

    def semirobust_results(self, study: str | None = None) -> list[str]:
        return [self.semirobust_result(*run) for run in self.semirobust_runs() if study in (None, run[1])]

    def semirobust_inputs(self, dataset: str, study: str, fb_layers: int | str) -> dict[str, str]:
        """The checkpoints of one run: the robust model (f_a*, f_b*) and the regular one (f_a, f_b)."""
        if (dataset, study, int(fb_layers)) not in self.semirobust_runs():
            raise ConfigError(f"the config asks for no semirobust run {dataset}/{study}/fb{fb_layers}")
        entry = self.config["semirobust"]["studies"][study]
        return {"robust": self.model_file("checkpoint", entry["robust"]),
                "regular": self.model_file("checkpoint", entry["regular"])}

    def semirobust_fb_studies(self) -> list[str]:
        """Studies with two or more f_b sizes: each gets a Figure 2."""
        return [name for name, entry in self.config["semirobust"]["studies"].items() if len(entry["fb_layers"]) >= 2]

    def semirobust_targets(self) -> list[str]:
        if not self.semirobust_runs():
            return []
        figures = [path("figure_rho_studies", self.root)]
        figures += [path("figure_rho_fb", self.root, study=study) for study in self.semirobust_fb_studies()]
        return (self.semirobust_results() + [path("semirobust_table_csv", self.root), path("semirobust_table_html", self.root)]
                + [f"{name}.{suffix}" for name in figures for suffix in ("png", "pdf")])

    def wildcard_values(self) -> dict[str, list[str]]:
        """The values each wildcard may take (for Snakemake's wildcard_constraints)."""
        values = {"dataset": self.datasets, "model": sorted(set(self.specs) | {INPUT_MODEL}),
                  "pairset": [pairset_name(self.config)],
                  "collision_method": sorted({u.collision_method for u in self.units.values()}),
                  "layer": sorted({u.layer for u in self.units.values()}),
                  "m": sorted({str(u.m) for u in self.units.values()}),
                  "arch": sorted({key[3] for key in self.training_groups}),
                  "study": sorted(self.config["semirobust"]["studies"]),
                  "fb_layers": sorted({str(run[2]) for run in self.semirobust_runs()})}
        return values

    def _arch_group(self, model: str) -> str:
        # Models are compared when they share dataset and architecture (and padding, hence layers).
        spec = self.specs[model]
        return spec.arch if spec.padding in ("same", None) else f"{spec.arch}_{spec.padding}"

    def _training_groups(self) -> dict[tuple, list[str]]:
        """(dataset, pairset, collision method, arch group, m) -> models (benign, PGD, TRADES order), if >= 2."""
        groups: dict[tuple, list[str]] = {}
        for (dataset, pairset, method, model), per_m in self.figure_layers.items():
            if isinstance(self.specs[model], LoadedSpec):
                continue   # no training method to compare
            for m in per_m:
                groups.setdefault((dataset, pairset, method, self._arch_group(model), m), []).append(model)

        def order(model: str) -> tuple:
            train = self.specs[model].train
            return TRAINING_ORDER[train.method], train.eps, model
        return {key: sorted(models, key=order) for key, models in groups.items() if len(models) >= 2}

    def _collision_figures_enabled(self) -> bool:
        """Whether the merged files store colliding points, and the configured pair is among them."""
        if not self.units:
            return False
        keep = collision_options(self.config, self.config["collision"]["methods"][0]).keep_points
        if keep == 0:
            return False
        per_class = int(self.config["pairs"]["per_class"])
        pair, limit = int(self.config["figures"]["collision_pair"]), min(keep, per_class ** 2)
        if not 0 <= pair < limit:
            raise ConfigError(f"figures.collision_pair = {pair}, but the merged files store the colliding points of "
                              f"pairs 0..{limit - 1} only (collision.keep_points = {keep}, pairs.per_class = {per_class})")
        return True
