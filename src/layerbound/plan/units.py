"""From a validated configuration to the collision stage's units: which models, taps, m, methods
and baselines it asks for, each with its projections and chunks; errors name the bad key."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .. import collide
from ..collide.units import Unit, is_projected, num_chunks, projections_for
from ..core.errors import ConfigError, LayerboundError
from ..core.names import INPUT_MODEL
from ..data import info as dataset_info
from ..models import architectures, sources


def model_source(specs: dict[str, Any], model: str) -> dict[str, Any] | None:
    """The model entry (sources.spec) that rebuilds a loaded or source-trained model's network from
    its checkpoint; None for registry models and `input`. `specs`: config.model_specs."""
    return None if model == INPUT_MODEL else specs[model].source


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
