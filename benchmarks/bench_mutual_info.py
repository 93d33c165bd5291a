"""The mutual information estimators against Gaussians of known mutual information; prints each
estimate beside the truth.

X and Y are d-dimensional, Y = r X + sqrt(1 - r^2) Z with X, Z standard normal, so the d
coordinate pairs are independent with correlation r and I(X; Y) = -d/2 log2(1 - r^2) bits (r = 0:
independent data, I = 0). For each (N, d, r) the table gives, per estimator, the mean and standard
deviation over `--repeats` draws (data seed and estimator seed both vary): `edge_paper003` (paper
003's code's EDGE), `edge` (EDGE_4_3_1's, `mutual_info.EdgeOptions()`), `ksg` (k = 3); then each
estimator's seconds per estimate. KSG is skipped above d = 50 (its k-d trees degrade to brute force
there). Every number of one table comes from one run.

    python benchmarks/bench_mutual_info.py [--repeats 5] [--n 1000 2000] [--dims 1 2 10 50] [--markdown]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from layerbound.semirobust.mutual_info import ESTIMATORS, estimate

GRID_D = (1, 2, 10, 50)
GRID_R = (0.0, 0.5, 0.9)
KSG_MAX_D = 50


def correlated_gaussians(n: int, d: int, r: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, r * x + math.sqrt(1.0 - r * r) * rng.standard_normal((n, d))


def truth_bits(d: int, r: float) -> float:
    return -0.5 * d * math.log2(1.0 - r * r) + 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--dims", type=int, nargs="+", default=list(GRID_D))
    parser.add_argument("--r", type=float, nargs="+", default=list(GRID_R))
    parser.add_argument("--estimators", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS))
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    print_header(args.estimators, args.markdown)
    for n in args.n:
        for d in args.dims:
            for r in args.r:
                values = {e: [] for e in args.estimators}
                seconds = {e: [] for e in args.estimators}
                for rep in range(args.repeats):
                    x, y = correlated_gaussians(n, d, r, seed=1000 * d + rep)
                    for e in args.estimators:
                        if e == "ksg" and d > KSG_MAX_D:
                            continue
                        started = time.perf_counter()
                        values[e].append(estimate(x, y, e, seed=rep))
                        seconds[e].append(time.perf_counter() - started)
                print_row(n, d, r, values, seconds, args.markdown)


def print_header(estimators, markdown: bool) -> None:
    if markdown:
        print("| N | d | r | truth (bits) | " + " | ".join(f"{e} (bits)" for e in estimators) + " | "
              + " | ".join(f"{e} s" for e in estimators) + " |")
        print("| --- " * (4 + 2 * len(estimators)) + "|")
    else:
        print(f"{'N':>6}{'d':>5}{'r':>5}{'truth':>9}" + "".join(f"{e:>22}" for e in estimators)
              + "".join(f"{e + ' s':>17}" for e in estimators))


def print_row(n, d, r, values, seconds, markdown: bool) -> None:
    cells = [f"{np.mean(v):.3f} +- {np.std(v):.3f}" if v else "-" for v in values.values()]
    secs = [f"{np.mean(s):.2f}" if s else "-" for s in seconds.values()]
    truth = truth_bits(d, r)
    if markdown:
        print(f"| {n} | {d} | {r:.1f} | {truth:.3f} | " + " | ".join(cells) + " | " + " | ".join(secs) + " |",
              flush=True)
    else:
        print(f"{n:>6}{d:>5}{r:>5.1f}{truth:>9.3f}" + "".join(f"{c:>22}" for c in cells)
              + "".join(f"{s:>17}" for s in secs), flush=True)


if __name__ == "__main__":
    main()
