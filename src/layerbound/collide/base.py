"""What every collision method shares: the feature-map type, the per-pair result, the tolerances.

For a feature map g = A f (f the network up to a tap, A an m x n_j projection or the identity) and
a pair (x, x') from different classes, the collision distance is

    d(x, x') = inf over g(x~) = g(x~') of max(||x~ - x||, ||x~' - x'||)

(paper 001, Section 4; paper 002, Section 3). Any collision gives an upper bound on d, hence a
valid conflict edge and a valid lower bound on the loss; the midpoint x~ = x~' = (x + x')/2 is
always one, so d <= ||x - x'|| / 2. A method returns, per pair, its best collision that an
independent forward pass verifies (residual ||g(x~') - g(x~)|| at most verify_tol times the pair's
feature gap ||g(x') - g(x)||), and the midpoint where none verifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Features = Callable[[torch.Tensor], torch.Tensor]

# Tolerances relative to the pair's scales (feature gap for residuals, midpoint objective for the
# objective change); float32 forward passes are only accurate to ~1e-7 of the feature magnitude.
DEFAULT_TOL = {torch.float32: 1e-4, torch.float64: 1e-8}
DEFAULT_VERIFY_TOL = {torch.float32: 1e-3, torch.float64: 1e-6}


def verify_tol_for(dtype: torch.dtype, verify_tol: float | None) -> float:
    """The configured verification tolerance, or the dtype's default (None)."""
    return DEFAULT_VERIFY_TOL.get(dtype, 1e-3) if verify_tol is None else verify_tol


@dataclass
class Collisions:
    """Per-pair results of a collision method; every tensor is on the CPU, one entry per pair."""

    distance: torch.Tensor     # float64, max(||x~ - x||, ||x~' - x'||) of the best verified collision
    objective: torch.Tensor    # float64, ||x~ - x||^2 + ||x~' - x'||^2 of that collision
    residual: torch.Tensor     # float64, ||g(x~') - g(x~)||, recomputed by an independent forward pass
    feature_gap: torch.Tensor  # float64, ||g(x') - g(x)||: residuals are judged relative to it
    iterations: torch.Tensor   # int64, steps taken (0 for closed forms)
    converged: torch.Tensor    # bool, stopped by the tolerance test rather than the iteration cap
    x_tilde: torch.Tensor | None = None        # the colliding points (when asked for)
    x_tilde_prime: torch.Tensor | None = None
    # The method's earlier best candidates (B, K, *shape), best first: certify.py falls back to them.
    earlier_tilde: torch.Tensor | None = None
    earlier_tilde_prime: torch.Tensor | None = None
    # Set by certify.certify: the method's own distance, the residual of its best candidate in the
    # certificate's dtype, the polishing Jacobians, and which candidate is reported (0 the best,
    # k its k-th earlier one, -1 the midpoint).
    search_distance: torch.Tensor | None = None
    search_residual: torch.Tensor | None = None
    polish_steps: torch.Tensor | None = None
    candidate: torch.Tensor | None = None

    @classmethod
    def empty(cls) -> "Collisions":
        none = torch.zeros(0, dtype=torch.float64)
        return cls(none, none, none, none, torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool))

    @classmethod
    def concatenate(cls, parts: list["Collisions"]) -> "Collisions":
        if not parts:
            return cls.empty()
        fields = {}
        for name in cls.__dataclass_fields__:
            values = [getattr(p, name) for p in parts]
            fields[name] = None if values[0] is None else torch.cat(values)
        return cls(**fields)
