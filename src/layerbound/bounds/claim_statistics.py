"""The claims table: each claim's statistic on a run's distances, its interval and its verdict.

A row's value is the claim's statistic (layerbound.bounds.claims, docs/claims.md) on the full sample;
its 95% interval comes from the paired bootstrap of layerbound.bounds.paired_bootstrap (the same example
resamples in every merged file, each file's projections resampled on their own). The statistics
are built from three quantities of a merged file: A, the mean optimal cross-entropy over the eps
grid; E, the budget at which it reaches log(2)/2; D, the mean collision distance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from . import losses
from .claims import CLAIMS, EQUIVALENCE_MARGIN, FAB_LOSSES, Claim
from .paired_bootstrap import PairedBootstrap, cliff, interval, mean_loss

__all__ = ["CLAIM_COLUMNS", "STATISTICS", "evaluate", "verdict"]

CLAIM_COLUMNS = ["claim", "paper", "where", "statement", "statistic", "dataset", "pairset", "collision_method", "m",
                 "models", "layers", "value", "lo", "hi", "replicates", "verdict", "note"]


class _Quantities:
    """A, E, D and the loss curves of one instance's roles, each (R + 1,) or (R + 1, eps), cached per file."""

    def __init__(self, boot: PairedBootstrap, roles: Mapping[str, str], distances: Callable[[str], np.ndarray],
                 cache: dict, fab: np.ndarray | None = None):
        self.boot, self.roles, self.distances, self.cache, self.fab_losses = boot, roles, distances, cache, fab

    def curve(self, role: str) -> np.ndarray:
        name = self.roles[role]
        if ("ce", name) not in self.cache:
            self.cache[("ce", name)] = self.boot.ce_curves(name, self.distances(name))
        return self.cache[("ce", name)]

    def A(self, role: str) -> np.ndarray:
        return mean_loss(self.curve(role), self.boot.grid)

    def E(self, role: str) -> np.ndarray:
        return cliff(self.curve(role), self.boot.grid)

    def D(self, role: str) -> np.ndarray:
        name = self.roles[role]
        if ("d", name) not in self.cache:
            self.cache[("d", name)] = self.boot.mean_distances(name, self.distances(name))
        return self.cache[("d", name)]

    def seq(self, quantity: Callable[[str], np.ndarray], prefix: str) -> np.ndarray:
        """(n, R + 1): a quantity of the roles prefix0, prefix1, ... in order."""
        count = sum(1 for role in self.roles if role.startswith(prefix) and role[len(prefix):].isdigit())
        return np.stack([quantity(f"{prefix}{i}") for i in range(count)])

    def fab_curve(self) -> np.ndarray:
        return self.boot.example_means(self.fab_losses)


def _avg_gain(A: np.ndarray) -> np.ndarray:
    return (A[0] - A[-1]) / (len(A) - 1)


def _cliff_difference(earlier: np.ndarray, later: np.ndarray) -> np.ndarray:
    """earlier - later, a tie (0) where both cliffs lie beyond the grid (+inf - +inf)."""
    both = np.isinf(earlier) & np.isinf(later) & (np.sign(earlier) == np.sign(later))
    with np.errstate(invalid="ignore"):
        return np.where(both, 0.0, earlier - later)


def _spread(A: np.ndarray) -> np.ndarray:
    return A.max(axis=0) - A.min(axis=0)


def _returns(q: _Quantities, eps: list[float]) -> np.ndarray:
    A = [q.A(f"e{i}") for i in range(3)]
    return (A[0] - A[1]) / (eps[1] - eps[0]) - (A[1] - A[2]) / (eps[2] - eps[1])


def _steps(q: _Quantities, params, which: str) -> np.ndarray:
    A = q.seq(q.A, "l")
    if which == "first":
        return A[0] - A[1] - _avg_gain(A)
    if which == "conv_dense":
        s = params["step"]
        return A[s] - A[s + 1] - _avg_gain(A)
    return _avg_gain(A) - (A[-2] - A[-1])


STATISTICS: dict[str, Callable[[_Quantities, dict], np.ndarray]] = {
    "001_distance_grows_with_depth": lambda q, p: q.D("last") - q.D("first"),
    "001_loss_falls_with_depth": lambda q, p: q.A("first") - q.A("last"),
    "001_first_layer_weakest": lambda q, p: q.A("l0") - q.seq(q.A, "l")[1:].max(axis=0),
    "001_large_first_step": lambda q, p: _steps(q, p, "first"),
    "001_large_conv_to_dense_step": lambda q, p: _steps(q, p, "conv_dense"),
    "001_little_gain_at_logits": lambda q, p: _steps(q, p, "logits"),
    "001_benign_least_robust": lambda q, p: q.A("benign") - q.A("adversarial"),
    "001_trades_cliff_earlier": lambda q, p: _cliff_difference(q.E("pgd"), q.E("trades")),
    "001_trades_fc_separation": lambda q, p: _spread(q.seq(q.A, "trades")) - _spread(q.seq(q.A, "pgd")),
    "001_trades_more_robust": lambda q, p: q.A("pgd") - q.A("trades"),
    "001_loss_falls_with_m": lambda q, p: q.A("small_m") - q.A("large_m"),
    "001_small_cnn_less_robust": lambda q, p: q.A("small") - q.A("medium"),
    "001_small_cnn_first_layer_better": lambda q, p: q.A("medium") - q.A("small"),
    "001_small_cnn_second_layer_similar": lambda q, p: q.A("small") - q.A("medium"),
    "unprojected_first_layer_as_input": lambda q, p: q.A("layer") - q.A("input"),
    "001_fab_above_collision": lambda q, p: (q.fab_curve() - q.curve("logits")).min(axis=1),
    "002_first_relu_raises_bound": lambda q, p: q.A("relu1") - q.A("linear1"),
    "002_second_linear_adds_little": lambda q, p: (q.A("relu1") - q.A("linear1")) - (q.A("linear2") - q.A("relu1")),
    "002_second_relu_raises_bound": lambda q, p: q.A("relu2") - q.A("linear2"),
    "002_second_relu_larger_for_benign": lambda q, p: ((q.A("benign_relu2") - q.A("benign_linear2"))
                                                       - (q.A("adversarial_relu2") - q.A("adversarial_linear2"))),
    "002_adversarial_more_robust_every_layer": lambda q, p: q.A("benign") - q.A("adversarial"),
    "002_larger_train_eps_more_robust": lambda q, p: q.A("lower") - q.A("higher"),
    "002_diminishing_returns_of_train_eps": lambda q, p: _returns(q, p["eps"]),
    "002_pgd_trades_gap_fades": lambda q, p: (np.abs(q.A("pgd_linear1") - q.A("trades_linear1"))
                                              - np.abs(q.A("pgd_relu2") - q.A("trades_relu2"))),
    "002_narrower_less_robust": lambda q, p: q.A("narrower") - q.A("wider"),
    "polytope_at_most_jacobian": lambda q, p: q.D("jacobian") - q.D("polytope"),
}


def verdict(lo: float, hi: float, equivalence: bool = False, margin: float = EQUIVALENCE_MARGIN) -> str:
    """holds / contradicted / undecided for an interval [lo, hi] (docs/claims.md, Verdicts)."""
    if math.isnan(lo) or math.isnan(hi):
        return "undecided"
    if equivalence:
        if -margin < lo and hi < margin:
            return "holds"
        return "contradicted" if lo >= margin or hi <= -margin else "undecided"
    if lo > 0:
        return "holds"
    return "contradicted" if hi < 0 else "undecided"


def evaluate(job_: Mapping[str, Any], distances: Callable[[str], np.ndarray],
             fab_points: Callable[[str], pd.DataFrame] | None = None) -> pd.DataFrame:
    """The claims table (CLAIM_COLUMNS) of a job: `distances(name)` gives a merged file's (P, S_A, S_B)
    distances, `fab_points(path)` a FAB point table (attacks.FAB_PAIR_COLUMNS)."""
    rows, cache, boot = [], {}, None
    loaded: dict[str, np.ndarray] = {}

    def read(name: str) -> np.ndarray:
        if name not in loaded:
            loaded[name] = np.asarray(distances(name), dtype=np.float64)
        return loaded[name]

    tested = set()
    for inst in job_["instances"]:
        claim = CLAIMS[inst["claim"]]
        tested.add(claim.id)
        if boot is None:
            shape = read(next(iter(inst["units"].values()))).shape
            boot = PairedBootstrap(job_["eps"], shape[1], shape[2], job_["replicates"], losses.BOOTSTRAP_SEED)
        fab, notes = None, []
        if inst.get("fab"):
            from .fab_curve import fab_example_losses

            fab_loss = inst.get("params", {}).get("fab_loss", "ce")
            points = fab_points(inst["fab"]).sort_values("example")
            fab = fab_example_losses(points, boot.grid, fab_loss)
            notes.append(FAB_LOSSES[fab_loss])
        q = _Quantities(boot, inst["units"], read, cache, fab)
        values = np.asarray(STATISTICS[claim.id](q, inst.get("params", {})), dtype=np.float64)
        lo, hi = interval(values)
        if claim.equivalence:
            notes.append(f"equivalence margin +-{job_['margin']:.4f} nats")
        if not np.isfinite(values[0]):
            notes.append("a cliff lies beyond the eps grid")
        if job_["replicates"] <= 0:
            notes.append("no bootstrap (losses.bootstrap: 0)")
        rows.append({**_describe(claim), "dataset": inst["dataset"], "pairset": inst["pairset"],
                     "collision_method": inst["collision_method"], "m": inst["m"], "models": ", ".join(inst["models"]),
                     "layers": ", ".join(inst["layers"]), "value": float(values[0]), "lo": lo, "hi": hi,
                     "replicates": int(job_["replicates"]), "verdict": verdict(lo, hi, claim.equivalence, job_["margin"]),
                     "note": "; ".join(notes)})
    for claim in CLAIMS.values():
        if claim.id not in tested:
            rows.append({**_describe(claim), "verdict": "not tested", "note": f"needs {claim.needs}"})
    order = {claim: i for i, claim in enumerate(CLAIMS)}
    table = pd.DataFrame(rows, columns=CLAIM_COLUMNS)
    return table.sort_values("claim", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def _describe(claim: Claim) -> dict[str, str]:
    return {"claim": claim.id, "paper": claim.paper, "where": claim.where, "statement": claim.statement,
            "statistic": claim.statistic}
