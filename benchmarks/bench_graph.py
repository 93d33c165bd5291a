"""Benchmark of the optimal-loss computations (issue 4).

1. Exact cross-entropy (max-flow recursion) against the generic cvxpy solve, S = 100 per class,
   at five edge densities; target: at least 50x faster.
2. A full sweep, 41 budgets x 10 projections, for one layer (cross-entropy and 0-1 losses, i.e.
   what a loss table needs) at S = 100 (target: under 1 s), 200 and 500.  "graphs" counts the
   distinct conflict graphs (budgets that add no edge share one); ms/graph is the amortized cost.

Distances are input-space random-projection collision distances ||P(u - v)|| / 2 (m = 10) between
two synthetic classes that live near a shared low-dimensional subspace of a 784-pixel space, so
the grid runs from the empty graph (eps = 0) to dense graphs at the ceiling (eps = the median
distance).  Run: python benchmarks/bench_graph.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
import time

import numpy as np

import torch
from scipy.spatial.distance import cdist

from layerbound.collide.closed_form import row_space
from layerbound.bounds.graph import conflict_graph, loss_sweep, optimal_ce_loss
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # the tests' reference solvers
from graph_reference import pick_solver, reference_ce  # noqa: E402

N0, RANK, M, PROJECTIONS, BUDGETS = 784, 12, 10, 10, 41


def make_distances(s: int, projections: int, seed: int) -> np.ndarray:
    """(projections, s, s) RP distances between two structured synthetic classes."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(RANK, N0)) / np.sqrt(N0)
    means = rng.normal(size=(2, N0)) * 0.02
    xa = means[0] + rng.normal(size=(s, RANK)) @ basis * 3 + 0.05 * rng.normal(size=(s, N0))
    xb = means[1] + rng.normal(size=(s, RANK)) @ basis * 3 + 0.05 * rng.normal(size=(s, N0))
    # d = ||P (u - v)|| / 2 with P the projector onto A's row space: distances in that basis.
    bases = [row_space(torch.from_numpy(rng.normal(size=(M, N0)))).numpy().T for _ in range(projections)]
    return np.stack([cdist(xa @ q, xb @ q) / 2 for q in bases])


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_reference(d: np.ndarray) -> None:
    print(f"1. exact CE vs cvxpy ({pick_solver()}), S = {d.shape[0]} per class")
    print(f"{'density':>8} {'edges':>6} {'loss':>9} {'|diff|':>9} {'exact ms':>9} "
          f"{'cvxpy ms':>9} {'speedup':>8}")
    for density in (0.01, 0.05, 0.15, 0.3, 0.6):
        eps = float(np.quantile(d, density))
        t_exact, (loss, _, _) = best_time(lambda: optimal_ce_loss(d, eps), 20)
        t_ref, (ref, _, _) = best_time(lambda: reference_ce(conflict_graph(d, eps)), 3)
        edges = np.count_nonzero(d <= eps)
        print(f"{density:>8.2f} {edges:>6d} {loss:>9.6f} {abs(loss - ref):>9.1e} "
              f"{1e3 * t_exact:>9.2f} {1e3 * t_ref:>9.1f} {t_ref / t_exact:>7.0f}x")


def bench_sweep() -> None:
    print(f"\n2. full sweep: {BUDGETS} eps x {PROJECTIONS} projections, CE + 0-1 "
          "(target S=100: < 1 s)")
    print(f"{'S':>5} {'edges max':>10} {'graphs':>7} {'ce@top':>7} {'seconds':>8} {'ms/graph':>9}")
    for s, repeats in ((100, 5), (200, 3), (500, 1)):
        d = make_distances(s, PROJECTIONS, seed=s)
        grid = np.linspace(0.0, float(np.median(d)), BUDGETS)
        seconds, res = best_time(lambda: loss_sweep(d, grid), repeats)
        graphs = sum(np.unique(e).size for e in res["edges"])
        print(f"{s:>5d} {res['edges'].max():>10d} {graphs:>7d} {res['ce'][:, -1].mean():>7.4f} "
              f"{seconds:>8.3f} {1e3 * seconds / graphs:>9.2f}")


def main() -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU cores: {os.cpu_count()}, load average (1 min): {load:.1f}\n")
    bench_reference(make_distances(100, 1, seed=0)[0])
    bench_sweep()


if __name__ == "__main__":
    main()
