"""Paper 003's I_j = sum_y pi(y) I(h_{j-1}; h_j | y) between consecutive layers of a trained
checkpoint, with each estimator of `mutual_info.ESTIMATORS` (paper 003's EDGE, EDGE 4.3.1, KSG);
prints the values and their cost.

The inputs are the first `--examples` test images of the checkpoint's dataset, clean and under
PGD (l2 or linf, the checkpoint's training budget unless `--eps`, 10 steps of 2.5 eps / 10, random
start, seed 0); h_j are the post-activation outputs of the network's taps (raw logits last); pi(y)
are the class frequencies among those images. All values in bits.

    python benchmarks/bench_layer_mi.py results/models/mnist5k/medium_pgd2.pt [--examples 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from layerbound.models import checkpoint
from layerbound.data import datasets as data
from layerbound.semirobust.mutual_info import ESTIMATORS, class_conditional_mi
from layerbound.semirobust.attacks import PGDAttack, adversarial_accuracy
from layerbound.semirobust.layer_mi import layer_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--eps", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--estimators", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    metrics = checkpoint.load_metrics(args.checkpoint)
    net = checkpoint.load(args.checkpoint)
    x, y = data.load(metrics["dataset"], "test")
    x, y = x[:args.examples], y[:args.examples]
    train = metrics["train"]
    norm = train["norm"]
    eps = args.eps if args.eps is not None else train["eps"]
    torch.manual_seed(0)
    accuracy, x_adv = adversarial_accuracy(net, x, y, PGDAttack(norm, eps, steps=10))
    print(f"{metrics['model']}: {len(x)} test images, PGD-{norm} eps {eps}: adversarial accuracy {accuracy:.3f}")
    inputs = {"clean": x, f"PGD eps {eps}": x_adv}
    print(f"{'pair':<18}{'widths':>14}" + "".join(f"{f'{e} {k}':>26}" for k in inputs for e in args.estimators)
          + f"{'s per estimate':>16}")
    for prev, nxt in zip(net.taps[:-1], net.taps[1:]):
        row, seconds = [], []
        for name, xs in inputs.items():
            h = layer_outputs(net, xs, [prev, nxt])
            for estimator in args.estimators:
                started = time.perf_counter()
                row.append(class_conditional_mi(h[prev], h[nxt], y.numpy(), estimator).value)
                seconds.append(time.perf_counter() - started)
        widths = f"{h[prev].shape[1]}-{h[nxt].shape[1]}"
        print(f"{prev + ' -> ' + nxt:<18}{widths:>14}" + "".join(f"{v:>26.3f}" for v in row)
              + f"{sum(seconds) / len(seconds):>16.2f}", flush=True)


if __name__ == "__main__":
    main()
