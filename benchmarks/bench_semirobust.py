"""Paper 003's Algorithm 1 on two trained checkpoints of one architecture (issue 16); prints Acc*,
Acc_sr, every trial's accuracy per epoch, rho per layer and the cost of a retraining epoch.

`--robust` is (f_a*, f_b*), `--regular` gives f_b. f_b is the last `--fb-layers` weight layers.
Training and evaluation attack: PGD (adversary.pgd) in the robust checkpoint's norm and budget
unless `--norm` / `--eps`, with `--steps` steps of 2.5 eps / steps and a random start; training
on the checkpoint dataset's training images, evaluation and the I_j on its first `--examples`
test images (true labels). rho_j = min over trials of I_{j,t}, in bits, by each of `--estimators`
(default: paper 003's EDGE and KSG).

    python benchmarks/bench_semirobust.py --robust results/models/mnist5k/medium_pgd2.pt \
        --regular results/models/mnist5k/medium_benign.pt [--fb-layers 3] [--trials 2] [--epochs 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from layerbound.models import checkpoint
from layerbound.data import datasets as data
from layerbound.semirobust.mutual_info import ESTIMATORS
from layerbound.semirobust.algorithm import RetrainOptions, retrain_semirobust
from layerbound.semirobust.attacks import PGDAttack
from layerbound.semirobust.layer_mi import layer_mi
from layerbound.semirobust.split import split_last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robust", required=True)
    parser.add_argument("--regular", required=True)
    parser.add_argument("--fb-layers", type=int, default=3)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--k", type=float, default=0.01)
    parser.add_argument("--norm", default=None)
    parser.add_argument("--eps", type=float, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--estimators", nargs="+", choices=ESTIMATORS, default=["edge_paper003", "ksg"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    metrics = checkpoint.load_metrics(args.robust)
    robust, regular = checkpoint.load(args.robust), checkpoint.load(args.regular)
    norm = args.norm or metrics["train"]["norm"]
    eps = args.eps if args.eps is not None else metrics["train"]["eps"]
    attack = PGDAttack(norm, eps, args.steps)
    train = data.load(metrics["dataset"], "train")
    x_test, y_test = data.load(metrics["dataset"], "test")
    test = (x_test[:args.examples], y_test[:args.examples])
    split = split_last(robust, args.fb_layers)
    options = RetrainOptions(trials=args.trials, epochs=args.epochs, k=args.k)

    def both(net, split, x_adv, y):
        values = {}
        for estimator in args.estimators:
            values.update({f"{estimator}:{tap}": v for tap, v in layer_mi(net, split, x_adv, y, estimator).items()})
        return values

    started = time.perf_counter()
    result = retrain_semirobust(robust, regular, split, train, test, attack, attack, options, seed=0, mi=both)
    wall = time.perf_counter() - started
    epochs = sum(len(t.accuracies) for t in result.trials)
    print(f"{metrics['model']} (f_a*: {', '.join(split.f_a_taps)}) + f_b = {', '.join(split.f_b_taps)} from "
          f"{checkpoint.load_metrics(args.regular)['model']}; PGD-{norm} eps {eps}, {args.steps} steps; "
          f"{len(train[0])} training, {len(test[0])} test images; k = {args.k}")
    print(f"Acc* {result.acc_star:.3f}   Acc_sr {result.acc_sr:.3f}   Acc~ {result.best_accuracy:.3f} "
          f"(trial {result.best})   Diff. {result.difference:+.3f}")
    for t, trial in enumerate(result.trials):
        print(f"trial {t}: accuracy per epoch {', '.join(f'{a:.3f}' for a in trial.accuracies)}"
              f"{'  (reached Acc* - k)' if trial.reached else ''}")
    for estimator in args.estimators:
        rho = {tap.split(":", 1)[1]: v for tap, v in result.rho.items() if tap.startswith(f"{estimator}:")}
        print(f"rho ({estimator}, bits): " + ", ".join(f"{tap} {v:.3f}" for tap, v in rho.items()))
    print(f"{wall:.0f} s in all, {epochs} retraining epochs ({wall / max(epochs, 1):.0f} s per epoch, "
          f"evaluations and I_j included), {args.threads} thread(s)")


if __name__ == "__main__":
    main()
