"""Checkpoints: weights plus the architecture that made them, loadable with weights_only=True.

`<name>.pt` holds {"format", "arch", "input_shape", "num_classes", "padding", "state_dict"};
`<name>.json` beside it is the metrics sidecar (config, accuracies, wall time).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from . import models

FORMAT = "layerbound-checkpoint-1"


class CheckpointMismatch(ValueError):
    """A checkpoint does not hold the architecture the configuration asks for."""


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save(path: str | Path, model: models.TappedNet, metrics: dict[str, Any]) -> None:
    path = Path(path)
    payload = {
        "format": FORMAT,
        "arch": model.arch,
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "padding": model.padding,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_write_bytes(path, lambda tmp: torch.save(payload, tmp))
    text = json.dumps(metrics, indent=2, sort_keys=True)
    atomic_write_bytes(sidecar_path(path), lambda tmp: tmp.write_text(text + "\n"))


def load(path: str | Path, expect: dict[str, Any] | None = None, map_location: str | torch.device = "cpu") -> models.TappedNet:
    """Rebuild the model from a checkpoint, in eval mode.

    `expect` may name any of arch, input_shape, num_classes, padding; a checkpoint that disagrees
    fails with a message naming the file and every differing field.
    """
    path = Path(path)
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointMismatch(f"{path} is not a layerbound checkpoint (format {FORMAT!r})")
    stored = {"arch": payload["arch"], "input_shape": tuple(payload["input_shape"]),
              "num_classes": int(payload["num_classes"]), "padding": payload["padding"]}
    if expect:
        wanted = {k: (tuple(v) if k == "input_shape" else v) for k, v in expect.items()}
        diffs = [f"{k}: checkpoint has {stored[k]!r}, config asks for {v!r}" for k, v in wanted.items() if stored[k] != v]
        if diffs:
            raise CheckpointMismatch(f"checkpoint {path} does not match the configuration:\n  " + "\n  ".join(diffs)
                                     + "\n  delete it (or fix the config) so Snakemake retrains it")
    model = models.build(stored["arch"], stored["input_shape"], stored["num_classes"], stored["padding"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def load_metrics(path: str | Path) -> dict[str, Any]:
    return json.loads(sidecar_path(path).read_text())


def file_digest(path: str | Path) -> str:
    """sha256 of a file, recorded in downstream outputs so a stale result is detectable."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
