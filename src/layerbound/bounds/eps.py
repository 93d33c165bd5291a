"""The budgets eps at which the optimal losses are computed (`losses.eps`)."""

from __future__ import annotations

from typing import Any

import numpy as np


def eps_grid(spec: Any) -> np.ndarray:
    """Sorted distinct budgets from `losses.eps`: {start, stop, num} (inclusive linspace) or a list."""
    if isinstance(spec, dict):
        missing = {"start", "stop", "num"} - set(spec)
        if missing:
            raise ValueError(f"eps grid needs start, stop and num; missing {sorted(missing)}")
        num = int(spec["num"])
        if num < 1 or num != spec["num"]:
            raise ValueError(f"eps grid num must be a positive integer, got {spec['num']!r}")
        grid = np.linspace(float(spec["start"]), float(spec["stop"]), num)
    else:
        grid = np.atleast_1d(np.asarray(spec, dtype=np.float64))
        if grid.ndim != 1 or grid.size == 0:
            raise ValueError(f"eps grid must be a non-empty list of numbers, got {spec!r}")
    if not np.isfinite(grid).all() or (grid < 0).any():
        raise ValueError(f"eps values must be finite and non-negative, got {grid}")
    return np.unique(grid)
