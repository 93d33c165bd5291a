"""Training: benign, Madry PGD (l2 / linf) and TRADES, with SGD momentum and a cosine schedule.

One function, `train_model`, reads top to bottom: seed, data, model, epochs (inner maximization,
outer step), evaluation, checkpoint. Configuration is a plain dataclass.
"""

from __future__ import annotations

import hashlib
import math
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import __version__, adversary, checkpoint, data, models
from .device import select as select_device

METHODS = ("benign", "pgd", "trades")


@dataclass
class TrainConfig:
    method: str = "benign"
    epochs: int = 6
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    norm: str = "l2"
    eps: float = 0.0
    steps: int = 10
    step_size: float | None = None  # default 2.5 eps / steps
    beta: float = 6.0               # TRADES trade-off
    warmup_epochs: float = 0.0      # eps grows linearly from 0 over these epochs (then stays at eps)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"training method must be one of {METHODS}, not {self.method!r}")
        if self.norm not in adversary.NORMS:
            raise ValueError(f"norm must be one of {adversary.NORMS}, not {self.norm!r}")
        if self.method != "benign" and self.eps <= 0:
            raise ValueError(f"training method {self.method!r} needs a budget eps > 0")
        if self.step_size is None and self.eps > 0:
            self.step_size = 2.5 * self.eps / self.steps
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must lie in [0, epochs={self.epochs}], not {self.warmup_epochs}")

    def budget_at(self, epoch_progress: float) -> float:
        """The training budget after `epoch_progress` epochs (a linear ramp during warm-up).

        Adversarial training at the full budget from the first step can collapse to a constant
        classifier (l2 eps = 2 on MNIST does, here); ramping eps up, as Gowal et al. 2019 do,
        avoids that. The step size scales with the budget.
        """
        if self.warmup_epochs <= 0:
            return self.eps
        return self.eps * min(1.0, epoch_progress / self.warmup_epochs)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class EvalConfig:
    norm: str = "l2"
    eps: float = 2.0
    steps: int = 20
    examples: int = 1000


@dataclass
class ModelSpec:
    name: str
    dataset: str
    arch: str
    padding: str = "same"
    train: TrainConfig = field(default_factory=TrainConfig)


def derived_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from the experiment seed and names, stable across runs and machines."""
    text = "/".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


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


def train_model(spec: ModelSpec, evaluation: EvalConfig, seed: int, out: str | Path,
                data_dir: str | Path = "data", download: bool = False, device: str = "auto",
                progress: bool = True) -> dict[str, Any]:
    """Train one model and write its checkpoint and metrics sidecar; returns the metrics."""
    started = time.perf_counter()
    cfg = spec.train
    dev = select_device(device)
    model_seed = derived_seed(seed, "train", spec.name)
    torch.manual_seed(model_seed)
    generator = torch.Generator(device=dev).manual_seed(model_seed)

    meta = data.info(spec.dataset)
    x_train, y_train = data.load(spec.dataset, "train", data_dir, download)
    x_test, y_test = data.load(spec.dataset, "test", data_dir, download)
    x_train, y_train, x_test, y_test = (t.to(dev) for t in (x_train, y_train, x_test, y_test))

    model = models.build(spec.arch, meta.input_shape, meta.num_classes, spec.padding).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    batches_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total_steps = cfg.epochs * batches_per_epoch
    shuffle = torch.Generator().manual_seed(model_seed)

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
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", acc=f"{history[-1]['train_accuracy']:.3f}")
    bar.close()

    model.eval()
    eval_eps = cfg.eps if cfg.method != "benign" else evaluation.eps
    eval_norm = cfg.norm if cfg.method != "benign" else evaluation.norm
    n_eval = min(evaluation.examples, len(x_test))
    clean = adversary.accuracy(model, x_test, y_test)
    robust = adversary.robust_accuracy(model, x_test[:n_eval], y_test[:n_eval], eval_norm, eval_eps, evaluation.steps)
    metrics = {
        "model": spec.name,
        "dataset": spec.dataset,
        "arch": spec.arch,
        "padding": spec.padding,
        "train": asdict(cfg),
        "seed": seed,
        "model_seed": model_seed,
        "clean_test_accuracy": clean,
        "test_examples": len(x_test),
        "robust_test_accuracy": robust,
        "robust_eval": {"attack": "pgd", "norm": eval_norm, "eps": eval_eps, "steps": evaluation.steps,
                        "step_size": 2.5 * eval_eps / evaluation.steps, "random_start": True, "examples": n_eval},
        "history": history,
        "wall_time_s": time.perf_counter() - started,
        "device": str(dev),
        "versions": {"layerbound": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    checkpoint.save(out, model, metrics)
    return metrics
