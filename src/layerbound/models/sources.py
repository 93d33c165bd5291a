"""Models the workflow loads instead of training: what planning needs to know about them.

A config entry under `models:` with a `source` key is loaded, not trained:

    source: torchvision   arch: resnet18, weights: file.pt, optional small_inputs, kwargs
    source: python        factory: "module:function" (returns an nn.Module), optional kwargs, weights
    source: robustbench   arch: the zoo name, threat_model; weights from model_dir (optional package)

plus, for every source, optional `normalization: {mean, std}` (applied inside the model, so budgets
stay in pixel space) and `taps` (what `collision.layers: all` means). `spec(entry)` is the part of
an entry that decides the network's function: the import job's parameter and what a checkpoint
stores to rebuild the model. Layer names and widths need the network itself: `tap_table` builds
it once per process (without its weights, on PyTorch's meta device where it can) in the lazily
imported `loaded` module, so a config with only registry models plans without importing torch.
`check_loaded` holds the checks of a loaded entry that need no torch (the config's validation and
a checkpoint's recorded spec both run them).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..data import info as dataset_info
from . import zoo

SOURCES = ("torchvision", "python", "robustbench")
# The keys of a loaded entry that decide its network, per source (the rest: taps).
SPEC_KEYS = {
    "torchvision": ("dataset", "source", "arch", "kwargs", "weights", "small_inputs", "normalization"),
    "python": ("dataset", "source", "factory", "kwargs", "weights", "normalization"),
    "robustbench": ("dataset", "source", "arch", "threat_model", "model_dir", "normalization"),
}


def is_loaded(entry: dict[str, Any]) -> bool:
    """Whether a `models:` entry is loaded (has a `source`) rather than trained."""
    return "source" in entry


def spec(entry: dict[str, Any]) -> dict[str, Any]:
    """The keys of a loaded entry that decide its network, as plain JSON-able data."""
    return {k: entry[k] for k in SPEC_KEYS[entry["source"]] if k in entry}


def display_arch(entry: dict[str, Any]) -> str:
    """The architecture's name in titles and checkpoints: the registry, torchvision or zoo name, or
    the factory."""
    return entry.get("arch") or entry["factory"]


@lru_cache(maxsize=None)
def _tap_table(spec_json: str, input_shape: tuple[int, int, int], num_classes: int) -> tuple[tuple[str, int, bool], ...]:
    from . import loaded  # imports torch: only configs with loaded models pay for it

    return tuple(loaded.tap_table(json.loads(spec_json), input_shape, num_classes))


def tap_table(entry: dict[str, Any]) -> list[tuple[str, int, bool]]:
    """(name, width n_j, top-level) for every usable layer of a loaded model, in network order."""
    meta = dataset_info.info(entry["dataset"])
    return list(_tap_table(json.dumps(spec(entry), sort_keys=True), tuple(meta.input_shape), meta.num_classes))


@lru_cache(maxsize=None)
def _weight_layers(spec_json: str, input_shape: tuple[int, int, int], num_classes: int) -> tuple[str, ...]:
    from . import loaded

    return tuple(loaded.spec_weight_layers(json.loads(spec_json), input_shape, num_classes))


def weight_layers(entry: dict[str, Any]) -> list[str]:
    """The conv and linear modules of a loaded (or source-trained) model in execution order: what
    paper 003's `fb_layers` counts from the output."""
    meta = dataset_info.info(entry["dataset"])
    return list(_weight_layers(json.dumps(spec(entry), sort_keys=True), tuple(meta.input_shape), meta.num_classes))


def tap_widths(entry: dict[str, Any]) -> dict[str, int]:
    """n_j of every usable layer name of a loaded model, in network order."""
    return {name: width for name, width, _ in tap_table(entry)}


def default_taps(entry: dict[str, Any]) -> list[str]:
    """What `collision.layers: all` means for a loaded model: its `taps`, else the outputs of its
    top-level submodules (for a torchvision ResNet: conv1, bn1, relu, maxpool, layer1..4, avgpool, fc)."""
    if entry.get("taps"):
        return list(entry["taps"])
    return [name for name, _, top in tap_table(entry) if top]


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
