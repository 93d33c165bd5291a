"""A reference for paper 002's cone programs (tests and benchmarks only): the program of one
polytope in its plain dense form, stated through cvxpy exactly as paper 002 writes it, against
which the sparse layered form that polytope.py hands to Clarabel is checked and timed."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import scipy.sparse as sp


def cone_program(stages, x, x_prime, pattern, pattern_prime, V=None, box=None):
    """The cone program of polytope._cone_program in its dense form: every sign constraint a row of
    the chained product W_i diag(s_{i-1}) ... W_1 V acting on delta = V alpha (V None: the identity,
    delta in the whole input space), with lo <= x + V alpha <= hi for a box (lo, hi), solved through
    cvxpy with Clarabel. Returns t (inf when the polytope is infeasible) and the sign constraints'
    duals per stage, for x~ and for x~'."""
    def chain(point, pats):
        c, M, out = point, (np.eye(len(point)) if V is None else V), []
        for stage, s in zip(stages, pats):
            W = stage.W.toarray() if sp.issparse(stage.W) else stage.W
            c, M = W @ c + stage.k, W @ M
            out.append((c, M))
            if stage.relu:
                c, M = c * s, M * s[:, None]
        return out
    r = len(x) if V is None else V.shape[1]
    delta, delta_prime, t = cp.Variable(r), cp.Variable(r), cp.Variable()
    constraints, signs = [cp.SOC(t, delta), cp.SOC(t, delta_prime)], ([], [])
    for side, (var, point, pats) in enumerate(((delta, x, pattern), (delta_prime, x_prime, pattern_prime))):
        for stage, (c, M), s in zip(stages, chain(point, pats), pats):
            sign = np.where(s, 1.0, -1.0)
            signs[side].append(sign[:, None] * M @ var >= -sign * c if stage.relu else None)
    (c, M), (c_p, M_p) = chain(x, pattern)[-1], chain(x_prime, pattern_prime)[-1]
    rows = pattern[-1] if stages[-1].relu else np.ones(len(c), dtype=bool)
    constraints.append(M[rows] @ delta - M_p[rows] @ delta_prime == c_p[rows] - c[rows])
    if box is not None:
        basis = np.eye(len(x)) if V is None else V
        for var, point in ((delta, x), (delta_prime, x_prime)):
            constraints += [point + basis @ var >= box[0], point + basis @ var <= box[1]]
    problem = cp.Problem(cp.Minimize(t), constraints + [s for side in signs for s in side if s is not None])
    problem.solve(solver=cp.CLARABEL)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        return np.inf, None
    duals = [[np.zeros(len(st.k)) if s is None else np.maximum(s.dual_value, 0) for s, st in zip(side, stages)]
             for side in signs]
    return problem.value, duals
