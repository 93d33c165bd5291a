"""The budget paper 001's Algorithm 1 needs with gamma = 0.95 (issue 28); prints one run's numbers.

Algorithm 1 with `step: decay` starts at the midpoint and keeps it until an iterate is a verified
collision (its residual within verify_tol / 2 of the feature gap): with gamma = 0.95 the step
fraction alpha_i = 0.95^i decays slowly and the iterates stay off the collision set for many
iterations. For each model and tap (the config's first m, projection 0, the first pairs of the
default pair set, the config's box, in float32 as the shards run it or --dtype float64) this prints, per pair, the
iteration of its first verified collision (median and maximum over pairs; ">N" when beyond the
budget N), how many pairs have one after 50, 100, 200 and 300 iterations and at the end,
the Jacobian evaluations the run took per pair (its tolerance stop included), and the median over
pairs of its certified distance divided by the default search's (`auto`, certified the same way).

    python benchmarks/bench_decay_budget.py [--models medium_adam2] [--layers conv2] [--max-iter 400] [--pairs 16]

Models as in bench_tightness.py (the config's and the held-out model).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from layerbound import config
from layerbound.collide import features, projection
from layerbound.data import pairs as pairsets
from layerbound.models import checkpoint
from layerbound import plan
from layerbound.collide import certify, jacobian, linear_step

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import heldout_model  # noqa: E402

GAMMA = 0.95
MARKS = (50, 100, 200, 300)


class _FirstCollision:
    """Wraps linear_step._Best.offer while active: decay_search offers every iterate i = 1, 2, ... of
    the pairs still running once per iteration, so the k-th call is iteration k; records, per
    pair, the first iteration whose iterate was kept as a collision."""

    def __enter__(self):
        self.original, self.calls, self.first = linear_step._Best.offer, 0, None
        recorder = self

        def offer(best, pairs, u, u_prime, distance, objective, collides):
            if recorder.first is None:
                recorder.first = torch.full((len(best.distance),), -1, dtype=torch.int64)
            recorder.calls += 1
            new = pairs[collides].cpu()
            new = new[recorder.first[new] < 0]
            recorder.first[new] = recorder.calls
            return recorder.original(best, pairs, u, u_prime, distance, objective, collides)

        linear_step._Best.offer = offer
        return self

    def __exit__(self, *exc):
        linear_step._Best.offer = self.original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--models", default=None, help=f"comma-separated (default: the config's and {heldout_model.NAME})")
    parser.add_argument("--layers", default=None, help="comma-separated taps (default: every tap)")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--max-iter", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="the search's dtype (float32: the shards'; verify_tol is the dtype's default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.load(args.config)
    box = tuple(cfg["collision"]["box"]) if cfg["collision"]["box"] is not None else None
    m = int(cfg["collision"]["m"][0])
    classes, per_class = cfg["pairs"]["classes"], cfg["pairs"]["per_class"]
    specs = {name: (spec["dataset"], ROOT / plan.path("checkpoint", dataset=spec["dataset"], model=name))
             for name, spec in cfg["models"].items()}
    specs[heldout_model.NAME] = (heldout_model.DATASET, heldout_model.PATH)
    models = args.models.split(",") if args.models else list(specs)
    dtype = getattr(torch, args.dtype)
    print(f"decay, alpha 1, gamma {GAMMA}, max_iter {args.max_iter}, {args.dtype}, box {box}, m = {m}, "
          f"first {args.pairs} pairs, projection 0, {args.threads} thread(s)")
    print(f"{'model':<16}{'layer':<8}{'first collision: median   max':>32}"
          + "".join(f"{'@' + str(k):>6}" for k in MARKS) + f"{'@end':>6}{'jac/pair':>10}{'vs default':>12}")
    for model in models:
        dataset, path = specs[model]
        if model == heldout_model.NAME:
            heldout_model.ensure(path)
        pair_set = pairsets.sample(dataset, classes, per_class, cfg["seed"], data_dir=ROOT / cfg["data_dir"])
        x, x_prime = pair_set.gather(range(min(args.pairs, pair_set.num_pairs)))
        net = checkpoint.load(path)
        for tap in (args.layers.split(",") if args.layers else net.taps):
            width = net.tap_widths()[tap]
            A64 = None if projection.is_identity(m, width) else \
                projection.draw(cfg["seed"], model, tap, m, 0, width, dtype=torch.float64)
            f64 = features.float64_map(copy.deepcopy(net), tap, torch.device("cpu"))
            g64 = f64 if A64 is None else (lambda u, f64=f64, A64=A64: f64(u) @ A64.T)
            f = features.feature_map(features.prepare_model(copy.deepcopy(net), dtype, torch.device("cpu")),
                                     tap, torch.device("cpu"))
            A = None if A64 is None else A64.to(dtype)

            def certified(**step):
                found = jacobian.search(f, A, x.to(dtype), x_prime.to(dtype), dtype=dtype, box=box,
                                        return_points=True, **step)
                return found, certify.certify(g64, x.double(), x_prime.double(), found, box)

            with _FirstCollision() as record:
                found, decay = certified(step="decay", alpha=1.0, gamma=GAMMA, max_iter=args.max_iter)
            _, default = certified()
            first = record.first if record.first is not None else torch.full((len(x),), -1)
            have = first[first > 0]
            at = torch.where(first > 0, first.double(), float("inf"))   # none within the budget: beyond it
            median, worst = (f"{v:.0f}" if v < float("inf") else f">{args.max_iter}"
                             for v in (float(at.median()), float(at.max())))
            counts = "".join(f"{int(((first > 0) & (first <= k)).sum()):>6}" for k in MARKS)
            evaluations = torch.where(found.iterations < args.max_iter, found.iterations + 1, found.iterations)
            ratio = (decay.distance / default.distance).median()
            print(f"{model:<16}{tap:<8}{median:>25}{worst:>7}{counts}{len(have):>6}"
                  f"{evaluations.double().mean():>10.1f}{ratio:>12.4f}", flush=True)


if __name__ == "__main__":
    main()
