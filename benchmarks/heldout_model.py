"""The held-out model of the search benchmarks (issue 28): a Medium CNN trained 2 epochs with Adam.

The merit search's constants were chosen on the default config's three models (benign, PGD-l2 and
TRADES-l2, all trained by SGD momentum); this model, trained by another optimizer for fewer epochs,
checks that what the benchmarks measure is not tuned to them. The project's training (train.py)
is SGD only, so the short Adam loop lives here: seeded, on the CPU in float32, single-threaded, so
that the same command writes the same weights.

    python benchmarks/heldout_model.py      # writes results/bench/models/mnist5k/medium_adam2.pt (+ .json)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from layerbound.data import datasets as data
from layerbound.models import adversary, checkpoint, train
from layerbound.models import registry as models

ROOT = Path(__file__).resolve().parents[1]
NAME = "medium_adam2"
DATASET = "mnist5k"
EPOCHS = 2
BATCH_SIZE = 64
LR = 1e-3
# Under results/bench/, not results/models/: it is no model of the workflow's config.
PATH = ROOT / "results" / "bench" / "models" / DATASET / f"{NAME}.pt"


def train_heldout(out: Path = PATH, seed: int = 0) -> Path:
    """Train the held-out model (Adam, EPOCHS epochs, batch BATCH_SIZE, lr LR) and save it with a
    sidecar of its clean test accuracy; returns the checkpoint path."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # one thread: the reductions' order, hence the weights, do not depend on the machine's cores
    try:
        init_seed = train.model_seed(seed, NAME)
        torch.manual_seed(init_seed)
        x_train, y_train = data.load(DATASET, "train")
        x_test, y_test = data.load(DATASET, "test")
        meta = data.info(DATASET)
        model = models.build("medium", meta.input_shape, meta.num_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        shuffle = torch.Generator().manual_seed(init_seed)
        history = []
        for epoch in range(EPOCHS):
            model.train()
            order = torch.randperm(len(x_train), generator=shuffle)
            loss_sum = 0.0
            for b in range(math.ceil(len(x_train) / BATCH_SIZE)):
                idx = order[b * BATCH_SIZE:(b + 1) * BATCH_SIZE]
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(idx)
            history.append({"epoch": epoch + 1, "train_loss": loss_sum / len(x_train)})
        model.eval()
        with torch.no_grad():
            accuracy = adversary.accuracy(model, x_test, y_test)
        metrics = {"model": NAME, "dataset": DATASET, "arch": "medium", "padding": "same", "seed": seed,
                   "model_seed": init_seed, "train": {"optimizer": "adam", "lr": LR, "epochs": EPOCHS,
                                                      "batch_size": BATCH_SIZE},
                   "clean_test_accuracy": accuracy, "history": history,
                   "script": "benchmarks/heldout_model.py"}
        out.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.save(out, model, metrics)
    finally:
        torch.set_num_threads(threads)
    return out


def ensure(out: Path = PATH) -> Path:
    """The held-out checkpoint, trained first if it is missing."""
    return out if out.is_file() else train_heldout(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PATH)
    args = parser.parse_args()
    path = train_heldout(args.out)
    print(f"{path}: clean test accuracy {checkpoint.load_metrics(path)['clean_test_accuracy']:.4f}")
