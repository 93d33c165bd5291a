"""Seeded random projections a(u) = A u, A in R^{m x n_j} with i.i.d. N(0, 1) entries (paper 001, Sec. 4).

A projection is never stored: its seed is derived from (experiment seed, model, layer, m,
projection index), and the matrix is drawn on the CPU in float64 from that seed, so any shard can
be recomputed alone, on any device, and gets the same A. When m >= n_j a Gaussian A is injective
with probability one and gives the same collisions as the identity, so no projection is drawn
(`matrix` returns None) and there is a single "projection". Importing this module does not import
torch (the workflow's plan uses `is_identity`).
"""

from __future__ import annotations

from ..core import seeds

SEED_SCHEME = "layerbound-projection-v1"


def seed(experiment_seed: int, model: str, layer: str, m: int, index: int) -> int:
    """The 63-bit seed of projection `index` of (model, layer) at dimension m."""
    return seeds.derive(f"{SEED_SCHEME}|{int(experiment_seed)}|{model}|{layer}|{int(m)}|{int(index)}")


def is_identity(m: int, n: int) -> bool:
    """m >= n: the projection is injective, equivalent to no projection."""
    return int(m) >= int(n)


def matrix(seed_value: int, m: int, n: int, dtype=None, device="cpu"):
    """A (m x n, i.i.d. N(0, 1), float32 unless `dtype`) for a seed, or None when m >= n (identity)."""
    import torch

    if is_identity(m, n):
        return None
    generator = torch.Generator(device="cpu").manual_seed(int(seed_value))
    A = torch.randn(int(m), int(n), generator=generator, dtype=torch.float64)
    return A.to(device=device, dtype=dtype or torch.float32)


def draw(experiment_seed: int, model: str, layer: str, m: int, index: int, n: int, dtype=None, device="cpu"):
    """The projection `index` of (model, layer) at dimension m for a layer of width n."""
    return matrix(seed(experiment_seed, model, layer, m, index), m, n, dtype=dtype, device=device)
