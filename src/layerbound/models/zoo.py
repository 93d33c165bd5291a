"""RobustBench's model zoo: where a zoo model's weights live and whether a `source: robustbench`
entry can load. No torch: the config checks it at planning, the loader before building the network.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROBUSTBENCH_DATASETS = ("cifar10", "cifar100")   # of ours; RobustBench also has imagenet


def robustbench_weights(entry: dict[str, Any]) -> Path:
    """Where RobustBench keeps a zoo model's weights: {model_dir}/{dataset}/{threat_model}/{arch}.pt."""
    return Path(entry.get("model_dir", "models")) / entry["dataset"] / entry["threat_model"] / f"{entry['arch']}.pt"


def robustbench_missing(entry: dict[str, Any], weights: bool = True) -> str | None:
    """None when a RobustBench entry can load (its package, and with `weights` its weights file,
    present), else one line saying what to install or fetch."""
    dataset = entry["dataset"]
    if dataset not in ROBUSTBENCH_DATASETS:
        return f"RobustBench's zoo has {' and '.join(ROBUSTBENCH_DATASETS)} models (and imagenet ones), not {dataset} ones"
    path = robustbench_weights(entry)
    fetch = (f"fetch its weights to {path} on a machine with internet (python -c \"from robustbench.utils import "
             f"load_model; load_model(model_name='{entry['arch']}', dataset='{dataset}', "
             f"threat_model='{entry['threat_model']}', model_dir='{entry.get('model_dir', 'models')}')\") and copy "
             "them here; layerbound never downloads weights")
    missing_weights = weights and not path.is_file()
    if importlib.util.find_spec("robustbench") is None:
        return ("source robustbench needs the optional package robustbench (pip install robustbench; layerbound does "
                "not depend on it)" + (f", and {fetch}" if missing_weights else ""))
    if missing_weights:
        return f"RobustBench weights {path} are missing: {fetch}"
    return None
