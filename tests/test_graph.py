"""Conflict graphs and optimal losses (paper 002, Section 2; Bhagoji et al. 2021): the exact
algorithm against a convex solver, known values, feasibility, monotonicity and sweeps."""

import math

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from layerbound.bounds import ce_flow, graph
from layerbound.bounds.graph import (
    ce_loss_sweep,
    ce_objective,
    conflict_graph,
    loss_sweep,
    max_matching_size,
    optimal_01_loss,
    optimal_ce_loss,
    optimal_ce_q,
    zero_one_loss_sweep,
)
from graph_reference import reference_ce


def _kab_loss(a, b):
    return -(a * math.log(a / (a + b)) + b * math.log(b / (a + b))) / (a + b)


def _check_feasible_and_consistent(adj, q_a, q_b, loss):
    rows, cols = np.nonzero(adj)
    assert np.all(q_a[rows] + q_b[cols] <= 1 + 1e-9)
    assert np.all((q_a > 0) & (q_a <= 1)) and np.all((q_b > 0) & (q_b <= 1))
    assert ce_objective(q_a, q_b) == pytest.approx(loss, abs=1e-12)


# --------------------------------------------------------------------------------------------
# Random graph families for the reference comparison
# --------------------------------------------------------------------------------------------


def _erdos_renyi(rng):
    n = int(rng.integers(2, 201))
    n_a = int(rng.integers(1, n))
    p = math.exp(rng.uniform(math.log(0.003), math.log(0.98)))
    return rng.random((n_a, n - n_a)) < p


def _unbalanced(rng):
    n_a = int(rng.integers(1, 12))
    n_b = int(rng.integers(20, 201 - n_a))
    adj = rng.random((n_a, n_b)) < rng.uniform(0.02, 0.6)
    return adj if rng.random() < 0.5 else adj.T


def _planted_blocks(rng):
    """Dense blocks of different A:B ratios joined by sparse cross edges: the recursion must
    find several levels of splits.  Some blocks stay disconnected from the rest."""
    n_blocks = int(rng.integers(2, 6))
    sizes = [(int(rng.integers(1, 25)), int(rng.integers(1, 25))) for _ in range(n_blocks)]
    n_a, n_b = sum(s[0] for s in sizes), sum(s[1] for s in sizes)
    adj = rng.random((n_a, n_b)) < rng.uniform(0.0, 0.08)
    ra = rb = 0
    for a, b in sizes:
        adj[ra : ra + a, rb : rb + b] |= rng.random((a, b)) < rng.uniform(0.3, 1.0)
        if rng.random() < 0.3:  # cut this block off from everything else
            adj[ra : ra + a, :rb] = adj[ra : ra + a, rb + b :] = False
            adj[:ra, rb : rb + b] = adj[ra + a :, rb : rb + b] = False
        ra, rb = ra + a, rb + b
    return adj[rng.permutation(n_a)][:, rng.permutation(n_b)]


def _geometric(rng):
    """Thresholded distances between two point clouds, like real conflict graphs."""
    n = int(rng.integers(10, 201))
    n_a = int(rng.integers(max(1, n // 4), n - max(1, n // 4) + 1))
    xa = rng.normal(size=(n_a, 5))
    xb = rng.normal(size=(n - n_a, 5)) + rng.uniform(0, 2)
    d = cdist(xa, xb) / 2   # input-space collision distances
    return conflict_graph(d, np.quantile(d, rng.uniform(0.005, 0.6)))


FAMILIES = [_erdos_renyi, _unbalanced, _planted_blocks, _geometric]


def _random_graphs(count, seed):
    rng = np.random.default_rng(seed)
    return [FAMILIES[i % len(FAMILIES)](rng) for i in range(count)]


def test_exact_matches_cvxpy_reference_on_random_graphs():
    pytest.importorskip("cvxpy")
    graphs = _random_graphs(220, seed=20240601)
    sizes = [sum(g.shape) for g in graphs]
    assert max(sizes) >= 190 and min(sizes) <= 10
    assert any(g.shape[0] * 5 < g.shape[1] or g.shape[1] * 5 < g.shape[0] for g in graphs)
    for i, adj in enumerate(graphs):
        q_a, q_b = optimal_ce_q(adj)
        loss = ce_objective(q_a, q_b)
        _check_feasible_and_consistent(adj, q_a, q_b, loss)
        ref_loss, ref_a, ref_b = reference_ce(adj)
        assert abs(loss - ref_loss) <= 1e-6, (i, adj.shape, int(adj.sum()), loss, ref_loss)
        # The objective is strictly convex, so the optimal q is unique too.
        assert np.abs(np.r_[q_a, q_b] - np.r_[ref_a, ref_b]).max() <= 1e-5, i
        # The sweep reads the 0-1 loss off the same decomposition; Hopcroft-Karp checks it.
        res = loss_sweep(np.where(adj, 0.0, 1.0), [0.5])
        assert res["ce"][0] == pytest.approx(loss, abs=1e-12)
        assert res["zero_one"][0] == max_matching_size(adj) / sum(adj.shape), i


def test_reference_agrees_with_hand_solution():
    # Guards against a vacuous comparison: the reference reproduces a hand-solved split and
    # separates it from the feasible, suboptimal uniform point.
    pytest.importorskip("cvxpy")
    adj = np.array([[1, 0, 0], [1, 1, 1]], dtype=bool)
    ref_loss, ref_a, ref_b = reference_ce(adj)
    expected = -(2 * math.log(1 / 2) + math.log(1 / 3) + 2 * math.log(2 / 3)) / 5
    assert ref_loss == pytest.approx(expected, abs=1e-7)
    np.testing.assert_allclose(np.r_[ref_a, ref_b], [1 / 2, 1 / 3, 1 / 2, 2 / 3, 2 / 3], atol=1e-5)
    assert ce_objective(np.full(2, 0.4), np.full(3, 0.6)) - ref_loss > 1e-2


# --------------------------------------------------------------------------------------------
# Known values
# --------------------------------------------------------------------------------------------


def test_empty_graph_has_zero_loss():
    loss, q_a, q_b = optimal_ce_loss(np.ones((5, 7)), eps=0.5)
    assert loss == 0.0
    assert np.all(q_a == 1) and np.all(q_b == 1)
    assert optimal_01_loss(np.ones((5, 7)), eps=0.5) == 0.0


def test_perfect_matching_gives_log2_and_half():
    d = np.where(np.eye(6, dtype=bool), 0.0, 1.0)
    loss, q_a, q_b = optimal_ce_loss(d, eps=0.5)
    assert loss == pytest.approx(math.log(2), abs=1e-12)
    assert np.allclose(q_a, 0.5) and np.allclose(q_b, 0.5)
    assert optimal_01_loss(d, eps=0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("a,b", [(1, 1), (1, 5), (3, 2), (4, 9), (17, 6)])
def test_complete_bipartite(a, b):
    loss, q_a, q_b = optimal_ce_loss(np.zeros((a, b)), eps=0.0)
    assert loss == pytest.approx(_kab_loss(a, b), abs=1e-12)
    assert np.allclose(q_a, a / (a + b)) and np.allclose(q_b, b / (a + b))
    assert optimal_01_loss(np.zeros((a, b)), eps=0.0) == pytest.approx(min(a, b) / (a + b))


def test_hand_solved_split():
    # a0 - b0 - a1 - {b1, b2}: the max flow at ratio 2:3 is not full; the dense side
    # X = {a0}, N(X) = {b0} becomes a 1:1 block and the rest {a1} + {b1, b2} a K_{1,2}.
    adj = np.array([[1, 0, 0], [1, 1, 1]], dtype=bool)
    q_a, q_b = optimal_ce_q(adj)
    np.testing.assert_allclose(q_a, [1 / 2, 1 / 3])
    np.testing.assert_allclose(q_b, [1 / 2, 2 / 3, 2 / 3])
    expected = -(2 * math.log(1 / 2) + math.log(1 / 3) + 2 * math.log(2 / 3)) / 5
    assert ce_objective(q_a, q_b) == pytest.approx(expected, abs=1e-12)


def test_isolated_vertices_get_one_and_components_are_independent():
    adj = np.zeros((5, 6), dtype=bool)
    adj[0, 0] = True  # K_{1,1}
    adj[1:3, 1] = True  # K_{2,1}
    q_a, q_b = optimal_ce_q(adj)
    np.testing.assert_allclose(q_a, [1 / 2, 2 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(q_b, [1 / 2, 1 / 3, 1, 1, 1, 1])


def test_solver_ignores_edge_order_and_checks_endpoints():
    rng = np.random.default_rng(7)
    adj = rng.random((30, 25)) < 0.1
    u, v = np.nonzero(adj)
    shuffled = rng.permutation(u.size)
    for got, want in zip(ce_flow.optimal_q(30, 25, u[shuffled], v[shuffled]), optimal_ce_q(adj)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="out of range"):
        ce_flow.optimal_q(2, 2, np.array([0]), np.array([2]))


def test_an_empty_class_has_zero_loss():
    for shape in [(0, 4), (3, 0), (0, 0)]:
        d = np.zeros(shape)
        assert optimal_ce_loss(d, 1.0)[0] == 0.0 and optimal_01_loss(d, 1.0) == 0.0
        res = loss_sweep(d, [0.0, 1.0])
        assert np.all(res["ce"] == 0) and np.all(res["zero_one"] == 0)


def test_nan_distance_is_no_edge():
    d = np.array([[np.nan, 1.0], [1.0, np.nan]])
    assert not conflict_graph(d, 10.0)[0, 0]
    assert optimal_ce_loss(d, 10.0)[0] == pytest.approx(math.log(2))
    res = loss_sweep(d, [0.5, 10.0])
    np.testing.assert_array_equal(res["edges"], [0, 2])


# --------------------------------------------------------------------------------------------
# 0-1 loss
# --------------------------------------------------------------------------------------------


def test_matching_equals_assignment_on_small_graphs():
    rng = np.random.default_rng(7)
    for _ in range(100):
        adj = rng.random(tuple(rng.integers(1, 12, size=2))) < rng.uniform(0.05, 0.7)
        rows, cols = linear_sum_assignment(adj.astype(float), maximize=True)
        assert max_matching_size(adj) == int(adj[rows, cols].sum())


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------


def _structured_distances(rng, n_p, s_a, s_b):
    xa = rng.normal(size=(s_a, 30))
    xb = rng.normal(size=(s_b, 30)) + 0.7
    # Projected-input collision distances ||P (u - v)|| / 2, P the projector onto a random 4-dim row space.
    bases = [np.linalg.qr(rng.normal(size=(4, 30)).T)[0] for _ in range(n_p)]
    return np.stack([cdist(xa @ q, xb @ q) / 2 for q in bases])


def test_losses_never_decrease_with_eps():
    rng = np.random.default_rng(3)
    d = _structured_distances(rng, 3, 40, 35)
    grid = np.linspace(0, d.max(), 60)
    res = loss_sweep(d, grid)
    assert np.all(np.diff(res["ce"], axis=1) >= -1e-12)
    assert np.all(np.diff(res["zero_one"], axis=1) >= 0)
    assert np.all(np.diff(res["edges"], axis=1) >= 0)
    # From empty to complete: 0 up to the K_{a,b} ceiling.
    assert np.all(res["ce"][:, 0] == 0) and np.allclose(res["ce"][:, -1], _kab_loss(40, 35))
    assert np.allclose(res["zero_one"][:, -1], 35 / 75)


def test_sweep_equals_pointwise_calls(monkeypatch):
    rng = np.random.default_rng(11)
    d = _structured_distances(rng, 2, 30, 45)
    grid = np.concatenate([np.linspace(0, np.quantile(d, 0.6), 25), [0.3, 0.3]])
    rng.shuffle(grid)  # any order, with duplicates
    # Tiny unions force several batches per bisection round.
    monkeypatch.setattr(graph, "_BATCH_EDGES", 200)
    res = loss_sweep(d, grid)
    for p in range(2):
        ce, edges = ce_loss_sweep(d[p], grid)
        zo, _ = zero_one_loss_sweep(d[p], grid)
        for k, eps in enumerate(grid):
            pointwise = optimal_ce_loss(d[p], eps)[0]
            assert ce[k] == res["ce"][p, k] == pytest.approx(pointwise, abs=1e-12)
            assert zo[k] == res["zero_one"][p, k] == optimal_01_loss(d[p], eps)
            assert edges[k] == res["edges"][p, k] == np.count_nonzero(d[p] <= eps)


def test_sweep_plateau_shortcut_is_exact():
    # Many budgets on the ceiling plateau and in the empty region: filled by monotonicity.
    d = np.add.outer(np.arange(8.0), np.arange(8.0))
    grid = np.linspace(-1, 40, 83)
    res = loss_sweep(d, grid)
    for k, eps in enumerate(grid):
        assert res["ce"][k] == pytest.approx(optimal_ce_loss(d, eps)[0], abs=1e-12)
        assert res["zero_one"][k] == optimal_01_loss(d, eps)
