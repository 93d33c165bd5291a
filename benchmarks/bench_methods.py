"""Algorithm 1 against paper 002's polytope descent on the same pairs (issue 13); prints ratios.

Reads a finished run of `config/paper002_fcnn.yaml` (run it first, in its own clone: see
docs/reproducing.md): for every model and layer searched by both methods, the median over pairs of the
distance Algorithm 1 found (no projection) over the median the descent found, the fraction of
pairs where each method is strictly closer, and each method's CPU time per pair (the shards' `cpu_time`
from Snakemake's benchmark files over its pairs). Layers where both use the closed form (the first
linear layer) show 1.000.

    python benchmarks/bench_methods.py [--results results] [--configfile config/paper002_fcnn.yaml]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from layerbound import config
from layerbound.collide import shards
from layerbound import plan


def shard_seconds(results: Path, unit: plan.Unit) -> float:
    """CPU seconds of a unit's shards (one thread each; unlike the wall time, not inflated when other
    jobs share the cores), from the benchmark files Snakemake wrote beside results."""
    total = 0.0
    for shard in unit.shard_paths(str(results)):
        rel = Path(shard).relative_to(results)
        bench = results / "benchmarks" / rel.with_suffix(".tsv")
        with open(bench) as handle:
            total += float(list(csv.DictReader(handle, delimiter="\t"))[-1]["cpu_time"])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--configfile", default="config/paper002_fcnn.yaml")
    args = parser.parse_args()
    results = Path(args.results)
    p = plan.Plan(config.load(args.configfile), root=str(results))
    print(f"{'model':<22}{'layer':<9}{'median jacobian / polytope':>28}{'polytope closer':>17}"
          f"{'jacobian closer':>17}{'s/pair polytope':>17}{'s/pair jacobian':>17}")
    for (dataset, pairset, model, m), (methods, layers) in p.method_comparisons().items():
        if not {"jacobian", "polytope"} <= set(methods):
            continue
        for layer in layers:
            units = {method: p.unit(dataset, pairset, method, model, layer, m) for method in ("jacobian", "polytope")}
            if not all(Path(u.merged_path(str(results))).is_file() for u in units.values()):
                print(f"{model:<22}{layer:<9}{'(not computed yet)':>28}")
                continue
            d = {method: shards.read_merged(u.merged_path(str(results)))[0]["distances"][0].ravel()
                 for method, u in units.items()}
            pairs = d["polytope"].size
            ratio = np.median(d["jacobian"]) / np.median(d["polytope"])
            closer_p = np.mean(d["polytope"] < d["jacobian"] * (1 - 1e-6))
            closer_j = np.mean(d["jacobian"] < d["polytope"] * (1 - 1e-6))
            seconds = {method: shard_seconds(results, u) / pairs for method, u in units.items()}
            print(f"{model:<22}{layer:<9}{ratio:>28.3f}{closer_p:>17.0%}{closer_j:>17.0%}"
                  f"{seconds['polytope']:>17.3f}{seconds['jacobian']:>17.3f}", flush=True)


if __name__ == "__main__":
    main()
