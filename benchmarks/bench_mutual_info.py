"""EDGE and KSG against Gaussians of known mutual information (issue 16); prints estimate vs truth.

X and Y are d-dimensional, Y = r X + sqrt(1 - r^2) Z with X, Z standard normal, so the d
coordinate pairs are independent with correlation r and I(X; Y) = -d/2 log2(1 - r^2) bits. For each
(d, r, N) the table gives the mean and standard deviation over `--repeats` draws (data seed and
estimator seed both vary) of EDGE (the reference's defaults, `mutual_info.EdgeOptions()`) and of
KSG (k = 3), and EDGE's seconds per estimate. KSG is skipped above d = 50 (its k-d trees degrade
to brute force there).

    python benchmarks/bench_mutual_info.py [--repeats 5] [--n 2000] [--markdown]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from layerbound.mutual_info import edge, ksg

GRID_D = (1, 2, 5, 10, 20, 50, 500)
GRID_R = (0.0, 0.5, 0.9)


def correlated_gaussians(n: int, d: int, r: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, r * x + math.sqrt(1.0 - r * r) * rng.standard_normal((n, d))


def truth_bits(d: int, r: float) -> float:
    return -0.5 * d * math.log2(1.0 - r * r) + 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, nargs="+", default=[2000])
    parser.add_argument("--dims", type=int, nargs="+", default=list(GRID_D))
    parser.add_argument("--markdown", action="store_true", help="print a README table")
    args = parser.parse_args()
    rows = []
    for n in args.n:
        for d in args.dims:
            for r in GRID_R:
                edges, ksgs, seconds = [], [], []
                for rep in range(args.repeats):
                    x, y = correlated_gaussians(n, d, r, seed=1000 * d + rep)
                    started = time.perf_counter()
                    edges.append(edge(x, y, seed=rep))
                    seconds.append(time.perf_counter() - started)
                    if d <= 50:
                        ksgs.append(ksg(x, y, seed=rep))
                rows.append((n, d, r, truth_bits(d, r), np.mean(edges), np.std(edges),
                             np.mean(ksgs) if ksgs else None, np.std(ksgs) if ksgs else None, np.mean(seconds)))
                print_row(rows[-1], args.markdown, header=len(rows) == 1)


def print_row(row, markdown: bool, header: bool) -> None:
    n, d, r, truth, e_mean, e_std, k_mean, k_std, secs = row
    ksg_text = f"{k_mean:.3f} +- {k_std:.3f}" if k_mean is not None else "-"
    if markdown:
        if header:
            print("| N | d | r | truth (bits) | EDGE (bits) | KSG, k = 3 (bits) | EDGE s |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
        print(f"| {n} | {d} | {r:.1f} | {truth:.3f} | {e_mean:.3f} +- {e_std:.3f} | {ksg_text} | {secs:.2f} |",
              flush=True)
        return
    if header:
        print(f"{'N':>6}{'d':>5}{'r':>5}{'truth':>9}{'EDGE mean +- sd':>20}{'KSG mean +- sd':>20}{'EDGE s':>8}")
    print(f"{n:>6}{d:>5}{r:>5.1f}{truth:>9.3f}{f'{e_mean:.3f} +- {e_std:.3f}':>20}{ksg_text:>20}{secs:>8.2f}",
          flush=True)


if __name__ == "__main__":
    main()
