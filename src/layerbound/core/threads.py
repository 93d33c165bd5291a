"""CPU threads of each kind of job: one table for the workflow's rules, the `layerbound` command and
the Python API.

JOB_THREADS[rule] is what the workflow's rule asks Snakemake for (Snakemake caps it at --cores, a
profile's set-threads may change it) and passes to its command as --threads. Run by hand, a command
of that kind takes the same unless --threads says otherwise, and so do the Python API's functions
unless their `threads` argument does. torch's own default (a thread per core) is what none of them
takes: collision searches work on small tensors, and OpenMP's barriers dominate on a busy machine
(the API's collision search took 218 s with it and 26 s with one thread, on a loaded 2-core machine).
Nothing here imports torch until threads are set, so the workflow plans without it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

JOB_THREADS = {
    "train_model": 8,        # training: large batches, where threads pay off
    "import_model": 8,       # evaluating a loaded model: the same work as a trained model's evaluation
    "semirobust_run": 2,     # retraining f_b beside other jobs
    "collide_shard": 1,      # many shards run side by side
    "attacks_model": 1,      # beside the shards on a small machine
    "attacks_fab_pairs": 1,
}


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def for_job(rule: str) -> int:
    """The threads of a job of workflow rule `rule`, at most the CPUs available (as Snakemake caps
    them at --cores)."""
    return min(JOB_THREADS[rule], available_cpus())


def check(threads: int | None, where: str) -> None:
    """None (the job's default) or a positive whole number; ValueError in one line otherwise."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"{where}: threads must be a whole number >= 1 (or None for the workflow's), not {threads!r}")


@contextlib.contextmanager
def limited(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to `threads` inside the block, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
