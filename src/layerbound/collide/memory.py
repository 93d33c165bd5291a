"""How many pairs the collision search processes at once on a GPU.

On a GPU every Jacobian row of a batch is computed in one vmapped backward pass, so memory grows
with m times the batch. The search measures what one pair needs on the device itself (the peak
memory of one search step on a few pairs, above what was in use before) and takes as many pairs as
fit in a fraction SAFETY of the free memory, never more than the configured batch size: a shard
cannot run out of memory on a 16 GB card, and a larger card takes more pairs at once as far as
the configured batch size allows. On the CPU the
configured batch size is used as it is.
"""

from __future__ import annotations

from typing import Callable

import torch

# Fraction of the free GPU memory the search plans to use: the rest absorbs the allocator's
# fragmentation, cuBLAS/cuSOLVER workspaces and the pairs leaving the batch at different times.
SAFETY = 0.5
# Pairs of the measuring step: enough to average out fixed costs, few enough to fit any card.
PROBE_PAIRS = 8


def pairs_that_fit(free_bytes: int, bytes_per_pair: float, safety: float = SAFETY) -> int:
    """The number of pairs whose measured memory fits in `safety` of `free_bytes` (at least 1)."""
    if not bytes_per_pair > 0:
        raise ValueError(f"bytes per pair must be positive, not {bytes_per_pair}")
    if not 0 < safety <= 1:
        raise ValueError(f"safety must lie in (0, 1], not {safety}")
    return max(1, int(safety * free_bytes // bytes_per_pair))


def planned_batch_size(requested: int, free_bytes: int, bytes_per_pair: float, safety: float = SAFETY) -> int:
    """The configured batch size, lowered to what the device's free memory holds."""
    return max(1, min(int(requested), pairs_that_fit(free_bytes, bytes_per_pair, safety)))


def measure_bytes_per_pair(step: Callable[[int], object], pairs: int, device: torch.device) -> float:
    """Peak CUDA memory of `step(pairs)` above the memory allocated before it, per pair."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step(pairs)
    torch.cuda.synchronize(device)
    return max(torch.cuda.max_memory_allocated(device) - before, 1) / pairs


def gpu_batch_size(step: Callable[[int], object], num_pairs: int, requested: int, device: torch.device,
                   log: Callable[[str], None] = print) -> int:
    """The batch size for a search on a CUDA device: measure a step on a few pairs, then plan."""
    probe = min(PROBE_PAIRS, num_pairs)
    bytes_per_pair = measure_bytes_per_pair(step, probe, device)
    free, total = torch.cuda.mem_get_info(device)
    batch = planned_batch_size(requested, free, bytes_per_pair)
    log(f"GPU memory: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free, {bytes_per_pair / 2**20:.1f} MiB per "
        f"pair measured: {batch} pairs at once (configured at most {requested})")
    return batch
