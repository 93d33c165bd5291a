"""Training: benign, Madry PGD (l2 / linf) and TRADES, with SGD momentum and a cosine schedule.

The network is a registry architecture, or a torchvision / python one (`source`, loaded.build without
weights) trained from scratch; both write the usual checkpoint and sidecar.

One function, `train_model`, reads top to bottom: seed, data, model, epochs (inner maximization,
outer step), evaluation, checkpoint. Configuration is a plain dataclass.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import adversary, checkpoint, registry as models
from ..core.provenance import compute, versions
from ..data import datasets as data
from ..core import seeds
from ..core.errors import TrainingDiverged
from .specs import EvalConfig, ModelSpec, TrainConfig
from ..core.device import describe as describe_device
from ..core.device import select as select_device

def model_seed(experiment_seed: int, model: str) -> int:
    """The seed of model `model`'s initialization, batch order and attack noise."""
    return seeds.derive(f"{int(experiment_seed)}/train/{model}")


def cosine_lr(base: float, step: int, total: int) -> float:
    return 0.5 * base * (1.0 + math.cos(math.pi * step / max(total, 1)))


def _training_loss(model, x, y, cfg: TrainConfig, generator, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Outer loss for one batch at budget eps, and the logits on which training accuracy is counted."""
    if cfg.method == "benign" or eps == 0:
        model.train()
        logits = model(x)
        return F.cross_entropy(logits, y), logits
    model.eval()  # the inner maximization runs in eval mode (as the TRADES reference does)
    step_size = cfg.step_size * eps / cfg.eps
    if cfg.method == "pgd":
        x_adv = adversary.pgd(model, x, y, cfg.norm, eps, cfg.steps, step_size, generator=generator)
        model.train()
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits
    x_adv = adversary.trades_kl(model, x, cfg.norm, eps, cfg.steps, step_size, generator=generator)
    model.train()
    logits = model(x)
    kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="sum")
    return F.cross_entropy(logits, y) + cfg.beta * kl / len(x), logits


def sidecar_accuracies(model: torch.nn.Module, x_test: torch.Tensor, y_test: torch.Tensor, norm: str, eps: float,
                       evaluation: EvalConfig) -> dict[str, Any]:
    """A checkpoint's sidecar accuracies: clean on the whole test split, and under PGD (random start,
    `evaluation.steps` steps of 2.5 eps / steps) at (norm, eps) on its first `evaluation.examples`."""
    n_eval = min(evaluation.examples, len(x_test))
    return {
        "clean_test_accuracy": adversary.accuracy(model, x_test, y_test),
        "test_examples": len(x_test),
        "robust_test_accuracy": adversary.robust_accuracy(model, x_test[:n_eval], y_test[:n_eval], norm, eps,
                                                          evaluation.steps),
        "robust_eval": {"attack": "pgd", "norm": norm, "eps": eps, "steps": evaluation.steps,
                        "step_size": 2.5 * eps / evaluation.steps, "random_start": True, "examples": n_eval},
    }


def train_model(spec: ModelSpec, evaluation: EvalConfig, seed: int, out: str | Path,
                data_dir: str | Path = "data", download: bool = False, device: str = "auto",
                progress: bool = True) -> dict[str, Any]:
    """Train one model and write its checkpoint and metrics sidecar; returns the metrics."""
    started = time.perf_counter()
    cfg = spec.train
    dev = select_device(device)
    print(describe_device(dev), file=sys.stderr, flush=True)
    init_seed = model_seed(seed, spec.name)
    torch.manual_seed(init_seed)
    generator = torch.Generator(device=dev).manual_seed(init_seed)

    meta = data.info(spec.dataset)
    x_train, y_train = data.load(spec.dataset, "train", data_dir, download)
    x_test, y_test = data.load(spec.dataset, "test", data_dir, download)
    x_train, y_train, x_test, y_test = (t.to(dev) for t in (x_train, y_train, x_test, y_test))

    if spec.source is None:
        model = models.build(spec.arch, meta.input_shape, meta.num_classes, spec.padding).to(dev)
    else:   # a torchvision (or python) architecture from scratch: its own initialization, seeded above
        from . import loaded

        model = loaded.build(spec.source, meta.input_shape, meta.num_classes, weights=False).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    batches_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total_steps = cfg.epochs * batches_per_epoch
    shuffle = torch.Generator().manual_seed(init_seed)

    history = []
    step = 0
    bar = tqdm(total=total_steps, desc=f"train {spec.name} ({cfg.method})", unit="batch",
               disable=not progress, mininterval=2.0, dynamic_ncols=True)
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=shuffle).to(dev)
        loss_sum, correct = 0.0, 0
        for b in range(batches_per_epoch):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x, y = x_train[idx], y_train[idx]
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(cfg.lr, step, total_steps)
            eps = cfg.budget_at(step / batches_per_epoch)
            loss, logits = _training_loss(model, x, y, cfg, generator, eps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.item() * len(x)
            correct += (logits.argmax(1) == y).sum().item()
            bar.update(1)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / len(x_train), "train_accuracy": correct / len(x_train)})
        if not math.isfinite(history[-1]["train_loss"]):
            raise TrainingDiverged(f"training {spec.name} diverged: its loss is {history[-1]['train_loss']} in epoch "
                                   f"{epoch + 1} (lr {cfg.lr}); lower the learning rate (no checkpoint written)")
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", acc=f"{history[-1]['train_accuracy']:.3f}")
    bar.close()

    model.eval()
    source_fields = {}
    if spec.source is not None:
        # Not a registry network: figures and the report order its layers by these (as an import's).
        widths = model.tap_widths()
        source_fields = {"source": spec.source, "tap_order": list(widths), "tap_widths": widths}
    eval_eps = cfg.eps if cfg.method != "benign" else evaluation.eps
    eval_norm = cfg.norm if cfg.method != "benign" else evaluation.norm
    metrics = {
        "model": spec.name,
        "dataset": spec.dataset,
        "arch": spec.arch,
        "padding": spec.padding,
        "train": asdict(cfg),
        "seed": seed,
        "model_seed": init_seed,
        **sidecar_accuracies(model, x_test, y_test, eval_norm, eval_eps, evaluation),
        "history": history,
        **source_fields,
        "wall_time_s": time.perf_counter() - started,
        "device": str(dev),
        "versions": versions(),
        "compute": compute(),
    }
    checkpoint.save(out, model, metrics)
    return metrics
