"""The collision search against the true optimum, on maps small enough to solve exactly.

bench_tightness.py compares the search with the best distance our own long runs know; this script
compares it with the global minimum collision distance, which is computable where the map is
affine or has few ReLUs in a low-dimensional input:

* a boxed affine map u -> L u (16 inputs in [0, 1], 6 features): one second-order cone program
  per pair, min t s.t. ||u - x|| <= t, ||u' - x'|| <= t, L (u - u') = 0, u, u' in the box;
* one-hidden-layer ReLU maps f(u) = P relu(W u + b) on 3 inputs in [0, 1]: every pair of
  activation patterns the box admits gives one cone program (the map is affine on each pattern's
  polyhedron), and the global minimum is the smallest of them and the midpoint's ||x - x'|| / 2.

Each row: reported (certified) distance over the true minimum, min / median / max over the
pairs, and the share within 1%. A minimum below 1 (beyond 1e-9) would be an invalid bound. The
search runs through `api.collisions` as a user's would (float32, certified in float64, the box
[0, 1]); `--smooth K` adds the smoothing option (`collision.search.smooth_iters`, docs/search.md).

    python benchmarks/bench_global_optimum.py [--seeds 0,1,2,3] [--pairs 4] [--smooth 5]

Needs cvxpy (a test dependency). About a minute per ReLU map with 16 pairs on one core.
"""

from __future__ import annotations

import argparse
import itertools
import warnings

import cvxpy as cp
import numpy as np
import torch

from layerbound import api
from layerbound.collide import projection
from layerbound.data import pairs as pairsets

BOX = (0.0, 1.0)


def pair_set(x_a: np.ndarray, x_b: np.ndarray) -> pairsets.PairSet:
    """S points of each 'class' as a pair set (all S x S pairs), float32 as the datasets are."""
    S = len(x_a)
    as_tensor = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731
    return pairsets.PairSet(f"c0v1-S{S}-seed0", "toy", "train", (0, 1), S, 0, as_tensor(x_a), as_tensor(x_b),
                            torch.zeros(S, dtype=torch.int64), torch.ones(S, dtype=torch.int64),
                            torch.arange(S), torch.arange(S))


def cone_minimum(x: np.ndarray, x_prime: np.ndarray, M: np.ndarray, M_prime: np.ndarray, c: np.ndarray,
                 region=None) -> float:
    """min max(||u - x||, ||u' - x'||) over M u - M' u' + c = 0, u, u' in the box (and in `region`:
    a function of (u, u') giving more constraints); inf where infeasible."""
    u, v, t = cp.Variable(len(x)), cp.Variable(len(x)), cp.Variable()
    constraints = [cp.norm(u - x) <= t, cp.norm(v - x_prime) <= t, M @ u - M_prime @ v + c == 0,
                   u >= BOX[0], u <= BOX[1], v >= BOX[0], v <= BOX[1]]
    if region is not None:
        constraints += region(u, v)
    problem = cp.Problem(cp.Minimize(t), constraints)
    try:
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    except cp.SolverError:
        return float("inf")
    # "optimal_inaccurate" too: dropping a region the solver found hard would overstate the minimum.
    return float(problem.value) if problem.status in ("optimal", "optimal_inaccurate") else float("inf")


def patterns(W: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """The activation patterns (0/1 per unit) of W u + b that some u in the box has."""
    u = cp.Variable(W.shape[1])
    found = []
    for signs in itertools.product((-1.0, 1.0), repeat=len(b)):
        s = np.array(signs)
        problem = cp.Problem(cp.Minimize(0), [cp.multiply(s, W @ u + b) >= 1e-9, u >= BOX[0], u <= BOX[1]])
        problem.solve(solver=cp.CLARABEL)
        if problem.status == "optimal":
            found.append((s + 1) / 2)
    return found


def relu_minimum(x: np.ndarray, x_prime: np.ndarray, W: np.ndarray, b: np.ndarray, P: np.ndarray,
                 admitted: list[np.ndarray]) -> float:
    """The global minimum collision distance of u -> P relu(W u + b) for the pair (x, x')."""
    best = np.linalg.norm(x - x_prime) / 2      # the midpoint collides
    for s, s_prime in itertools.product(admitted, repeat=2):
        # On pattern s the map is P diag(s) (W u + b); the pattern's polyhedron is sign(W u + b) = s.
        def region(u, v, s=s, s_prime=s_prime):
            return [cp.multiply(2 * s - 1, W @ u + b) >= 0, cp.multiply(2 * s_prime - 1, W @ v + b) >= 0]
        M, M_prime = P @ (s[:, None] * W), P @ (s_prime[:, None] * W)
        best = min(best, cone_minimum(x, x_prime, M, M_prime, P @ (s * b) - P @ (s_prime * b), region))
    return best


def row(label: str, reported: np.ndarray, truth: np.ndarray) -> str:
    ratio = reported / truth
    return (f"{label:<44} min {ratio.min():.9f}  median {np.median(ratio):.5f}  max {ratio.max():.6f}  "
            f"within 1%: {np.mean(ratio <= 1.01):.2f}")


def affine_case(pairs_per_class: int, smooth: int) -> None:
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 6))
    model = api.wrap(net, (1, 4, 4), 2)
    # Points near the box's faces, where the box constraints bind.
    near_faces = lambda: np.clip((rng.uniform(size=(pairs_per_class, 1, 4, 4)) > 0.5)  # noqa: E731
                                 + rng.normal(0, 0.05, (pairs_per_class, 1, 4, 4)), *BOX)
    ps = pair_set(near_faces(), near_faces())
    L = net[1].weight.detach().double().numpy()
    x, x_prime = (t.double().flatten(1).numpy() for t in ps.gather(np.arange(ps.num_pairs)))
    truth = np.array([cone_minimum(a, b, L, L, np.zeros(6)) for a, b in zip(x, x_prime)])
    for k in ([0] + ([smooth] if smooth else [])):
        found = api.collisions(model, "1", ps, m=10, box=BOX, smooth_iters=k)
        print(row(f"affine 16->6, boxed{', smooth ' + str(k) if k else ''}", found.distances.ravel(), truth), flush=True)


def relu_case(n: int, hidden: int, out: int, m: int, seed: int, pairs_per_class: int, smooth: int) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers = [torch.nn.Flatten(), torch.nn.Linear(n, hidden), torch.nn.ReLU()] + ([torch.nn.Linear(hidden, out)] if out else [])
    net = torch.nn.Sequential(*layers).double()
    with torch.no_grad():   # kinks through random points of the box, steep enough to matter
        centres = torch.rand(hidden, n, dtype=torch.float64)
        net[1].weight.mul_(3)
        net[1].bias.copy_(-(net[1].weight * centres).sum(1))
    net = net.float()
    model = api.wrap(net, (1, 1, n), 2)
    tap = str(len(layers) - 1)
    ps = pair_set(rng.uniform(size=(pairs_per_class, 1, 1, n)), rng.uniform(size=(pairs_per_class, 1, 1, n)))
    W, b = net[1].weight.detach().double().numpy(), net[1].bias.detach().double().numpy()
    head = net[3].weight.detach().double().numpy() if out else np.eye(hidden)
    width = head.shape[0]
    searched = {k: api.collisions(model, tap, ps, m=m, box=BOX, smooth_iters=k) for k in ([0] + ([smooth] if smooth else []))}
    # The features the search collided: the tap, through the search's own projection when m < width.
    projected = searched[0].projected
    # api.collisions draws projection 0 from (seed 0, name "model", tap, m), in float32; its entries exactly.
    A = (projection.draw(0, "model", tap, m, 0, width, dtype=torch.float32).double().numpy() if projected
         else np.eye(width))
    P = A @ head
    admitted = patterns(W, b)
    x, x_prime = (t.double().flatten(1).numpy() for t in ps.gather(np.arange(ps.num_pairs)))
    truth = np.array([relu_minimum(a, c, W, b, P, admitted) for a, c in zip(x, x_prime)])
    for k, found in searched.items():
        label = f"relu n={n} h={hidden}{' out=' + str(out) if out else ''} m={m if projected else width} seed {seed}"
        print(row(label + (f", smooth {k}" if k else ""), found.distances.ravel(), truth), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated seeds of the ReLU maps")
    parser.add_argument("--pairs", type=int, default=4, help="points per class (pairs: its square)")
    parser.add_argument("--smooth", type=int, default=5, help="also run smooth_iters K (0: only the default search)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Solution may be inaccurate")
    seeds = [int(s) for s in args.seeds.split(",")]
    affine_case(args.pairs, args.smooth)
    for seed in seeds:
        relu_case(3, 4, 3, 2, seed, args.pairs, args.smooth)
        relu_case(3, 5, 0, 2, seed, args.pairs, args.smooth)


if __name__ == "__main__":
    main()
