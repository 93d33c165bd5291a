"""One run of paper 003's study: Algorithm 1 on two of the workflow's checkpoints, written as JSON.

`run(job, robust, regular, out)` takes the resolved job of `config.semirobust_job` (a study at one
f_b size: the attacks, the retraining settings, the image counts, the estimators), loads the robust
checkpoint (f_a*, f_b*) and the regular one (f_a, f_b), checks that both are the architecture and
dataset the config names, runs `semirobust.algorithm.retrain_semirobust` and writes
results/semirobust/{dataset}/{study}/fb{k}.json: Acc*, Acc_sr, every trial's accuracy per epoch, the
best trial, the difference and, per estimator, I_{j,t} of every trial, rho_j = min_t I_{j,t}
(Algorithm 1) and the best trial's I_{j,t} (what paper 003's Table 1 reports).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..core.provenance import compute, versions
from ..models import checkpoint
from ..data import datasets as data, info as dataset_info
from ..core.device import describe as describe_device
from ..core.device import select as select_device
from .mutual_info import EdgeOptions, revisions
from .algorithm import RetrainOptions, retrain_semirobust
from .attacks import attack_label, make_attack
from .layer_mi import layer_mi
from .split import split_last
from ..core.store import write_text


def _load(path: str | Path, job: dict[str, Any], dev: torch.device):
    meta = dataset_info.info(job["dataset"])
    net = checkpoint.load(path, expect={"arch": job["arch"], "input_shape": meta.input_shape,
                                        "num_classes": meta.num_classes}, spec=job.get("source"))
    return net.to(dev)


def run(job: dict[str, Any], robust_path: str | Path, regular_path: str | Path, out: str | Path,
        data_dir: str | Path = "data", download: bool = False, device: str | None = "auto",
        progress: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    dev = select_device(device)
    print(describe_device(dev), file=sys.stderr, flush=True)
    robust, regular = _load(robust_path, job, dev), _load(regular_path, job, dev)
    split = split_last(robust, int(job["fb_layers"]))

    x_train, y_train = data.load(job["dataset"], "train", data_dir, download)
    x_test, y_test = data.load(job["dataset"], "test", data_dir, download)
    n_train = len(x_train) if job["train_examples"] is None else min(int(job["train_examples"]), len(x_train))
    n_test = min(int(job["test_examples"]), len(x_test))
    train = (x_train[:n_train].to(dev), y_train[:n_train].to(dev))
    test = (x_test[:n_test].to(dev), y_test[:n_test].to(dev))

    retrain = job["retrain"]
    options = RetrainOptions(trials=retrain["trials"], epochs=retrain["epochs"], k=retrain["tolerance"],
                             lr=retrain["lr"], momentum=retrain["momentum"], weight_decay=retrain["weight_decay"],
                             batch_size=retrain["batch_size"])
    edge_options = EdgeOptions(**job["edge"])
    estimators = list(job["estimators"])

    def mi(net, split_, x_adv, y):
        # One I_{j,t} per estimator and layer pair, keyed "estimator:tap" (retrain_semirobust takes the
        # minimum over trials key by key).
        values = {}
        for estimator in estimators:
            per_tap = layer_mi(net, split_, x_adv, y, estimator, seed=int(job["seed"]), edge_options=edge_options)
            values.update({f"{estimator}:{tap}": v for tap, v in per_tap.items()})
        return values

    result = retrain_semirobust(robust, regular, split, train, test, make_attack(job["train_attack"]),
                        make_attack(job["eval_attack"]), options, seed=int(job["seed"]), mi=mi, progress=progress)

    def by_estimator(values: dict[str, float]) -> dict[str, dict[str, float]]:
        return {e: {key.split(":", 1)[1]: v for key, v in values.items() if key.startswith(f"{e}:")} for e in estimators}

    labels = y_test.cpu()
    record = {
        "study": job["study"], "dataset": job["dataset"], "arch": job["arch"], "robust": job["robust"],
        "regular": job["regular"], "fb_layers": int(job["fb_layers"]),
        "f_a": list(split.f_a_taps), "f_b": list(split.f_b_taps),
        "layer_pairs": [list(p) for p in split.layer_pairs()],
        "tolerance": result.k, "acc_star": result.acc_star, "acc_sr": result.acc_sr,
        "best_trial": result.best, "best_accuracy": result.best_accuracy, "difference": result.difference,
        "reached": any(t.reached for t in result.trials),
        "trials": [{"accuracies": t.accuracies, "reached": t.reached, "mi": by_estimator(t.mi)} for t in result.trials],
        "rho": by_estimator(result.rho), "rho_best": by_estimator(result.rho_best),
        "estimators": estimators, "estimator_revisions": revisions(estimators),
        "train_attack": {**job["train_attack"], "label": attack_label(job["train_attack"])},
        "eval_attack": {**job["eval_attack"], "label": attack_label(job["eval_attack"])},
        "train_examples": n_train, "test_examples": n_test,
        "test_per_class": {int(c): int(n) for c, n in zip(*torch.unique(labels[:n_test], return_counts=True))},
        "job": job,
        "checkpoints": {"robust": str(robust_path), "regular": str(regular_path)},
        "wall_time_s": time.perf_counter() - started,
        "retraining_epochs": sum(len(t.accuracies) for t in result.trials),
        "device": str(dev),
        "versions": versions(),
        "compute": compute(),
    }
    text = json.dumps(record, indent=2, sort_keys=True)
    write_text(out, text + "\n")
    return record


def read(path: str | Path) -> dict[str, Any]:
    """A study result written by `run`; a file that is not one fails naming it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a semirobust study result (invalid JSON: {err.msg})") from None
    missing = {"study", "fb_layers", "acc_star", "acc_sr", "best_accuracy", "rho_best", "f_b"} - set(record)
    if missing:
        raise ValueError(f"{path} is not a semirobust study result (missing {', '.join(sorted(missing))})")
    return record
