"""Conflict graphs and the optimal losses they imply (paper 002, Section 2; paper 001, Section 6).

The conflict graph at budget eps is bipartite: class-A examples on one side, class-B examples on
the other, and an edge (u, v) when the collision distance d(u, v) <= eps.  Any classifier must
then give the pair correct-class probabilities q_u + q_v <= 1, so

* the optimal cross-entropy is  min -(1/N) sum_v log q_v  over {0 <= q <= 1, q_u + q_v <= 1},
  solved exactly by the max-flow recursion of Bhagoji et al. (2021, Algorithm 1);
* the optimal 0-1 loss is (maximum matching size) / N (Konig: the vertex-packing LP is integral on
  bipartite graphs); sweeps read it off the cross-entropy decomposition (see
  :func:`_matching_size_from_q`), single calls use Hopcroft-Karp.

The recursion, and why it is exact, is in :mod:`layerbound.bounds.ce_flow` (compiled with numba).
Sweeps solve the graphs of many budgets and projections as one disjoint union per call.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from layerbound.bounds import ce_flow

__all__ = [
    "conflict_graph",
    "optimal_ce_q",
    "ce_objective",
    "optimal_ce_loss",
    "max_matching_size",
    "optimal_01_loss",
    "ce_loss_sweep",
    "zero_one_loss_sweep",
    "loss_sweep",
]


# --------------------------------------------------------------------------------------------
# Graphs
# --------------------------------------------------------------------------------------------


def conflict_graph(distances, eps: float) -> np.ndarray:
    """Boolean nA x nB biadjacency matrix: edge when distance <= eps (NaN never is an edge)."""
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"distances must be an nA x nB matrix, got shape {d.shape}")
    return d <= eps


def _csr(n_rows: int, n_cols: int, rows: np.ndarray, cols: np.ndarray, data=1.0) -> csr_matrix:
    """CSR matrix from entries already sorted by row (no duplicates).

    Building it from the row counts skips the sort and duplicate summing of a COO conversion,
    which dominates on the unions of many graphs that sweeps match at once; int32 indices are
    what scipy's csgraph uses internally (other types cost a conversion on every call).
    """
    indptr = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    if np.ndim(data) == 0:
        data = np.full(cols.size, data)
    return csr_matrix((data, cols.astype(np.int32), indptr), shape=(n_rows, n_cols))


def optimal_ce_q(adjacency) -> tuple[np.ndarray, np.ndarray]:
    """Optimal correct-class probabilities (q_a, q_b) for a boolean nA x nB biadjacency matrix."""
    adj = np.asarray(adjacency, dtype=bool)
    if adj.ndim != 2:
        raise ValueError(f"adjacency must be an nA x nB matrix, got shape {adj.shape}")
    u, v = np.nonzero(adj)
    return ce_flow.optimal_q(adj.shape[0], adj.shape[1], u, v)


def ce_objective(q_a, q_b) -> float:
    """Cross-entropy -(1/N) sum_v log q_v of a probability assignment."""
    q = np.concatenate([np.ravel(q_a), np.ravel(q_b)]).astype(np.float64)
    return float(-np.log(q).sum() / q.size) if q.size else 0.0


def optimal_ce_loss(distances, eps: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Optimal cross-entropy loss of the conflict graph at budget eps.

    Returns
    -------
    loss : float
        -(1/N) sum_v log q_v with N = nA + nB.
    q_a, q_b : ndarray
        Optimal correct-class probabilities of the class-A and class-B examples.
    """
    q_a, q_b = optimal_ce_q(conflict_graph(distances, eps))
    return ce_objective(q_a, q_b), q_a, q_b


# --------------------------------------------------------------------------------------------
# Optimal 0-1 loss: maximum matching
# --------------------------------------------------------------------------------------------


def max_matching_size(adjacency) -> int:
    """Size of a maximum matching of a boolean nA x nB biadjacency matrix (Hopcroft-Karp)."""
    adj = np.asarray(adjacency, dtype=bool)
    if not adj.any():
        return 0
    match = maximum_bipartite_matching(csr_matrix(adj), perm_type="column")
    return int(np.count_nonzero(match >= 0))


def optimal_01_loss(distances, eps: float) -> float:
    """Optimal 0-1 loss of the conflict graph at budget eps: maximum matching size / N."""
    adj = conflict_graph(distances, eps)
    n = adj.shape[0] + adj.shape[1]
    return max_matching_size(adj) / n if n else 0.0


# --------------------------------------------------------------------------------------------
# Sweeps over an eps grid
# --------------------------------------------------------------------------------------------


def _as_grid(eps_grid) -> np.ndarray:
    grid = np.atleast_1d(np.asarray(eps_grid, dtype=np.float64))
    if grid.ndim != 1 or np.isnan(grid).any():
        raise ValueError("eps_grid must be a 1-D array of numbers")
    return grid


# Edges per union solved at once: bounds the memory of a batch (a few arrays of this length).
_BATCH_EDGES = 4_000_000


def _union_losses(n_a: int, n_b: int, graphs: list, ce: bool, zero_one: bool):
    """Losses of many nA x nB graphs, each given by the sorted flat indices (row * nB + col) of
    its edges, solved as one disjoint union: graph k's vertices are shifted by k nA and k nB."""
    k = len(graphs)
    owner = np.repeat(np.arange(k), [g.size for g in graphs])
    rows, cols = np.divmod(np.concatenate(graphs), n_b)
    u, v = rows + owner * n_a, cols + owner * n_b  # sorted by (u, v): graphs are in order
    n = max(n_a + n_b, 1)  # an empty class leaves no edges: loss 0, not 0/0
    out_ce = out_zo = np.zeros(k)
    if ce:
        q_a, q_b = ce_flow.optimal_q(k * n_a, k * n_b, u, v)
        out_ce = -(np.log(q_a).reshape(k, n_a).sum(1) + np.log(q_b).reshape(k, n_b).sum(1)) / n
        if zero_one:
            out_zo = _matching_size_from_q(q_a.reshape(k, n_a)) / n
    elif zero_one and u.size:
        # Matchings decompose over components too, so one matching serves the whole union.
        union = _csr(k * n_a, k * n_b, u, v)
        matched = np.flatnonzero(maximum_bipartite_matching(union, perm_type="column") >= 0)
        out_zo = np.bincount(matched // n_a, minlength=k) / n
    return out_ce, out_zo


def _matching_size_from_q(q_a: np.ndarray) -> np.ndarray:
    """Maximum matching size of each graph (row) from its optimal cross-entropy q of class A.

    The final blocks of the recursion give the matching for free: the lambda = 1 cut of the
    decomposition is the blocks with more A than B vertices, so by Konig's deficiency formula a
    maximum matching has sum over blocks of min(a, b) edges, and a block's min(a, b) spread over
    its A vertices is min(1, b/a) = min(1, (1 - q)/q) each (0 for isolated vertices, q = 1).
    On the S x S graphs of a sweep this replaces a Hopcroft-Karp run that costs more than the
    cross-entropy itself; the sum is of rationals, so rounding recovers the exact integer.
    """
    return np.rint(np.minimum(1.0, (1.0 - q_a) / q_a).sum(axis=-1))


def _solve_jobs(n_a, n_b, ranks, jobs, ce, zero_one) -> dict:
    """Losses of the graphs (p, count) = edges of rank < count in matrix p, in bounded unions."""
    results, start = {}, 0
    while start < len(jobs):
        stop, size = start + 1, jobs[start][1]
        while stop < len(jobs) and size + jobs[stop][1] <= _BATCH_EDGES:
            size += jobs[stop][1]
            stop += 1
        chunk = jobs[start:stop]
        graphs = [np.flatnonzero(ranks[p] < count) for p, count in chunk]
        l_ce, l_zo = _union_losses(n_a, n_b, graphs, ce, zero_one)
        results.update({job: (l_ce[j], l_zo[j]) for j, job in enumerate(chunk)})
        start = stop
    return results


def loss_sweep(distances, eps_grid, *, ce: bool = True, zero_one: bool = True) -> dict:
    """Optimal losses at every eps of a grid, for one or many distance matrices.

    Edges only grow with eps, which the sweep uses three ways: the distances are ranked once and
    the graph at eps is "rank < edge count"; budgets that add no edge share one solve; and since
    both losses are non-decreasing in eps, a run of budgets whose two ends have equal losses
    (typically the plateau at the ceiling) is filled without solving the inside.  The graphs
    still to solve, of all matrices, are solved together as disjoint unions, bisecting the
    budget range, so the number of solver calls hardly depends on the number of budgets.

    Parameters
    ----------
    distances : array (nA, nB) or (P, nA, nB)
        Collision distances; edge when distance <= eps (NaN never is an edge).
    eps_grid : 1-D array
        Budgets, in any order.

    Returns
    -------
    dict with ``eps``, ``edges`` (int) and, as requested, ``ce`` and ``zero_one``; arrays have
    shape (len(eps_grid),) for one matrix and (P, len(eps_grid)) for a stack.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim not in (2, 3):
        raise ValueError(f"distances must be nA x nB or P x nA x nB, got shape {d.shape}")
    stack = d if d.ndim == 3 else d[None]
    grid = _as_grid(eps_grid)
    n_p, n_a, n_b = stack.shape

    edges = np.zeros((n_p, grid.size), dtype=np.int64)
    ranks = np.empty((n_p, n_a * n_b), dtype=np.int32 if n_a * n_b < 2**31 else np.int64)
    levels = []  # per matrix: the distinct edge counts, increasing
    for p in range(n_p):
        flat = stack[p].ravel()
        order = np.argsort(flat, kind="stable")  # NaN sorts last and never becomes an edge
        ranks[p, order] = np.arange(flat.size)
        edges[p] = np.searchsorted(flat[order], grid, side="right")
        levels.append(np.unique(edges[p]))

    # Bisection over each matrix's distinct counts: solve both ends, then the middle of every
    # interval whose ends differ; an interval with equal ends is constant (monotonicity).
    known: dict = {}
    intervals = [(p, 0, lv.size - 1) for p, lv in enumerate(levels)]
    todo = {(p, int(levels[p][end])) for p, lo, hi in intervals for end in (lo, hi)}
    while todo:
        known.update(_solve_jobs(n_a, n_b, ranks, sorted(todo), ce, zero_one))
        todo, split = set(), []
        for p, i, j in intervals:
            if j - i < 2:
                continue
            lo, hi = known[(p, int(levels[p][i]))], known[(p, int(levels[p][j]))]
            if lo == hi:
                known.update({(p, int(c)): lo for c in levels[p][i + 1 : j]})
                continue
            mid = (i + j) // 2
            todo.add((p, int(levels[p][mid])))
            split += [(p, i, mid), (p, mid, j)]
        intervals = split

    values = np.array([[known[(p, int(c))] for c in edges[p]] for p in range(n_p)])
    squeeze = (lambda x: x[0]) if d.ndim == 2 else (lambda x: x)
    out = {"eps": grid, "edges": squeeze(edges)}
    if ce:
        out["ce"] = squeeze(values[..., 0])
    if zero_one:
        out["zero_one"] = squeeze(values[..., 1])
    return out


def ce_loss_sweep(distances, eps_grid) -> tuple[np.ndarray, np.ndarray]:
    """Optimal cross-entropy at every eps of the grid; returns (losses, edge_counts)."""
    res = loss_sweep(distances, eps_grid, ce=True, zero_one=False)
    return res["ce"], res["edges"]


def zero_one_loss_sweep(distances, eps_grid) -> tuple[np.ndarray, np.ndarray]:
    """Optimal 0-1 loss at every eps of the grid; returns (losses, edge_counts)."""
    res = loss_sweep(distances, eps_grid, ce=False, zero_one=True)
    return res["zero_one"], res["edges"]
