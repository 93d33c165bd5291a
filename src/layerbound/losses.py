"""Loss tables: from distance tensors to the numbers the papers plot (paper 001, Algorithm 2).

A distance tensor has shape (P, S_A, S_B): P random projections, class-A examples by class-B
examples.  For every budget eps of a grid, the optimal cross-entropy and 0-1 losses of each
projection's conflict graph are averaged over projections, with their spread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .graph import loss_sweep
from .plan import eps_grid

__all__ = ["TABLE_COLUMNS", "KEY_COLUMNS", "eps_grid", "loss_table", "summarize", "write_table",
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


def loss_table(distances, eps_grid) -> pd.DataFrame:
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
    over projections (0 for a single projection).
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 3:
        raise ValueError(f"distances must have shape (P, S_A, S_B), got {d.shape}")
    grid = np.unique(np.asarray(eps_grid, dtype=np.float64))
    res = loss_sweep(d, grid)
    table = {"eps": grid, **_spread(res["ce"], "ce"), **_spread(res["zero_one"], "zero_one")}
    table["edges_mean"] = res["edges"].mean(axis=0)
    table["projections"] = np.full(grid.size, d.shape[0], dtype=np.int64)
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
    """Write a loss or summary table as CSV (full float precision)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.17g")


def read_table(path) -> pd.DataFrame:
    """Read a table written by :func:`write_table`."""
    return pd.read_csv(path)
