"""Our EDGE variants against the reference code itself, on the same random draws; prints both
estimates and their largest difference.

The reference files are not part of this project; pass your own copies:
`--paper003` is SemirobustSubnetworks' MI/AuxiliaryScripts/mi_estimator.py (commit dd41a90),
`--edge431` is mrtnoshad/EDGE's EDGE_4_3_1.py. They need scikit-learn (`pip install scikit-learn`);
their `import cvxpy` is satisfied by an empty stand-in (only the unused 'optimal_weights' ensemble
needs it) and NumPy's removed `np.asscalar` by `item()`.

Both references seed NumPy's global generator with 3334 before drawing the projections (gen_W) and
the k-NN query points (find_knn), and paper 003's draws its shift after `np.random.seed()`. Here
that unseeded call is given a fixed seed, and our estimators are handed a generator that replays
the same streams in their documented order, so the two must agree up to rounding: paper 003's call
`EDGE(X, Y)` (its defaults are the call's) against `edge_paper003`, `EDGE(X, Y)` of 4.3.1 (L = 10,
normalize_epsilon) against `edge`, and 4.3.1 without normalize_epsilon against `edge` without
calibration. Each case is Gaussian data with an offset (neither reference centres the data).

    python benchmarks/check_edge_reference.py --paper003 path/to/mi_estimator.py --edge431 path/to/EDGE_4_3_1.py
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from unittest import mock

import numpy as np

from layerbound.semirobust import mutual_info

SHIFT_SEED = 12345
CASES = [(1000, 1, 1, 0.9), (300, 3, 5, 0.7), (1000, 6, 6, 0.5), (1000, 7, 2, 0.5), (500, 4, 20, 0.5),
         (1000, 10, 10, 0.0), (2000, 10, 10, 0.9), (1000, 50, 50, 0.0), (100, 50, 10, 0.5)]


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Replay:
    """Our estimators' draws (projections, query points, shifts) taken from the references' streams."""

    def __init__(self):
        self.projection = np.random.RandomState(3334)
        self.queries = np.random.RandomState(3334)
        self.shift = np.random.RandomState(SHIFT_SEED)

    def standard_normal(self, shape):
        return self.projection.standard_normal(shape)

    def integers(self, low, high, size):
        return self.queries.randint(low, high, size)   # what np.random.choice(values, size) draws

    def random(self, size):
        return self.shift.rand(size)


def replayed(estimator, x, y, **kwargs) -> float:
    with mock.patch.object(mutual_info.np.random, "default_rng", lambda seed=None: Replay()):
        return estimator(x, y, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper003", required=True, help="SemirobustSubnetworks MI/AuxiliaryScripts/mi_estimator.py")
    parser.add_argument("--edge431", required=True, help="mrtnoshad/EDGE EDGE_4_3_1.py")
    args = parser.parse_args()
    sys.modules.setdefault("cvxpy", types.ModuleType("cvxpy"))
    if not hasattr(np, "asscalar"):
        np.asscalar = lambda a: np.asarray(a).item()
    seed = np.random.seed
    np.random.seed = lambda s=None: seed(SHIFT_SEED if s is None else s)   # the references' unseeded call
    paper003, edge431 = load(args.paper003, "reference_paper003"), load(args.edge431, "reference_edge431")

    rng = np.random.default_rng(1)
    worst = 0.0
    print(f"{'N':>5}{'d_x':>5}{'d_y':>5}{'r':>5}  {'paper 003: ref / ours':>32}  {'4.3.1: ref / ours':>32}"
          f"  {'4.3.1 uncalibrated: ref / ours':>32}")
    for n, dx, dy, r in CASES:
        x = rng.standard_normal((n, dx)) + 0.3
        y = r * x[:, :1] @ np.ones((1, dy)) + np.sqrt(1 - r * r) * rng.standard_normal((n, dy))
        pairs = [(paper003.EDGE(x, y), replayed(mutual_info.edge_paper003, x, y)),
                 (edge431.EDGE(x, y), replayed(mutual_info.edge, x, y)),
                 (edge431.EDGE(x, y, normalize_epsilon=False),
                  replayed(mutual_info.edge, x, y, options=mutual_info.EdgeOptions(calibrate=False)))]
        worst = max([worst] + [abs(a - b) for a, b in pairs])
        print(f"{n:>5}{dx:>5}{dy:>5}{r:>5.1f}  " + "  ".join(f"{f'{a:.6f} / {b:.6f}':>32}" for a, b in pairs))
    print(f"largest difference: {worst:.1e} bits")


if __name__ == "__main__":
    main()
