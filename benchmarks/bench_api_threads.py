"""Benchmark of the Python API's thread count (issue 24): the wall time of one api.collisions call
on the threads it takes by default (the workflow's collision shard's, layerbound.core.threads) against
torch's own default (a thread per core), measured in one run. Each setting runs in a fresh
subprocess, alternating, `--repeats` times; the ratio of the medians is printed. The machine's load
matters: say what else ran beside it.

    python benchmarks/bench_api_threads.py [--per-class 6] [--m 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

RUN = """
import json, sys, time, torch
from layerbound import api
from layerbound.models import registry as models
torch.manual_seed(0)
net = models.build("medium", (1, 28, 28), 10).eval()
pairs = api.sample_pairs("mnist5k", per_class={per_class})
threads = None if {torch_default} else 1
if {torch_default}:
    import layerbound.core.threads as t
    t.for_job = lambda rule: torch.get_num_threads()   # torch's own default, as before issue 24
started = time.perf_counter()
api.collisions(net, "conv2", pairs, m={m}, projections=1, threads=threads)
print(json.dumps({{"seconds": time.perf_counter() - started, "threads": torch.get_num_threads()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=6)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for torch_default in (False, True):
            code = RUN.format(per_class=args.per_class, m=args.m, torch_default=torch_default)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            times[torch_default].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    import torch

    default, mine = statistics.median(times[True]), statistics.median(times[False])
    print(f"api.collisions, Medium CNN conv2, m={args.m}, {args.per_class ** 2} pairs, {args.repeats} runs each:")
    print(f"  default threads (layerbound.core.threads: 1): median {mine:.1f} s {[round(t, 1) for t in times[False]]}")
    print(f"  torch's default ({torch.get_num_threads()} threads): median {default:.1f} s "
          f"{[round(t, 1) for t in times[True]]}")
    print(f"  ratio torch's default / default: {default / mine:.2f}")


if __name__ == "__main__":
    main()
