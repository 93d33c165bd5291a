"""The plan: from a validated configuration to units of work, their files, and the figures.

This is the one place that says which files the workflow makes and where: PATTERNS holds one path
pattern per kind of output, used by the Snakemake rules and by the package alike. `Plan(config)`
lists every merged distance file (a `Unit`: one model, layer and m, with its shards), every
figure and every target. It imports neither torch nor matplotlib, so the workflow parses in a
second or two.

A `Unit` is one (dataset, pair set, collision method, model, layer, m). Model `input` is the
input-space baseline, with two layers: `input` (no projection, d = ||x - x'||/2; its files exist
at every configured m, with a single projection) and `input_rp` (the input projected to m
dimensions). A layer with m >= n_j is not projected either and has a single projection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from .. import collide, projection
from ..models import architectures, sources
from ..data import info as dataset_info
from ..config import LoadedSpec, attack_models, model_specs
from ..core.errors import ConfigError, LayerboundError
from ..core.names import INPUT_LAYERS, INPUT_MODEL

RESULTS = "results"
# Order of the training methods in comparisons and legends.
TRAINING_ORDER = {"benign": 0, "pgd": 1, "trades": 2}

# One path pattern per kind of output, relative to the results folder. Figures have no suffix:
# each is written as .png and .pdf.
_FIGURES = "figures/{dataset}/{pairset}/{collision_method}"
PATTERNS = {
    "run": "run.json",   # which config file owns the folder (startup.py)
    "checkpoint": "models/{dataset}/{model}.pt",
    "metrics": "models/{dataset}/{model}.json",
    "pairs": "pairs/{dataset}/{pairset}.h5",
    "shard": "shards/{dataset}/{pairset}/{collision_method}/{model}/{layer}/m{m}/p{p}/c{chunk}.h5",
    "distances": "distances/{dataset}/{pairset}/{collision_method}/{model}/{layer}/m{m}.h5",
    "losses": "losses/{dataset}/{pairset}/{collision_method}/{model}/{layer}/m{m}.csv",
    "summary": "summary.csv",
    "figure_layers": _FIGURES + "/layers/{model}/m{m}",
    "figure_zero_one": _FIGURES + "/zero_one/{model}/m{m}",
    "figure_collisions": _FIGURES + "/collisions/{model}/m{m}",
    "figure_m_sweep": _FIGURES + "/m_sweep/{model}",
    "figure_training_methods": _FIGURES + "/training_methods/{arch}/m{m}",
    "figure_collision_methods": "figures/{dataset}/{pairset}/collision_methods/{model}/m{m}",
    "attacks": "attacks/{dataset}/{model}.csv",
    "attacks_summary": "attacks/{dataset}/{model}.json",
    "fab_pairs": "attacks/{dataset}/{pairset}/fab/{model}.csv",
    "fab_curves": "attacks/{dataset}/{pairset}/{collision_method}/fab_vs_collision/{model}/m{m}.csv",
    "figure_fab": _FIGURES + "/fab/{model}/m{m}",
    "report_html": "report/layer_summary.html",
    "report_csv": "report/layer_summary.csv",
    # The papers' findings tested on the run (layerbound.bounds.claims, docs/claims.md).
    "claims_job": "claims_job.json",
    "claims": "claims.csv",
    "claims_html": "report/claims.html",
    # Paper 003: one Algorithm 1 run per (study, f_b size), Table 1, Figures 1-2.
    "semirobust": "semirobust/{dataset}/{study}/fb{fb_layers}.json",
    "semirobust_table_csv": "semirobust/table1.csv",
    "semirobust_table_html": "semirobust/table1.html",
    "figure_rho_studies": "figures/semirobust/rho_by_study",
    "figure_rho_fb": "figures/semirobust/rho_by_fb/{study}",
}


def pattern(kind: str, root: str | os.PathLike = RESULTS, under: str = "", suffix: str | None = None) -> str:
    """The path pattern of an output kind; `under="logs", suffix=".log"` gives its job log's."""
    rel = PATTERNS[kind]
    if suffix is not None:
        rel = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
        rel += suffix
    return "/".join(str(p) for p in (root, under, rel) if p)


def path(kind: str, root: str = RESULTS, **wildcards: Any) -> str:
    return pattern(kind, root).format(**wildcards)


def results_root(given: str | None, config: dict[str, Any] | None) -> str:
    """The results folder of a command: the one given (--results), else the config's, else RESULTS."""
    return os.path.normpath(given or (config["results"] if config else RESULTS))


def model_source(specs: dict[str, Any], model: str) -> dict[str, Any] | None:
    """The model entry (sources.spec) that rebuilds a loaded or source-trained model's network from
    its checkpoint; None for registry models and `input`. `specs`: config.model_specs."""
    return None if model == INPUT_MODEL else specs[model].source


# --- units of work ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class UnitKey:
    """What names a merged distance file: (dataset, pair set, collision method, model, layer, m)."""

    dataset: str
    pairset: str
    collision_method: str
    model: str
    layer: str
    m: int

    @property
    def key(self) -> tuple[str, str, str, str, str, int]:
        return self.dataset, self.pairset, self.collision_method, self.model, self.layer, self.m


@dataclass(frozen=True)
class Shard(UnitKey):
    """One job of the collision stage: the pairs of one chunk, one projection, of one Unit."""

    projection: int = 0
    chunk: int = 0

    def path(self, root: str = RESULTS) -> str:
        return path("shard", root, p=self.projection, **_fields(self, exclude=("projection",)))


@dataclass(frozen=True)
class Unit(UnitKey):
    """One merged distance file and the shards that make it."""

    n_j: int = 0
    projections: int = 1
    chunks: int = 1
    arch: str | None = None

    def shards(self) -> list[Shard]:
        return [Shard(*self.key, p, c) for p in range(self.projections) for c in range(self.chunks)]

    def shard_paths(self, root: str = RESULTS) -> list[str]:
        return [s.path(root) for s in self.shards()]

    def merged_path(self, root: str = RESULTS) -> str:
        return path("distances", root, **_fields(self))

    def losses_path(self, root: str = RESULTS) -> str:
        return path("losses", root, **_fields(self))


def _fields(obj: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__ if k not in exclude}


def num_chunks(num_pairs: int, chunk_size: int) -> int:
    return -(-int(num_pairs) // int(chunk_size))


def is_projected(model: str, layer: str, m: int, n_j: int) -> bool:
    if model == INPUT_MODEL and layer == "input":
        return False
    return not projection.is_identity(m, n_j)


def projections_for(model: str, layer: str, m: int, n_j: int, projections: int) -> int:
    """The number of distinct projections of a layer: one when it is not projected."""
    return int(projections) if is_projected(model, layer, m, n_j) else 1


def pairset_name(config: dict[str, Any]) -> str:
    return dataset_info.pairset_id(config["pairs"]["classes"], config["pairs"]["per_class"], config["seed"])


def collision_options(config: dict[str, Any], collision_method: str) -> collide.CollisionOptions:
    return collide.CollisionOptions.from_config(config["collision"], collision_method)


def tap_widths(entry: dict[str, Any]) -> dict[str, int]:
    """n_j of every tap of a configured model: a registry model's post-activation taps first, then
    its `_pre` taps; a loaded model's layer names in network order (sources.py builds it once)."""
    if sources.is_loaded(entry):
        return sources.tap_widths(entry)
    meta = dataset_info.info(entry["dataset"])
    return architectures.tap_widths(entry["arch"], meta.input_shape, meta.num_classes, entry.get("padding", "same"))


def model_taps(name: str, entry: dict[str, Any]) -> tuple[list[str], dict[str, int]]:
    """What `layers: all` means for a configured model, and the widths of all its taps; a loaded
    model that cannot be built fails in one line naming its key."""
    try:
        widths = tap_widths(entry)
        if not sources.is_loaded(entry):
            return [t for t in widths if not t.endswith("_pre")], widths
        taps = sources.default_taps(entry)
    except LayerboundError as err:
        raise ConfigError(f"models.{name}: {err}") from None
    unknown = [t for t in taps if t not in widths]
    if unknown:
        raise ConfigError(f"models.{name}.taps: {sources.display_arch(entry)} has no layer {unknown[0]!r}; "
                          f"`layerbound taps {name} --configfile ...` lists its layer names")
    return taps, widths


def network_taps(config: dict[str, Any], name: str) -> list[str]:
    """A configured model's taps in network order (the order of figures and tables)."""
    entry = config["models"][name]
    if sources.is_loaded(entry):
        return list(model_taps(name, entry)[1])
    return architectures.tap_names(entry["arch"])


def eps_grid(spec: Any) -> np.ndarray:
    """Sorted distinct budgets from `losses.eps`: {start, stop, num} (inclusive linspace) or a list."""
    if isinstance(spec, dict):
        missing = {"start", "stop", "num"} - set(spec)
        if missing:
            raise ValueError(f"eps grid needs start, stop and num; missing {sorted(missing)}")
        num = int(spec["num"])
        if num < 1 or num != spec["num"]:
            raise ValueError(f"eps grid num must be a positive integer, got {spec['num']!r}")
        grid = np.linspace(float(spec["start"]), float(spec["stop"]), num)
    else:
        grid = np.atleast_1d(np.asarray(spec, dtype=np.float64))
        if grid.ndim != 1 or grid.size == 0:
            raise ValueError(f"eps grid must be a non-empty list of numbers, got {spec!r}")
    if not np.isfinite(grid).all() or (grid < 0).any():
        raise ValueError(f"eps values must be finite and non-negative, got {grid}")
    return np.unique(grid)


def units(config: dict[str, Any]) -> list[Unit]:
    """Every merged file the configuration asks for (models x layers x m x collision methods, plus
    the input baselines of each dataset), with its projections and chunks; errors name the bad key."""
    collision = config["collision"]
    pairset = pairset_name(config)
    methods = collision["methods"]
    chunk_size = collision_options(config, methods[0]).chunk_size
    chunks = num_chunks(int(config["pairs"]["per_class"]) ** 2, chunk_size)
    P = int(collision["projections"])
    out: list[Unit] = []
    datasets: list[str] = []
    seen: set[tuple] = set()
    # The main grid, then the extra (models, layers, m) of `sweeps` (e.g. the first layer for
    # several m, paper 001 Figure 6); a unit asked for twice is planned once.
    grids = [collision] + [{"models": "all", "layers": "all", **sweep} for sweep in collision["sweeps"]]
    wheres = ["collision"] + [f"collision.sweeps[{i}]" for i in range(len(grids) - 1)]
    for where, grid in zip(wheres, grids):
        names = list(config["models"]) if grid["models"] == "all" else list(grid["models"])
        for name in names:
            if name not in config["models"]:
                raise ConfigError(f"{where}.models names {name!r}, which is not a key of models:")
            entry = config["models"][name]
            taps, widths = model_taps(name, entry)
            layers = taps if grid["layers"] == "all" else list(grid["layers"])
            loaded = sources.is_loaded(entry)
            for layer in layers:
                if layer not in widths:
                    listed = (f"`layerbound taps {name} --configfile ...` lists its layer names" if loaded
                              else f"taps: {', '.join(widths)}")
                    raise ConfigError(f"{where}.layers: model {name!r} ({sources.display_arch(entry)}) has no tap "
                                      f"{layer!r}; {listed}")
            if entry["dataset"] not in datasets:
                datasets.append(entry["dataset"])
            for method in methods:
                for layer in layers:
                    for m in (int(m) for m in grid.get("m", collision["m"])):
                        if (method, name, layer, m) in seen:
                            continue
                        seen.add((method, name, layer, m))
                        if loaded and method == "polytope":
                            raise ConfigError(f"{where}: method polytope needs a registry network's affine stages; "
                                              f"model {name!r} is loaded (source {entry['source']}): use method jacobian")
                        if collide.METHODS[method].unprojected_only and is_projected(name, layer, m, widths[layer]):
                            raise ConfigError(f"{where}: method {method} searches unprojected maps only (paper 002), "
                                              f"but {name}/{layer} has n_j = {widths[layer]} > m = {m}; set m >= "
                                              f"{widths[layer]} for it or use method jacobian")
                        out.append(Unit(entry["dataset"], pairset, method, name, layer, m, widths[layer],
                                        projections_for(name, layer, m, widths[layer], P), chunks,
                                        sources.display_arch(entry)))
    for dataset in datasets:
        n0 = int(np.prod(dataset_info.info(dataset).input_shape))
        for method in methods:
            for layer in collision["baselines"]:
                for m in (int(m) for m in collision["m"]):
                    if collide.METHODS[method].unprojected_only and is_projected(INPUT_MODEL, layer, m, n0):
                        continue   # no projected input baseline for a method of unprojected maps
                    out.append(Unit(dataset, pairset, method, INPUT_MODEL, layer, m, n0,
                                    projections_for(INPUT_MODEL, layer, m, n0, P), chunks))
    return out


def find_unit(all_units: Iterable[Unit], dataset: str, pairset: str, collision_method: str, model: str,
              layer: str, m: int | str) -> Unit:
    key = (dataset, pairset, collision_method, model, layer, int(m))
    for u in all_units:
        if u.key == key:
            return u
    raise ConfigError(f"the configuration asks for no distances of {'/'.join(map(str, key[:5]))}/m{m}")


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
