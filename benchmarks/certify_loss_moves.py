"""How much the float64 certificates moved a finished run's distances and losses; prints one run's numbers.

For every merged distance file under a results folder: the certified distance over the search's own
(uncertified) distance (median, min, max), how many pairs fell back (to an earlier candidate, to
the midpoint), and the largest change of the projection-averaged optimal cross-entropy and 0-1
loss over the config's eps grid between the two sets of distances (no bootstrap).

    python benchmarks/certify_loss_moves.py results config.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from layerbound import config
from layerbound.collide import shards
from layerbound.bounds import losses
from layerbound import plan
from layerbound.collide.options import adversary_label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a finished run's results folder")
    parser.add_argument("config", help="the config file of that run")
    args = parser.parse_args()
    root, cfg = args.results, config.load(args.config)
    eps = plan.eps_grid(cfg["losses"]["eps"])
    pairs = fell = midpoint = 0
    worst_ce = worst_01 = 0.0
    for f in sorted(root.glob("distances/**/*.h5")):
        arrays, attrs = shards.read_merged(f)
        adversary = adversary_label(json.loads(attrs["options_json"]).get("box"))
        certified, searched, candidate = arrays["distances"], arrays["search_distances"], arrays["candidates"]
        new = losses.loss_table(certified, eps, 0, adversary, candidate)
        old = losses.loss_table(searched, eps, 0, adversary)
        d_ce = float((new.ce_mean - old.ce_mean).abs().max())
        d_01 = float((new.zero_one_mean - old.zero_one_mean).abs().max())
        ratio = certified / np.where(searched > 0, searched, 1.0)
        pairs, fell, midpoint = pairs + candidate.size, fell + int((candidate != 0).sum()), midpoint + int((candidate < 0).sum())
        worst_ce, worst_01 = max(worst_ce, d_ce), max(worst_01, d_01)
        print(f"{f.relative_to(root)}: certified / search median {np.median(ratio):.6f} min {ratio.min():.6f} "
              f"max {ratio.max():.6f}; fell back {int((candidate != 0).sum())} (midpoint {int((candidate < 0).sum())}) "
              f"of {candidate.size}; largest |change| cross-entropy {d_ce:.2e}, 0-1 {d_01:.2e}")
    print(f"all: {pairs} collisions, {fell} fell back ({midpoint} to the midpoint); largest loss change: "
          f"cross-entropy {worst_ce:.3e} nats, 0-1 {worst_01:.3e}")


if __name__ == "__main__":
    main()
