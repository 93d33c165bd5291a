"""Tightness of the collision search (issue 11); prints ratios measured in one run.

For each trained model of the default config and each of its taps (at the config's first m, the
first projection, the first pairs of the default pair set), the median and maximum over pairs of

    distance found by a step control / distance of a long reference run

and the mean Jacobian evaluations per pair (pair-iterations) and the CPU time of the search. The
reference is paper 001's Algorithm 1 in float64 with gamma = 0.95 and 300 iterations (its
tolerance stop included). Algorithm 1 minimizes the sum of squares of the two distances, while the
distance is their max, which the merit search minimizes; so each ratio is printed a second time
against the best known distance, per pair the smaller of that reference and a 100-iteration merit
search in float64 ("vs best"). The step controls compared are the paper's decaying schedule (`decay`:
gamma 0.7, 40 iterations, the default until issue 11) and the config's own search options (the
default config: the merit line search, `merit`, 15 iterations), both in float32 as the shards run
them, with the config's box. A ratio of 1.01 means 1% looser than the reference; below 1 the step
control found closer collisions than the reference.

    python benchmarks/bench_tightness.py [--models medium_pgd2] [--pairs 16] [--layers conv1,fc6]

Needs the trained checkpoints (`snakemake --cores 2 results/models/mnist5k/{medium_benign,medium_pgd2,medium_trades2}.pt`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from layerbound import config, features, projection
from layerbound.plan import plan
from layerbound.models import checkpoint
from layerbound.data import pairs as pairsets
from layerbound.collide import jacobian
from layerbound.collide.options import CollisionOptions, adversary_label

ROOT = Path(__file__).resolve().parents[1]
DECAY = dict(step="decay", alpha=1.0, gamma=0.7, max_iter=40)
REFERENCE = dict(step="decay", alpha=1.0, gamma=0.95, max_iter=300)
MIN_MAX_REFERENCE = dict(step="merit", alpha=1.0, max_iter=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--models", default=None, help="comma-separated (default: every model of the config)")
    parser.add_argument("--layers", default=None, help="comma-separated taps (default: every tap)")
    parser.add_argument("--pairs", type=int, default=16, help="first pairs of the pair set (the reference is slow)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.load(args.config)
    options = CollisionOptions.from_config(cfg["collision"], "jacobian")
    box = options.box
    configured = asdict(options.method_options)
    step_controls = {"decay (gamma 0.7, 40 it.)": DECAY,
                     f"config: {configured['step']}, max_iter {configured['max_iter']}": configured}
    m = int(cfg["collision"]["m"][0])
    classes, per_class = cfg["pairs"]["classes"], cfg["pairs"]["per_class"]
    models = args.models.split(",") if args.models else list(cfg["models"])
    print(f"adversary {adversary_label(box)}, m = {m}, first {args.pairs} pairs of classes {classes} "
          f"(S = {per_class}), projection 0; reference: {REFERENCE} in float64")
    header = f"{'model':<16}{'layer':<8}" + "".join(f"{name:>54}" for name in step_controls)
    print(header + "\n" + " " * 24 + "".join(f"{'median   max  vs best: median  max  it/pair cpu s':>54}"
                                              for _ in step_controls))
    totals = {name: [] for name in step_controls}
    totals_best = {name: [] for name in step_controls}
    for model in models:
        spec = cfg["models"][model]
        path = ROOT / plan.path("checkpoint", dataset=spec["dataset"], model=model)
        pair_set = pairsets.sample(spec["dataset"], classes, per_class, cfg["seed"], data_dir=ROOT / cfg["data_dir"])
        x, x_prime = pair_set.gather(range(min(args.pairs, pair_set.num_pairs)))
        widths = checkpoint.load(path).tap_widths()
        taps = args.layers.split(",") if args.layers else checkpoint.load(path).taps
        for tap in taps:
            def setup(dtype):
                net = features.prepare_model(checkpoint.load(path), dtype, torch.device("cpu"))
                f = features.feature_map(net, tap, torch.device("cpu"))
                A = None if projection.is_identity(m, widths[tap]) else \
                    projection.draw(cfg["seed"], model, tap, m, 0, widths[tap], dtype=dtype)
                return f, A
            f, A = setup(torch.float64)
            reference = jacobian.search(f, A, x.double(), x_prime.double(), dtype=torch.float64, box=box,
                                        **REFERENCE).distance
            best = torch.minimum(reference, jacobian.search(f, A, x.double(), x_prime.double(), dtype=torch.float64,
                                                            box=box, **MIN_MAX_REFERENCE).distance)
            f, A = setup(torch.float32)
            row = f"{model:<16}{tap:<8}"
            for name, step in step_controls.items():
                started = time.process_time()
                found = jacobian.search(f, A, x, x_prime, dtype=torch.float32, box=box, **step)
                elapsed = time.process_time() - started
                ratio, ratio_best = found.distance / reference, found.distance / best
                totals[name].append(ratio)
                totals_best[name].append(ratio_best)
                row += (f"{ratio.median():>14.4f}{ratio.max():>7.3f}{ratio_best.median():>12.4f}{ratio_best.max():>7.3f}"
                        f"{found.iterations.double().mean():>7.1f}{elapsed:>7.1f}")
            print(row, flush=True)
    print("all layers: median ratio " + ", ".join(f"{name} {torch.cat(r).median():.4f}" for name, r in totals.items()))
    print("all layers: median ratio vs best " + ", ".join(f"{name} {torch.cat(r).median():.4f}"
                                                        for name, r in totals_best.items()))


if __name__ == "__main__":
    main()
