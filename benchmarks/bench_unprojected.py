"""The step controls and the polytope descent on unprojected maps (issues 11 and 13); prints the
distances measured in one run.

A random `fcnn_smaller` (or with --arch fcnn paper 002's 784-300-200 network; seed 0, 1x28x28
inputs, float64) and random pairs in [0, 1]; at taps fc1 and fc2 without projection (m = n_j = 75
and 50 constraints; 300 and 200 for fcnn), the median over pairs of the
distance found by Algorithm 1 with the decay schedule (gamma 0.7, 40 iterations), with the merit
line search (15 Jacobian evaluations), and by paper 002's polytope descent, with the midpoint bound
||x - x'|| / 2, and each one's CPU time per pair. Unboxed, like paper 002.

    python benchmarks/bench_unprojected.py [--arch fcnn_smaller] [--pairs 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from layerbound.models import registry as models
from layerbound.collide import closed_form, jacobian, polytope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="fcnn_smaller", choices=["fcnn_smaller", "fcnn"])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = models.build(args.arch, (1, 28, 28), 10).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(args.pairs, 1, 28, 28, generator=g, dtype=torch.float64)
    x_prime = torch.rand(args.pairs, 1, 28, 28, generator=g, dtype=torch.float64)
    print(f"random {args.arch}, {args.pairs} random pairs, no projection, unboxed; median distance "
          f"(time per pair); midpoint bound {closed_form.input_distance(x, x_prime).median():.3f}")
    print(f"{'tap':<6}{'decay, 40 it.':>22}{'merit, 15 it.':>24}{'polytope':>22}")
    for tap in ("fc1", "fc2"):
        f = net.extractor(tap)
        runs = {
            "decay": lambda: jacobian.search(f, None, x, x_prime, step="decay", max_iter=40, box=None),
            "merit": lambda: jacobian.search(f, None, x, x_prime, step="merit", max_iter=15, box=None),
            "polytope": lambda: polytope.search(polytope.stages_of(f, (1, 28, 28)), x, x_prime, f=f),
        }
        row = f"{tap:<6}"
        for run in runs.values():
            started = time.process_time()
            found = run()
            per_pair = (time.process_time() - started) / args.pairs
            row += f"{found.distance.median():>14.3f} ({per_pair:5.2f} s)"
        print(row, flush=True)


if __name__ == "__main__":
    main()
