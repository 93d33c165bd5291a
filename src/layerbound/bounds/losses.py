"""Loss tables: from distance tensors to the numbers the papers plot (paper 001, Algorithm 2).

A distance tensor has shape (P, S_A, S_B): P random projections, class-A examples by class-B
examples.  For every budget eps of a grid, the optimal cross-entropy and 0-1 losses of each
projection's conflict graph are averaged over projections, with their spread, and with a
bootstrap interval: the S examples of each class are a sample, so the mean is recomputed on
resampled examples (and resampled projections), and the 2.5 and 97.5 percentiles of those
replicates bound a 95% interval that covers both sources of noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.errors import first_line
from ..core.schema import defaults
from ..collide.options import adversary_label
from .graph import loss_sweep
from .eps import eps_grid

__all__ = ["TABLE_COLUMNS", "KEY_COLUMNS", "eps_grid", "example_draws", "loss_table", "summarize", "write_table",
           "read_table", "stack"]

TABLE_COLUMNS = [
    "eps",
    "ce_mean",
    "ce_std",
    "ce_min",
    "ce_max",
    "zero_one_mean",
    "zero_one_std",
    "zero_one_min",
    "zero_one_max",
    "edges_mean",
    "projections",
    "ce_lo",
    "ce_hi",
    "zero_one_lo",
    "zero_one_hi",
    "adversary",
    "fell_back",
    "fell_back_midpoint",
]
# What identifies a merged distance file (and so a loss table): the pair set and the collision
# method are part of it so two methods, or two pair sets, never mix in one summary.
KEY_COLUMNS = ["dataset", "pairset", "method", "model", "layer", "m"]


def _spread(values: np.ndarray, name: str) -> dict:
    # Sample standard deviation over projections (ddof=1); a single projection has no spread.
    std = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.zeros(values.shape[1])
    return {
        f"{name}_mean": values.mean(axis=0),
        f"{name}_std": std,
        f"{name}_min": values.min(axis=0),
        f"{name}_max": values.max(axis=0),
    }


# The bootstrap's replicates, interval and seed. One seed for every table: replicate r resamples
# the same examples in every layer's table (of one pair set), so layers are compared on the
# same resamples.
BOOTSTRAP_REPLICATES = defaults("losses")["bootstrap"]
BOOTSTRAP_LEVEL = 0.95
BOOTSTRAP_SEED = 20261123


def example_draws(n_a: int, n_b: int, replicates: int = BOOTSTRAP_REPLICATES,
                  seed: int = BOOTSTRAP_SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """The bootstrap's resamples of the examples: per replicate, S_A class-A and S_B class-B indices
    drawn with replacement. They depend on the sizes and the seed only, so every table of a pair
    set (and the claims that compare them, layerbound.bounds.claims) resamples the same examples."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(n_a, size=n_a), rng.integers(n_b, size=n_b)) for _ in range(replicates)]


def bootstrap(distances: np.ndarray, grid: np.ndarray, replicates: int = BOOTSTRAP_REPLICATES,
              level: float = BOOTSTRAP_LEVEL, seed: int = BOOTSTRAP_SEED) -> dict[str, np.ndarray]:
    """Percentile bootstrap interval of the projection-averaged losses at every eps.

    Replicate r draws S_A class-A and S_B class-B examples with replacement (a multiset: a point
    drawn twice is two vertices with the same edges) and P projections with replacement, and
    takes the mean over the drawn projections of the optimal losses on the drawn examples.
    Returns {"ce_lo", "ce_hi", "zero_one_lo", "zero_one_hi"} of shape (len(grid),); NaN when
    replicates is 0.
    """
    n_p, n_a, n_b = distances.shape
    if replicates <= 0:
        nan = np.full(grid.size, np.nan)
        return {"ce_lo": nan, "ce_hi": nan, "zero_one_lo": nan, "zero_one_hi": nan}
    projections = np.random.default_rng(seed + 1)   # separate: examples do not depend on P
    stack = []
    for a, b in example_draws(n_a, n_b, replicates, seed):
        p = projections.integers(n_p, size=n_p)
        stack.append(distances[p][:, a][:, :, b])
    res = loss_sweep(np.concatenate(stack), grid)   # all replicates as one stack: one batched solve
    tail = 100 * (1 - level) / 2
    out = {}
    for name in ("ce", "zero_one"):
        means = res[name].reshape(replicates, n_p, grid.size).mean(axis=1)
        out[f"{name}_lo"], out[f"{name}_hi"] = np.percentile(means, [tail, 100 - tail], axis=0)
    return out


def loss_table(distances, eps_grid, replicates: int = BOOTSTRAP_REPLICATES,
               adversary: str = adversary_label(None), candidates=None) -> pd.DataFrame:
    """Optimal losses over projections for every eps, one row per eps (sorted).

    Parameters
    ----------
    distances : array (P, S_A, S_B)
        Collision distances per projection; edge when distance <= eps.
    eps_grid : 1-D array
        Budgets.

    Returns
    -------
    DataFrame with columns :data:`TABLE_COLUMNS`; ``*_std`` is the sample standard deviation
    over projections (0 for a single projection), ``*_lo`` / ``*_hi`` the bootstrap interval
    (:func:`bootstrap`, `replicates` replicates; NaN for 0), ``adversary`` the threat model the
    distances are for (collide.options.adversary_label), on every row, and ``fell_back`` /
    ``fell_back_midpoint`` how many of the P x S_A x S_B collisions are not the method's best
    because it could not be certified (collide/certify.py): reported from an earlier candidate or
    the midpoint / from the midpoint, from `candidates` (same shape as distances: the
    certificates' candidate index, -1 the midpoint; None counts none).
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 3 or 0 in d.shape:
        raise ValueError(f"distances must have shape (P, S_A, S_B) with none of them 0, got {d.shape}")
    # A NaN would count as no edge and a negative distance as an edge at eps = 0: both move the bound.
    if not np.isfinite(d).all() or (d < 0).any():
        bad = int((~np.isfinite(d) | (d < 0)).sum())
        raise ValueError(f"distances must be finite and non-negative: {bad} of {d.size} are not")
    if candidates is not None and np.shape(candidates) != d.shape:
        raise ValueError(f"candidates must have the distances' shape {d.shape}, got {np.shape(candidates)}")
    grid = np.unique(np.asarray(eps_grid, dtype=np.float64))
    res = loss_sweep(d, grid)
    table = {"eps": grid, **_spread(res["ce"], "ce"), **_spread(res["zero_one"], "zero_one")}
    table["edges_mean"] = res["edges"].mean(axis=0)
    table["projections"] = np.full(grid.size, d.shape[0], dtype=np.int64)
    table.update(bootstrap(d, grid, replicates))
    table["adversary"] = [adversary] * grid.size
    chosen = np.zeros(d.shape, dtype=np.int64) if candidates is None else np.asarray(candidates)
    table["fell_back"] = np.full(grid.size, int((chosen != 0).sum()), dtype=np.int64)
    table["fell_back_midpoint"] = np.full(grid.size, int((chosen < 0).sum()), dtype=np.int64)
    return pd.DataFrame(table, columns=TABLE_COLUMNS)


def summarize(tables: Mapping) -> pd.DataFrame:
    """Stack loss tables keyed by (dataset, pairset, method, model, layer, m) into one summary table.

    One row per key and eps, in the order of ``tables`` (layers keep their
    network order rather than an alphabetical one).
    """
    parts = []
    for key, table in tables.items():
        if len(key) != len(KEY_COLUMNS):
            raise ValueError(f"summary keys are ({', '.join(KEY_COLUMNS)}), got {key!r}")
        part = table.loc[:, TABLE_COLUMNS].copy()
        for name, value in reversed(list(zip(KEY_COLUMNS, key))):
            part.insert(0, name, value)
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=KEY_COLUMNS + TABLE_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def stack(keyed_tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate tables that already carry their key columns (as :func:`summarize` writes them)."""
    if not keyed_tables:
        return pd.DataFrame(columns=KEY_COLUMNS + TABLE_COLUMNS)
    for table in keyed_tables:
        if list(table.columns) != KEY_COLUMNS + TABLE_COLUMNS:
            raise ValueError(f"a keyed loss table has columns {KEY_COLUMNS + TABLE_COLUMNS}, got {list(table.columns)}")
    return pd.concat(list(keyed_tables), ignore_index=True)


def write_table(table: pd.DataFrame, path) -> None:
    """Write a loss or summary table as CSV (full float precision), atomically."""
    from ..core.store import write_csv

    write_csv(path, table, "%.17g")


_RERUN = " (delete it and run the workflow again, or `layerbound losses` / `layerbound summarize`)"


def _some(names: list[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def read_table(path) -> pd.DataFrame:
    """Read a keyed loss or summary table written by :func:`write_table`; anything else fails in one
    line naming the file."""
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a loss table of `layerbound losses`: {first_line(err)}{_RERUN}") from None
    expected = KEY_COLUMNS + TABLE_COLUMNS
    if list(table.columns) != expected:
        missing = [c for c in expected if c not in table.columns]
        unknown = [repr(c) for c in table.columns if c not in expected]
        parts = [f"{len(missing)} of its {len(expected)} columns missing ({_some(missing)})" if missing else "",
                 f"unknown columns {_some(unknown)}" if unknown else ""]
        raise ValueError(f"{path} is not a loss table of `layerbound losses`: "
                         f"{'; '.join(p for p in parts if p) or 'its columns are in another order'}{_RERUN}")
    if table.empty:   # a header only: an empty summary
        return table
    numeric = ["m"] + [c for c in TABLE_COLUMNS if c != "adversary"]
    text = [c for c in numeric if not pd.api.types.is_numeric_dtype(table[c])]
    if text:
        raise ValueError(f"{path} is not a loss table of `layerbound losses`: column(s) {text} are not numbers{_RERUN}")
    blank = [c for c in KEY_COLUMNS + ["eps", "ce_mean", "zero_one_mean"] if table[c].isna().any()]
    if blank:
        raise ValueError(f"{path} is not a loss table of `layerbound losses`: column(s) {blank} have empty cells"
                         f"{_RERUN}")
    return table
