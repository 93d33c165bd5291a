"""Paper 002's cone programs: the sparse layered form handed to Clarabel directly (polytope.py)
against the dense form through cvxpy (polytope_reference.py, how polytope.py solved them before),
on the midpoint polytopes of random pairs of a random FCNN (paper 002's 784-300-200 network), and
the size of the Medium CNN's first-layer program (paper 001 Figure 7).

    python benchmarks/bench_polytope.py [--pairs 3] [--threads 1]

Prints, per tap, the CPU seconds (process time, robust to other work on the machine) per cone program of each form, their ratio and the largest
difference of the optimal t (both solve the same program).
"""

import argparse
import time

import numpy as np
import torch

from layerbound import models
from layerbound.collide import polytope, polytope_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = models.build("fcnn", (1, 28, 28), 10).double().eval()
    rng = np.random.default_rng(0)
    print(f"{'tap':8s} {'layered (s)':>12s} {'dense cvxpy (s)':>16s} {'ratio':>6s} {'max |t diff|':>13s}")
    for tap in ("fc1_pre", "fc1", "fc2_pre", "fc2"):
        stages = polytope.stages_of(net.extractor(tap), (1, 28, 28))
        V = polytope.input_basis(stages[0].W)
        fast, slow, diff = [], [], 0.0
        for _ in range(args.pairs):
            x, x_prime = rng.random(784), rng.random(784)
            pattern = [p > 0 for p in polytope._pre_activations(stages, (x + x_prime) / 2)]
            t0 = time.process_time()
            t_fast = polytope._cone_program(stages, V, x, x_prime, pattern, [p.copy() for p in pattern], None)[0]
            t1 = time.process_time()
            t_slow = polytope_reference.cone_program(stages, x, x_prime, pattern, [p.copy() for p in pattern], V)[0]
            t2 = time.process_time()
            fast.append(t1 - t0)
            slow.append(t2 - t1)
            diff = max(diff, abs(t_fast - t_slow))
        f, s = float(np.median(fast)), float(np.median(slow))
        print(f"{tap:8s} {f:12.3f} {s:16.3f} {s / f:6.2f} {diff:13.2e}")

    net = models.build("medium", (1, 28, 28), 10).double().eval()
    t0 = time.process_time()
    stages = polytope.stages_of(net.extractor("conv1"), (1, 28, 28))
    built = time.process_time() - t0
    x, x_prime = rng.random(784), rng.random(784)
    pattern = [p > 0 for p in polytope._pre_activations(stages, (x + x_prime) / 2)]
    t0 = time.process_time()
    t = polytope._cone_program(stages, polytope.input_basis(stages[0].W), x, x_prime, pattern,
                               [p.copy() for p in pattern], None)[0]
    solved = time.process_time() - t0
    print(f"medium conv1 (784 -> 25088, {stages[0].W.nnz} nonzeros): matrix {built:.1f} s, one cone program "
          f"{solved:.1f} s, t / midpoint = {t / (np.linalg.norm(x - x_prime) / 2):.6f}")


if __name__ == "__main__":
    main()
