"""Generic convex reference for the optimal cross-entropy (tests and benchmarks only).

Solves  min -(1/N) sum_v log q_v  s.t.  q <= 1,  q_u + q_v <= 1 on edges  with cvxpy (the log
is an exponential-cone constraint; q > 0 is implied by its domain).  cvxpy is a test extra, so it
is imported lazily.
"""

from __future__ import annotations

import numpy as np

# Preferred solvers, most accurate first, with tolerances tight enough for 1e-6 on the loss.
# SCS comes first on purpose: near-complete conflict graphs make the problem very degenerate
# (thousands of tight edge constraints for a few hundred variables), where the interior-point
# solvers stall at ~1e-6 ("optimal_inaccurate", occasionally a failure), while SCS at 1e-9 was
# within 1e-9 of the exact optimum on 250 random graphs of up to 200 vertices.
_SOLVER_OPTIONS = {
    "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000},
    "CLARABEL": {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10},
    "ECOS": {"abstol": 1e-10, "reltol": 1e-10, "feastol": 1e-10},
}


def pick_solver() -> str:
    """Name of the first installed exponential-cone solver in preference order."""
    import cvxpy as cp

    installed = set(cp.installed_solvers())
    for name in _SOLVER_OPTIONS:
        if name in installed:
            return name
    raise RuntimeError(
        f"no exponential-cone solver installed (need one of {list(_SOLVER_OPTIONS)}; "
        f"cvxpy has {sorted(installed)})"
    )


def reference_ce(adjacency, solver: str | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Optimal cross-entropy of a boolean nA x nB biadjacency matrix by a generic convex solve.

    Returns (loss, q_a, q_b) like :func:`layerbound.bounds.graph.optimal_ce_loss`.
    """
    import cvxpy as cp

    adj = np.asarray(adjacency, dtype=bool)
    n_a, n_b = adj.shape
    n = n_a + n_b
    if n == 0:
        return 0.0, np.ones(0), np.ones(0)
    rows, cols = np.nonzero(adj)
    q = cp.Variable(n)
    constraints = [q <= 1]
    if rows.size:
        constraints.append(q[rows] + q[n_a + cols] <= 1)
    problem = cp.Problem(cp.Minimize(-cp.sum(cp.log(q)) / n), constraints)
    solver = solver or pick_solver()
    problem.solve(solver=solver, **_SOLVER_OPTIONS.get(solver, {}))
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or q.value is None:
        raise RuntimeError(f"cvxpy reference solve failed with status {problem.status}")
    qv = np.clip(np.asarray(q.value, dtype=np.float64), 1e-300, 1.0)
    return float(problem.value), qv[:n_a], qv[n_a:]
