"""Paper 001, Section 6.1: the loss FAB reaches on the pair set, per example and averaged, on an eps
grid; the claims compare it with the collision loss and Figure 5 draws both (figures/fab.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def fab_example_losses(points: pd.DataFrame, eps: Sequence[float], loss: str = "ce") -> np.ndarray:
    """(examples, len(eps)): each example's two-class cross-entropy at its FAB point when that
    point's norm is at most eps, else at the clean point (points: attacks.evaluate.FAB_PAIR_COLUMNS).
    `loss="ce_all"`: the cross-entropy over all the model's classes instead."""
    norms = points["norm"].to_numpy(dtype=np.float64)
    clean, fab = points[f"{loss}_clean"].to_numpy(dtype=np.float64), points[f"{loss}_fab"].to_numpy(dtype=np.float64)
    eps = np.asarray(eps, dtype=np.float64)
    reached = norms[:, None] <= eps[None, :]
    return np.where(reached, fab[:, None], clean[:, None])


def fab_loss_curve(points: pd.DataFrame, eps: Sequence[float], loss: str = "ce") -> np.ndarray:
    """At each eps, the mean over the examples of :func:`fab_example_losses`."""
    return fab_example_losses(points, eps, loss).mean(axis=0)
