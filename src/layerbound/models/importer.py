"""Importing a loaded model: build it from its source, load and check its weights, measure its test
accuracy like a trained model's, and write the same checkpoint and metrics sidecar.

`import_model` reads top to bottom: build (loaded.build checks the weights against the
architecture), data, clean and PGD test accuracy (the evaluation of train.py: PGD with a random
start at the config's `evaluation` budget, as for benign models), checkpoint. Downstream (shards,
merge, losses, figures, report) the checkpoint is used like any other.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


from . import checkpoint, loaded
from ..core.provenance import compute, versions
from ..data import datasets as data
from .specs import EvalConfig, LoadedSpec
from ..core.device import describe as describe_device
from ..core.device import select as select_device
from ..core.store import file_digest
from .train import sidecar_accuracies


def job_from_dict(job: dict[str, Any]) -> tuple[int, LoadedSpec, EvalConfig]:
    """The (seed, spec, evaluation) of an import job (config.import_job)."""
    return int(job["seed"]), LoadedSpec(**job["model"]), EvalConfig(**job["evaluation"])


def import_model(spec: LoadedSpec, evaluation: EvalConfig, seed: int, out: str | Path, data_dir: str | Path = "data",
                 download: bool = False, device: str = "auto") -> dict[str, Any]:
    """Load model `spec`, evaluate it on its dataset's test split, write checkpoint and sidecar."""
    started = time.perf_counter()
    dev = select_device(device)
    meta = data.info(spec.dataset)
    model = loaded.build(spec.source, meta.input_shape, meta.num_classes).to(dev)   # checks the weights first
    print(describe_device(dev), file=sys.stderr, flush=True)
    print(f"{spec.name}: {loaded.describe(spec.source)} with weights "
          f"{spec.source.get('weights') or '(from its source)'}", file=sys.stderr, flush=True)
    x_test, y_test = (t.to(dev) for t in data.load(spec.dataset, "test", data_dir, download))

    widths = model.tap_widths()
    weights = spec.source.get("weights")
    metrics = {
        "model": spec.name,
        "dataset": spec.dataset,
        "arch": spec.arch,
        "source": spec.source,
        "weights_sha256": file_digest(weights) if weights else None,
        "seed": seed,
        **sidecar_accuracies(model, x_test, y_test, evaluation.norm, evaluation.eps, evaluation),
        # Figures and the report order layers by these (a loaded model is not in the registry).
        "tap_order": list(widths),
        "tap_widths": widths,
        "wall_time_s": time.perf_counter() - started,
        "device": str(dev),
        "versions": versions(),
        "compute": compute(),
    }
    checkpoint.save(out, model, metrics)
    return metrics
