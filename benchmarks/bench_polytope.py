"""Paper 002's cone programs: the sparse layered form handed to Clarabel directly (polytope.py)
against the dense form through cvxpy (polytope_reference.py, how polytope.py solved them before),
on the midpoint polytopes of random pairs of a random FCNN (paper 002's 784-300-200 network); the
same programs in the [0, 1] box, in the whole input space (what polytope.py solves with a box)
against the first layer's row space (what it solved before: not exact with a box, see
polytope.input_basis); the boxed descent in both spaces on a random fcnn_smaller (784-75-50); and
the size of the Medium CNN's first-layer program (paper 001 Figure 7).

    python benchmarks/bench_polytope.py [--pairs 3] [--threads 1]

Prints CPU seconds (process time, robust to other work on the machine): per tap, per cone program
of each form, their ratio and the largest difference of the optimal t (both solve the same
program); in the box, per program and per pair's descent, with the optimum t (distance) of the
row space relative to the whole space's (>= 1: the row space is a restriction).
"""

import argparse
import sys
from pathlib import Path
import time

import numpy as np
import torch

from layerbound.models import registry as models
from layerbound.collide import polytope

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # the tests' reference solvers
import polytope_reference  # noqa: E402


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
        V = polytope.input_basis(stages[0].W, None)
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

    boxed_programs(net, args.pairs)
    boxed_descent(args.pairs)

    net = models.build("medium", (1, 28, 28), 10).double().eval()
    t0 = time.process_time()
    stages = polytope.stages_of(net.extractor("conv1"), (1, 28, 28))
    built = time.process_time() - t0
    x, x_prime = rng.random(784), rng.random(784)
    pattern = [p > 0 for p in polytope._pre_activations(stages, (x + x_prime) / 2)]
    t0 = time.process_time()
    t = polytope._cone_program(stages, polytope.input_basis(stages[0].W, None), x, x_prime, pattern,
                               [p.copy() for p in pattern], None)[0]
    solved = time.process_time() - t0
    print(f"medium conv1 (784 -> 25088, {stages[0].W.nnz} nonzeros): matrix {built:.1f} s, one cone program "
          f"{solved:.1f} s, t / midpoint = {t / (np.linalg.norm(x - x_prime) / 2):.6f}")


def image_like_pairs(rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs in [0, 1]^784 with about a quarter of the pixels at 0 and a quarter at 1 (uniform on
    [-1/2, 3/2], clamped), as in an image: boxed programs are tighter there than inside the box."""
    return [tuple(np.clip(rng.random(784) * 2 - 0.5, 0, 1) for _ in range(2)) for _ in range(count)]


def boxed_programs(net: torch.nn.Module, pairs: int) -> None:
    """Per tap of the FCNN, the midpoint polytope's program unboxed (row space, as polytope.py
    solves it), and in the box in the row space (before) and in the whole space (now); and how many
    of the 2 x 784 coordinates of the unboxed optimum lie outside the box (where none does, that
    optimum would be the boxed one too)."""
    box, rng = (0.0, 1.0), np.random.default_rng(1)
    print(f"\nbox [0, 1], {pairs} image-like pairs, midpoint polytopes (CPU s per program; t row / t whole: "
          f"inf where the row space's polytope is infeasible; outside: coordinates of the unboxed optimum "
          f"outside the box, of 2 x 784)")
    print(f"{'tap':8s} {'unboxed (s)':>12s} {'row, box (s)':>13s} {'whole, box (s)':>15s} {'row / whole':>12s} "
          f"{'whole / unboxed':>16s} {'t row / t whole':>16s} {'unboxed: outside':>17s}")
    for tap in ("fc1_pre", "fc1", "fc2_pre", "fc2"):
        stages = polytope.stages_of(net.extractor(tap), (1, 28, 28))
        rows, whole = polytope.input_basis(stages[0].W, None), polytope.input_basis(stages[0].W, box)
        times, t_ratio, outside = {"unboxed": [], "row": [], "whole": []}, [], []
        for x, x_prime in image_like_pairs(rng, pairs):
            pattern = [p > 0 for p in polytope._pre_activations(stages, (x + x_prime) / 2)]
            t = {}
            for name, V, b in (("unboxed", rows, None), ("row", rows, box), ("whole", whole, box)):
                t0 = time.process_time()
                solution = polytope._cone_program(stages, V, x, x_prime, pattern, [p.copy() for p in pattern], b)
                times[name].append(time.process_time() - t0)
                t[name] = np.inf if solution is None else solution[0]
                if name == "unboxed":
                    outside.append(sum(int(((u < box[0]) | (u > box[1])).sum()) for u in solution[1:3]))
            t_ratio.append(t["row"] / t["whole"])
        med = {name: float(np.median(v)) for name, v in times.items()}
        print(f"{tap:8s} {med['unboxed']:12.3f} {med['row']:13.3f} {med['whole']:15.3f} "
              f"{med['row'] / med['whole']:12.2f} "
              f"{med['whole'] / med['unboxed']:16.2f} {min(t_ratio):7.3f}-{max(t_ratio):<8.3f} "
              f"{min(outside):8d}-{max(outside):<8d}")


def feature_distance(stages: list[polytope.Stage], a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(polytope.forward(stages, b[None]) - polytope.forward(stages, a[None])))


def boxed_descent(pairs: int) -> None:
    """The descent in the box on a random fcnn_smaller (its first layer 75 wide: rank 75 of 784),
    from image-like pairs, in the row space (before) and in the whole space (now)."""
    box, rng = (0.0, 1.0), np.random.default_rng(2)
    torch.manual_seed(0)
    net = models.build("fcnn_smaller", (1, 28, 28), 10).double().eval()
    print(f"\nbox [0, 1], random fcnn_smaller, {pairs} image-like pairs, descent (max_iter 50); median over pairs")
    print(f"{'tap':8s} {'row: d / midpoint':>18s} {'CPU s':>7s} {'whole: d / midpoint':>20s} {'CPU s':>7s} "
          f"{'programs':>9s} {'d row / d whole':>16s}")
    for tap in ("fc1", "fc2"):
        stages = polytope.stages_of(net.extractor(tap), (1, 28, 28))
        rows, whole = polytope.input_basis(stages[0].W, None), polytope.input_basis(stages[0].W, box)
        found = {"row": [], "whole": []}
        seconds = {"row": [], "whole": []}
        programs = []
        for x, x_prime in image_like_pairs(rng, pairs):
            midpoint = np.linalg.norm(x - x_prime) / 2
            for name, V in (("row", rows), ("whole", whole)):
                t0 = time.process_time()
                u, u_prime, solved, _ = polytope._descend(stages, V, x, x_prime, 50, box)
                seconds[name].append(time.process_time() - t0)
                # The method's own check (float64): the residual within 1e-6 of the feature gap.
                assert feature_distance(stages, u, u_prime) <= 1e-6 * feature_distance(stages, x, x_prime)
                found[name].append(max(np.linalg.norm(u - x), np.linalg.norm(u_prime - x_prime)) / midpoint)
                if name == "whole":
                    programs.append(solved)
        ratio = np.array(found["row"]) / np.array(found["whole"])
        print(f"{tap:8s} {np.median(found['row']):18.3f} {np.median(seconds['row']):7.2f} "
              f"{np.median(found['whole']):20.3f} {np.median(seconds['whole']):7.2f} {np.median(programs):9.1f} "
              f"{ratio.min():7.3f}-{ratio.max():<8.3f}")


if __name__ == "__main__":
    main()
