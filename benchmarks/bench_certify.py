"""What the float64 certificates cost and change on a config's shards; prints one run's numbers.

Runs every shard of the config's collision stage (or the first --limit of them) the way the
workflow does (shards.compute, nothing written) and prints, per (model, layer, m): the wall time
of the shards and the share of it spent certifying (collide/certify.py), the pairs that fell back
(to an earlier candidate, and to the midpoint), the polishing Jacobians per pair, how far the
certified distance moved from the search's own (ratio certified / search: median, min, max), and
the largest residual relative to the feature gap before (the search's best candidate, in float64)
and after (the certified point). The totals line gives the certification's share of all shard
time.

    python benchmarks/bench_certify.py [--config config.yaml] [--models medium_pgd2] [--threads 1]

Needs the config's trained checkpoints (`snakemake --cores 2 results/models/mnist5k/{medium_benign,medium_pgd2,medium_trades2}.pt`
for the default config); the pair set is sampled here. Run it alone: other jobs on the cores
distort the shares.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from layerbound import config
from layerbound.collide import shards
from layerbound import plan
from layerbound.data import pairs as pairsets

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--models", default=None, help="comma-separated (default: every model and baseline)")
    parser.add_argument("--limit", type=int, default=None, help="run only the first shards")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the workflow's shard jobs use 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.load(args.config)
    the_plan = plan.Plan(cfg)
    wanted = set(args.models.split(",")) if args.models else None
    todo = [(unit, s) for unit in plan.units(cfg) for s in unit.shards()
            if wanted is None or unit.model in wanted]
    todo = todo[:args.limit] if args.limit else todo
    rows: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory() as tmp:
        pair_files = {}
        for unit, s in todo:
            key = (s.dataset, s.pairset)
            if key not in pair_files:
                classes, per_class = cfg["pairs"]["classes"], cfg["pairs"]["per_class"]
                pair_set = pairsets.sample(s.dataset, classes, per_class, cfg["seed"], data_dir=ROOT / cfg["data_dir"])
                pair_files[key] = Path(tmp) / f"{s.dataset}-{s.pairset}.h5"
                pairsets.save(pair_files[key], pair_set)
            inputs = the_plan.shard_inputs(s.dataset, s.pairset, s.collision_method, s.model, s.layer, s.m,
                                           s.projection, s.chunk)
            timings: dict[str, float] = {}
            columns, attrs = shards.compute(
                s, pairs_file=pair_files[key], options=plan.collision_options(cfg, s.collision_method),
                experiment_seed=cfg["seed"], checkpoint_file=ROOT / inputs["checkpoint"] if "checkpoint" in inputs else None,
                arch=cfg["models"].get(s.model, {}).get("arch"), device="cpu", log=lambda line: None, timings=timings)
            row = rows[(s.model, s.layer, s.m)]
            row["shard"].append(timings["shard"])
            row["certify"].append(timings["certify"])
            for name in ("distance", "search_distance", "search_residual", "residual", "feature_gap", "candidate",
                         "polish_steps"):
                row[name].append(columns[name])
            row["solver"].append(attrs["solver"])
            print(f"{s.model}/{s.layer} m={s.m} p={s.projection} c={s.chunk}: {timings['shard']:.1f} s, "
                  f"certifying {timings['certify']:.1f} s", flush=True)

    print(f"\n{'model':<16}{'layer':<10}{'m':>6}{'shard s':>9}{'cert %':>8}{'fell back':>10}{'to mid':>8}"
          f"{'jac/pair':>9}{'ratio med':>11}{'min':>9}{'max':>9}{'res/gap before':>16}{'after':>10}")
    total_shard = total_certify = 0.0
    for (model, layer, m), row in rows.items():
        col = {k: np.concatenate(v) for k, v in row.items() if k not in ("shard", "certify", "solver")}
        shard_s, certify_s = sum(row["shard"]), sum(row["certify"])
        total_shard, total_certify = total_shard + shard_s, total_certify + certify_s
        ratio = col["distance"] / np.where(col["search_distance"] > 0, col["search_distance"], 1.0)
        gap = np.where(col["feature_gap"] > 0, col["feature_gap"], 1.0)
        print(f"{model:<16}{layer:<10}{m:>6}{shard_s:>9.1f}{100 * certify_s / shard_s:>8.1f}"
              f"{int((col['candidate'] != 0).sum()):>10}{int((col['candidate'] < 0).sum()):>8}"
              f"{col['polish_steps'].mean():>9.2f}{np.median(ratio):>11.6f}{ratio.min():>9.6f}{ratio.max():>9.4f}"
              f"{(col['search_residual'] / gap).max():>16.2e}{(col['residual'] / gap).max():>10.2e}")
    print(f"\nall shards: {total_shard:.1f} s, certifying {total_certify:.1f} s = "
          f"{100 * total_certify / max(total_shard, 1e-9):.1f}% of shard time")


if __name__ == "__main__":
    main()
