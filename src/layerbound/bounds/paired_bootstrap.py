"""A paired bootstrap for statistics that compare merged distance files of one pair set.

Every merged file of a run holds distances between the same 2S examples (the pair set), so the
noise of the choice of examples is shared by the layers and models a statistic compares. Each
replicate therefore resamples the same example indices in every file (the loss tables' own
draws, :func:`layerbound.bounds.losses.example_draws`), and the difference of two layers keeps the
correlation that two separate per-layer bands would lose. Projections are independent random
matrices for each (model, layer, m): each file resamples its own, from a generator seeded by its
name, so its draws do not depend on which other files a statistic reads.

Arrays have one row per replicate, row 0 being the full sample (every example and projection).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from . import losses
from .graph import loss_sweep

__all__ = ["PairedBootstrap", "HALF_LOG2", "mean_loss", "cliff", "interval"]

HALF_LOG2 = math.log(2.0) / 2
# Resampled conflict graphs solved per loss_sweep call (bounds the stacked distances' memory).
GRAPHS_PER_SOLVE = 4000


def _stream(name: str) -> int:
    """A stable integer from a file's name (Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


class PairedBootstrap:
    """Resampled losses and distances of merged files of S_A x S_B pairs on one eps grid."""

    def __init__(self, eps_grid: Sequence[float], n_a: int, n_b: int, replicates: int,
                 seed: int = losses.BOOTSTRAP_SEED):
        self.grid = np.unique(np.asarray(eps_grid, dtype=np.float64))
        self.n_a, self.n_b, self.replicates, self.seed = int(n_a), int(n_b), int(replicates), int(seed)
        full = (np.arange(self.n_a), np.arange(self.n_b))
        self.draws = [full] + losses.example_draws(self.n_a, self.n_b, max(self.replicates, 0), self.seed)

    def projection_draws(self, name: str, n_p: int) -> list[np.ndarray]:
        """Row 0: every projection; then P indices with replacement per replicate, from `name`'s stream."""
        rng = np.random.default_rng([self.seed, _stream(name)])
        return [np.arange(n_p)] + [rng.integers(n_p, size=n_p) for _ in range(len(self.draws) - 1)]

    def _check(self, distances) -> np.ndarray:
        d = np.asarray(distances, dtype=np.float64)
        if d.ndim != 3 or d.shape[1:] != (self.n_a, self.n_b):
            raise ValueError(f"distances must have shape (P, {self.n_a}, {self.n_b}), got {d.shape}")
        return d

    def ce_curves(self, name: str, distances) -> np.ndarray:
        """(R + 1, len(grid)): the projection-averaged optimal cross-entropy on each resample."""
        d = self._check(distances)
        n_p = d.shape[0]
        per_solve = max(1, GRAPHS_PER_SOLVE // n_p)
        ce = []
        for start in range(0, len(self.draws), per_solve):
            block = np.concatenate([d[:, a][:, :, b] for a, b in self.draws[start:start + per_solve]])
            ce.append(loss_sweep(block, self.grid, zero_one=False)["ce"].reshape(-1, n_p, self.grid.size))
        ce = np.concatenate(ce)
        return np.stack([ce[r, p].mean(axis=0) for r, p in enumerate(self.projection_draws(name, n_p))])

    def mean_distances(self, name: str, distances) -> np.ndarray:
        """(R + 1,): the mean distance over the resampled pairs and projections."""
        d = self._check(distances)
        picks = self.projection_draws(name, d.shape[0])
        return np.array([d[p][:, a][:, :, b].mean() for (a, b), p in zip(self.draws, picks)])

    def example_means(self, per_example: np.ndarray) -> np.ndarray:
        """(R + 1, ...): the mean over the resampled examples of a per-example array whose first
        axis holds the S_A class-A examples, then the S_B class-B ones (the pair set's order)."""
        values = np.asarray(per_example, dtype=np.float64)
        if values.shape[0] != self.n_a + self.n_b:
            raise ValueError(f"expected {self.n_a + self.n_b} examples (class A, then class B), got {values.shape[0]}")
        return np.stack([values[np.concatenate([a, self.n_a + b])].mean(axis=0) for a, b in self.draws])


def mean_loss(curves: np.ndarray, grid: Sequence[float]) -> np.ndarray:
    """A: the area under each loss curve over the grid (trapezoid rule) divided by the grid's span;
    the loss itself on a one-budget grid."""
    grid = np.asarray(grid, dtype=np.float64)
    curves = np.asarray(curves, dtype=np.float64)
    if grid.size == 1:
        return curves[..., 0]
    widths = np.diff(grid)
    area = ((curves[..., 1:] + curves[..., :-1]) / 2 * widths).sum(axis=-1)
    return area / (grid[-1] - grid[0])


def cliff(curves: np.ndarray, grid: Sequence[float], level: float = HALF_LOG2) -> np.ndarray:
    """E: the budget at which each (non-decreasing) curve first reaches `level`, linearly
    interpolated between the grid budgets around the crossing; +inf where it never does."""
    grid = np.asarray(grid, dtype=np.float64)
    curves = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    out = np.full(curves.shape[0], np.inf)
    for r, curve in enumerate(curves):
        reached = np.flatnonzero(curve >= level - 1e-12)
        if reached.size == 0:
            continue
        k = reached[0]
        if k == 0:
            out[r] = grid[0]
        else:
            below, above = curve[k - 1], curve[k]
            out[r] = grid[k - 1] + (level - below) * (grid[k] - grid[k - 1]) / (above - below)
    return out


def interval(values: np.ndarray, level: float = losses.BOOTSTRAP_LEVEL) -> tuple[float, float]:
    """The (lower, upper) order statistics of the replicates (rows 1..R) at the two tails: numpy's
    `lower` and `higher` quantiles, never interpolated, so +-inf are kept; NaN without replicates."""
    replicates = np.asarray(values, dtype=np.float64)[1:]
    if replicates.size == 0:
        return float("nan"), float("nan")
    if np.isnan(replicates).any():
        raise ValueError("a bootstrap replicate of the statistic is NaN")
    tail = (1 - level) / 2
    return (float(np.quantile(replicates, tail, method="lower")),
            float(np.quantile(replicates, 1 - tail, method="higher")))
