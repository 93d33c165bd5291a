"""Checkpoints: weights plus the architecture that made them, loadable with weights_only=True.

`<name>.pt` of a trained (registry) model holds {"format", "arch", "input_shape", "num_classes",
"padding", "state_dict"}; that of a loaded model (loaded.py) {"format": LOADED_FORMAT, "arch",
"input_shape", "num_classes", "source" (the source spec as JSON), "state_dict" (the network's own,
without the normalization, which the spec holds)}. `<name>.json` beside it is the metrics sidecar
(config, accuracies, wall time).

A checkpoint never chooses code. A registry network is rebuilt from layerbound's registry; a
loaded one from the caller's own model entry (`spec`: the config's validated entry, or the API
caller's), which the recorded spec must match. Without one, a record naming torchvision's
classification models or RobustBench's zoo is validated like a config entry and rebuilt from that
registry; a record naming a python factory is refused, since loading it would import and call
whatever `module:function` the file says. torch.load(weights_only=True) guards the unpickling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointMismatch, ConfigError, WriteError, first_line
from ..core.schema import fill_loaded_defaults
from ..core.store import atomic_write_buffered, write_text
from . import registry as models
from . import sources
from ..data import info as dataset_info
from .weights import load_tensors, non_finite, weights_mismatch

__all__ = ["FORMAT", "CheckpointMismatch", "sidecar_path", "save", "load", "load_metrics"]

FORMAT = "layerbound-checkpoint-1"
LOADED_FORMAT = "layerbound-loaded-checkpoint-1"


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save(path: str | Path, model: models.TappedNet, metrics: dict[str, Any]) -> None:
    path = Path(path)
    if not isinstance(model, models.TappedNet):
        return _save_loaded(path, model, metrics)
    payload = {
        "format": FORMAT,
        "arch": model.arch,
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "padding": model.padding,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    _write(path, payload, metrics)


def _write(path: Path, payload: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The checkpoint and its metrics sidecar, each written atomically; a checkpoint whose sidecar
    cannot be written is removed, so a new checkpoint never sits beside an old sidecar."""
    bad = non_finite(payload["state_dict"])
    if bad:
        raise CheckpointMismatch(f"not writing {path}: its weights are not finite ({bad}; a diverged training)")
    sidecar = json.dumps(metrics, indent=2, sort_keys=True) + "\n"   # before the checkpoint: it can fail too
    atomic_write_buffered(path, lambda buffer: torch.save(payload, buffer))
    try:
        write_text(sidecar_path(path), sidecar)
    except WriteError as err:
        path.unlink(missing_ok=True)
        raise WriteError(f"{err.args[0].removesuffix('; nothing was written')}; {path} was removed with it, so no "
                         "checkpoint is left without its sidecar") from None


def load(path: str | Path, expect: dict[str, Any] | None = None, map_location: str | torch.device = "cpu",
         spec: dict[str, Any] | None = None) -> models.TappedNet:
    """Rebuild the model from a checkpoint, in eval mode.

    `expect` may name any of arch, input_shape, num_classes, padding; a checkpoint that disagrees
    fails with a message naming the file and every differing field. `spec` is the model entry
    (sources.spec) of a loaded or source-trained network: it is rebuilt from `spec`, and the
    checkpoint must record the same (module docstring).
    """
    path = Path(path)
    try:
        payload = load_tensors(path, map_location)
    except FileNotFoundError:
        raise
    except Exception as err:   # a foreign pickle, a truncated file: refused without running any code
        raise CheckpointMismatch(f"{path} is not a loadable checkpoint ({type(err).__name__}): delete it (a workflow "
                                 "run then retrains it)") from None
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, LOADED_FORMAT):
        raise CheckpointMismatch(f"{path} is not a layerbound checkpoint (format {FORMAT!r})")
    stored = _header(path, payload)
    if expect:
        wanted = {k: (tuple(v) if k == "input_shape" else v) for k, v in expect.items()}
        diffs = [f"{k}: checkpoint has {stored[k]!r}, config asks for {v!r}" for k, v in wanted.items() if stored[k] != v]
        if diffs:
            raise CheckpointMismatch(f"checkpoint {path} does not match the configuration ({'; '.join(diffs)}): "
                                     "delete it (a workflow run then retrains it) or fix the config")
    if payload["format"] == LOADED_FORMAT:
        return _load_loaded(path, payload, spec)
    if spec is not None:
        from . import loaded

        raise CheckpointMismatch(f"checkpoint {path} holds the registry architecture {stored['arch']!r}, but the model "
                                 f"entry is {loaded.describe(spec)}: delete it (a workflow run then rebuilds it)")
    def build():
        return models.build(stored["arch"], stored["input_shape"], stored["num_classes"], stored["padding"])

    try:
        with torch.device("meta"):   # no memory: a crafted header cannot ask for more than the file holds
            skeleton = build()
    except (ValueError, TypeError, KeyError, RuntimeError) as err:
        raise CheckpointMismatch(f"checkpoint {path} records a network layerbound cannot build: "
                                 f"{first_line(err)}") from None
    _check_weights(path, payload["state_dict"], skeleton.state_dict(), f"the {stored['arch']!r} network it records")
    model = build()
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def _header(path: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """arch, input_shape, num_classes and padding as the checkpoint records them, checked as data."""
    shape, classes, arch = payload.get("input_shape"), payload.get("num_classes"), payload.get("arch")
    if (not isinstance(arch, str) or not isinstance(shape, (list, tuple)) or len(shape) != 3
            or not all(type(n) is int and n > 0 for n in shape) or type(classes) is not int or classes < 2
            or not isinstance(payload.get("state_dict"), dict)):
        raise CheckpointMismatch(f"{path} is not a layerbound checkpoint: its arch, input_shape (C, H, W), "
                                 "num_classes (>= 2) or state_dict is malformed")
    return {"arch": arch, "input_shape": tuple(shape), "num_classes": classes, "padding": payload.get("padding")}


def _check_weights(path: Path, state: dict[str, Any], expected: dict[str, torch.Tensor], what: str) -> None:
    """The checkpoint's weights: tensors with exactly `expected`'s keys and shapes, all finite."""
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatch(f"checkpoint {path}: its state_dict holds values that are not tensors")
    mismatch = weights_mismatch(state, expected)
    if mismatch:
        raise CheckpointMismatch(f"checkpoint {path} does not match {what}: {mismatch}")
    bad = non_finite(state)
    if bad:
        raise CheckpointMismatch(f"checkpoint {path} holds weights that are not finite ({bad}; a diverged training): "
                                 "delete it so it is retrained")


def _save_loaded(path: Path, model, metrics: dict[str, Any]) -> None:
    """A loaded model (loaded.LoadedNet): its source spec, to rebuild the architecture, and weights."""
    payload = {
        "format": LOADED_FORMAT,
        "arch": model.arch,
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "source": json.dumps(model.spec, sort_keys=True),
        "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
    }
    _write(path, payload, metrics)


# Where an entry's weights came from, not what its network is: the checkpoint holds the weights.
_WEIGHT_LOCATION = ("weights", "model_dir")


def _load_loaded(path: Path, payload: dict[str, Any], spec: dict[str, Any] | None):
    from . import loaded
    from ..core.errors import ModelLoadError

    recorded = _recorded_spec(path, payload)
    from_file = spec is None   # the file's own record: its network and header are not the caller's choice
    if spec is None:
        if recorded["source"] == "python":
            raise CheckpointMismatch(
                f"checkpoint {path} records the python factory {recorded.get('factory')!r}; a checkpoint never chooses "
                "the code that runs: load it with the model entry that names the factory (the config's models "
                "entry, or api.load_model(path, dataset, entry={...}))")
        spec = recorded
    _validate_spec(path, spec)
    difference = [f"{key}: the checkpoint has {recorded.get(key)!r}, the model entry {spec.get(key)!r}"
                  for key in sorted(set(recorded) | set(spec))
                  if key not in _WEIGHT_LOCATION and recorded.get(key) != spec.get(key)]
    if difference:
        raise CheckpointMismatch(f"checkpoint {path} was made from another model entry ({'; '.join(difference)}): "
                                 "delete it (a workflow run then rebuilds it) or fix the entry")
    header = _header(path, payload)
    meta = dataset_info.info(spec["dataset"])   # a validated entry names a known dataset
    if (header["input_shape"], header["num_classes"]) != (tuple(meta.input_shape), meta.num_classes):
        raise CheckpointMismatch(f"checkpoint {path} records input shape {header['input_shape']} and "
                                 f"{header['num_classes']} classes, not {spec['dataset']}'s {tuple(meta.input_shape)} "
                                 f"and {meta.num_classes}")

    def build():
        return loaded.build(spec, header["input_shape"], header["num_classes"], weights=False)

    def failed(err: Exception) -> CheckpointMismatch:
        if isinstance(err, ModelLoadError):
            return CheckpointMismatch(f"checkpoint {path}: {err}")
        return CheckpointMismatch(f"checkpoint {path}: {loaded.describe(spec)} cannot be built ({type(err).__name__}: "
                                  f"{first_line(err)})")

    def real_build():
        try:
            return build()
        except Exception as err:   # noqa: BLE001 - the entry's own code: one line naming the file
            raise failed(err) from None

    # On the meta device first (no memory: kwargs such as a huge width cannot allocate). A network
    # that needs real tensors to build (torchvision's RegNets, a factory that calls .item()) is
    # built for real instead, as planning does, but only from the caller's own entry: a spec the
    # file chose could otherwise make that build as large as it likes.
    try:
        with torch.device("meta"):
            skeleton, model = build(), None
    except Exception as err:   # noqa: BLE001 - any failure of the entry's code on meta
        if from_file:
            raise CheckpointMismatch(f"{failed(err)}; without the model entry only networks that build on the meta "
                                     "device load: give the entry (the config's, or api.load_model(path, dataset, "
                                     "entry={...}))") from None
        skeleton = model = real_build()
    _check_weights(path, payload["state_dict"], skeleton.net.state_dict(), loaded.describe(spec))
    model = model or real_build()
    model.net.load_state_dict(payload["state_dict"])
    return model.eval()


def _recorded_spec(path: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """The source spec a loaded checkpoint records, as data (nothing in it is run)."""
    try:
        recorded = json.loads(payload["source"])
    except (TypeError, ValueError):
        recorded = None
    if not isinstance(recorded, dict) or recorded.get("source") not in sources.SOURCES:
        raise CheckpointMismatch(f"checkpoint {path} records no model source layerbound knows "
                                 f"({', '.join(sources.SOURCES)})")
    return recorded


def _validate_spec(path: Path, spec: dict[str, Any]) -> None:
    """The checks of a config's loaded entry (schema, keys of its source, no download), on a spec."""
    try:
        entry = fill_loaded_defaults(dict(spec))
        sources.check_loaded("model entry", entry, files=False)
    except ConfigError as err:
        raise CheckpointMismatch(f"checkpoint {path}: {err}") from None


def load_metrics(path: str | Path) -> dict[str, Any]:
    return json.loads(sidecar_path(path).read_text())
