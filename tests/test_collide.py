"""Algorithm 1 (layerbound.collide.jacobian.search) against the closed forms (collide.closed_form) and on
ReLU networks."""

import math

import numpy as np

import pytest
import torch

from layerbound.collide import projection
from layerbound.models import registry as models
from layerbound.collide import closed_form, jacobian, linear_step, merit
from layerbound.collide.base import DEFAULT_VERIFY_TOL
from layerbound.collide.options import DEFAULT_MAX_ITER


# One torch thread for the whole module (tests/conftest.py); pairs_of is a conftest fixture too.
pytestmark = pytest.mark.usefixtures("one_thread")


def affine_extractor(n0: int, n_j: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """f(x) = H x + k on flattened inputs, float64, with its matrix H."""
    torch.manual_seed(seed)
    layer = torch.nn.Linear(n0, n_j).double()
    f = torch.nn.Sequential(torch.nn.Flatten(), layer).eval()
    return f, layer.weight.detach()


@pytest.mark.parametrize("step", ["merit", "decay"])
@pytest.mark.parametrize("projected", [False, True])
def test_affine_extractor_matches_closed_form(projected, step, pairs_of):
    # Conv-shaped inputs (2x5x5 = 50 dims), an affine layer to n_j = 12, projected to m = 5 or not.
    f, H = affine_extractor(50, 12, seed=1)
    x, x_prime = pairs_of((2, 5, 5), 9, seed=2)
    A = projection.draw(0, "affine", "fc", 5, 0, 12, dtype=torch.float64) if projected else None
    result = jacobian.search(f, A, x, x_prime, step=step, dtype=torch.float64, box=None, return_points=True)
    expected = closed_form.affine_distance(H if A is None else A @ H, x, x_prime)
    assert torch.allclose(result.distance, expected, rtol=1e-6, atol=0)
    assert result.converged.all()
    # The closed form is a real reduction below the midpoint bound, so the match is not trivial.
    assert (expected < 0.95 * closed_form.input_distance(x, x_prime)).all()
    # Symmetric optimum: both perturbations have norm d, so the objective is 2 d^2.
    assert torch.allclose(result.objective, 2 * expected ** 2, rtol=1e-6)


def test_affine_rank_deficient_without_projection(pairs_of):
    # n_j > n0: M M^T = 2 H H^T is singular; the pseudo-inverse path must still find the optimum.
    f, H = affine_extractor(6, 10, seed=3)
    x, x_prime = pairs_of((6,), 5, seed=4)
    result = jacobian.search(f, None, x, x_prime, dtype=torch.float64)
    expected = closed_form.affine_distance(H, x, x_prime)
    assert torch.allclose(result.distance, expected, rtol=1e-6)


def test_input_projection_mean_square_distance(pairs_of):
    # E[d^2] = m ||x - x'||^2 / (4 n0) over Gaussian projections of the input.
    n0, m, draws = 100, 10, 2000
    x, x_prime = pairs_of((n0,), 1, seed=5)
    d2 = torch.stack([closed_form.projected_input_distance(projection.draw(0, "input", "input_rp", m, p, n0, torch.float64),
                                                       x, x_prime)[0] ** 2 for p in range(draws)])
    expected = m * ((x - x_prime) ** 2).sum() / (4 * n0)
    standard_error = d2.std() / math.sqrt(draws)
    assert abs(d2.mean() - expected) < 4 * standard_error
    assert standard_error < 0.02 * expected   # the test has power: a 10% error would fail
    # m >= n0 is no projection: the input distance.
    assert torch.allclose(closed_form.projected_input_distance(None, x, x_prime), closed_form.input_distance(x, x_prime))


def test_search_on_projected_input_matches_closed_form(pairs_of):
    n0, m = 40, 6
    x, x_prime = pairs_of((n0,), 8, seed=6)
    A = projection.draw(0, "input", "input_rp", m, 0, n0, torch.float64)
    result = jacobian.search(lambda u: u.flatten(1), A, x, x_prime, dtype=torch.float64)
    assert torch.allclose(result.distance, closed_form.projected_input_distance(A, x, x_prime), rtol=1e-6)


def test_proposition_1_concentration():
    # f = A L x with L diagonal: half the coordinates with singular value 1, half with 0.2, so
    # r4 = ||L||_F^4 / ||L||_4^4 ~ 0.54 n and m = 16 << sqrt(r4) ~ 100. Prediction:
    # d ~ sqrt(m) ||L (x - x')|| / (2 ||L||_F), different for a difference on the strong or weak half.
    n, m, draws = 20000, 16, 40
    s = torch.ones(n, dtype=torch.float64)
    s[n // 2:] = 0.2
    assert math.sqrt((s ** 2).sum() ** 2 / (s ** 4).sum()) > 6 * m
    delta = torch.zeros(2, n, dtype=torch.float64)
    delta[0, : n // 2] = torch.randn(n // 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    delta[1, n // 2:] = delta[0, : n // 2]
    x = torch.rand(2, n, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    x_prime = x + delta
    predicted = math.sqrt(m) * (s * delta).norm(dim=1) / (2 * s.norm())
    d = torch.stack([jacobian.search(lambda u: u * s, projection.draw(0, "prop1", "L", m, p, n, torch.float64),
                                    x, x_prime, dtype=torch.float64).distance for p in range(draws)])
    ratio = d / predicted                           # (draws, 2)
    assert torch.allclose(ratio.mean(dim=0), torch.ones(2, dtype=torch.float64), atol=0.08)
    assert (ratio.std(dim=0) < 1.5 / math.sqrt(2 * m)).all()   # chi_m / sqrt(m) has std ~ 1/sqrt(2m)
    assert predicted[0] > 4 * predicted[1]          # the two cases really differ


@pytest.fixture(scope="module")
def relu_nets():
    torch.manual_seed(0)
    fcnn = models.build("fcnn_smaller", (1, 10, 10), 10).eval()
    small = models.build("small", (1, 12, 12), 10).eval()
    cnn4 = models.build("cnn4", (1, 16, 16), 10)
    with torch.no_grad():  # non-trivial BatchNorm running statistics, then eval mode
        for bn in (mod for mod in cnn4.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return {"fcnn_smaller": fcnn, "small": small, "cnn4": cnn4.eval()}


@pytest.mark.parametrize("arch,tap,m", [("fcnn_smaller", "fc1", 5), ("fcnn_smaller", "logits", 10),
                                        ("small", "conv2", 6), ("small", "fc3", 4), ("cnn4", "conv2", 8)])
def test_relu_network_collisions_are_verified_and_bounded(relu_nets, arch, tap, m, pairs_of):
    net = relu_nets[arch]
    f = net.extractor(tap).eval()
    n_j = net.tap_widths()[tap]
    A = projection.draw(0, arch, tap, m, 0, n_j)
    x, x_prime = pairs_of(net.input_shape, 12, seed=9, dtype=torch.float32)
    result = jacobian.search(f, A, x, x_prime, return_points=True)
    bound = closed_form.input_distance(x, x_prime)
    assert (result.distance <= bound * (1 + 1e-6)).all()
    # Every reported collision is verified: recompute A f at the returned points ourselves.
    g = (lambda u: f(u) @ A.T) if A is not None else f
    with torch.no_grad():
        gap = (g(x_prime) - g(x)).norm(dim=1).double()
        residual = (g(result.x_tilde_prime) - g(result.x_tilde)).norm(dim=1).double()
    assert (residual <= DEFAULT_VERIFY_TOL[torch.float32] * gap + 1e-7).all()
    # The engine's own check agrees up to float32 noise (residuals are differences of features).
    assert ((residual - result.residual).abs() <= 1e-5 * gap + 1e-7).all()
    norms = lambda t: t.flatten(1).double().norm(dim=1)
    reported = torch.maximum(norms(result.x_tilde - x), norms(result.x_tilde_prime - x_prime))
    assert torch.allclose(result.distance, reported, rtol=1e-5)
    # The search does real work: it beats the midpoint on most pairs.
    assert (result.distance < 0.95 * bound).float().mean() > 0.5


def test_deterministic_and_batch_independent_of_chunking(relu_nets, pairs_of):
    net = relu_nets["small"]
    f = net.extractor("conv2").eval()
    A = projection.draw(0, "small", "conv2", 6, 0, net.tap_widths()["conv2"])
    x, x_prime = pairs_of(net.input_shape, 6, seed=10, dtype=torch.float32)
    a = jacobian.search(f, A, x, x_prime)
    b = jacobian.search(f, A, x, x_prime)
    assert torch.equal(a.distance, b.distance) and torch.equal(a.iterations, b.iterations)
    # The same pairs in batches of 2 agree closely (float32 kernels may differ with batch size).
    c = jacobian.search(f, A, x, x_prime, batch_size=2)
    assert torch.allclose(a.distance, c.distance, rtol=1e-3)


def test_fallback_to_midpoint_when_nothing_verifies(relu_nets, pairs_of):
    # With a verification tolerance no float32 collision can meet, every pair falls back to the
    # midpoint: distance exactly ||x - x'||/2 and residual exactly 0.
    net = relu_nets["fcnn_smaller"]
    f = net.extractor("fc2").eval()
    A = projection.draw(0, "fcnn_smaller", "fc2", 5, 0, net.tap_widths()["fc2"])
    x, x_prime = pairs_of(net.input_shape, 5, seed=11, dtype=torch.float32)
    result = jacobian.search(f, A, x, x_prime, verify_tol=0.0, return_points=True)
    assert torch.allclose(result.distance, closed_form.input_distance(x, x_prime), rtol=1e-6)
    assert (result.residual == 0).all()
    assert torch.equal(result.x_tilde, result.x_tilde_prime)


def test_training_mode_batchnorm_is_refused(relu_nets, pairs_of):
    net = models.build("cnn4", (1, 16, 16), 10).train()
    x, x_prime = pairs_of(net.input_shape, 2, seed=12, dtype=torch.float32)
    with pytest.raises(ValueError, match="eval"):
        jacobian.search(net.extractor("conv1"), None, x, x_prime)


def test_linear_part_recovers_the_matrix():
    f, H = affine_extractor(20, 7, seed=13)
    L = closed_form.linear_part(f, (20,), rows_per_pass=3)
    assert torch.allclose(L, H, atol=1e-12)


def _all_pairs(xa, xb):
    """Every (a, b) pair of two example sets, as two aligned batches."""
    i, j = torch.meshgrid(torch.arange(len(xa)), torch.arange(len(xb)), indexing="ij")
    return xa[i.ravel()], xb[j.ravel()]


def test_input_distance_is_half_the_gap():
    g = torch.Generator().manual_seed(5)
    xa, xb = torch.rand(4, 2, 3, 3, generator=g, dtype=torch.float64), torch.rand(6, 2, 3, 3, generator=g, dtype=torch.float64)
    x, x_prime = _all_pairs(xa, xb)
    expected = torch.cdist(xa.flatten(1), xb.flatten(1)).ravel() / 2
    assert torch.allclose(closed_form.input_distance(x, x_prime), expected, rtol=1e-12)


def test_projected_input_distance_uses_only_the_row_space():
    g = torch.Generator().manual_seed(6)
    xa, xb = torch.randn(5, 12, generator=g, dtype=torch.float64), torch.randn(7, 12, generator=g, dtype=torch.float64)
    x, x_prime = _all_pairs(xa, xb)
    full = closed_form.input_distance(x, x_prime)
    # A square invertible A: the projector is the identity.
    square = torch.randn(12, 12, generator=g, dtype=torch.float64)
    assert torch.allclose(closed_form.projected_input_distance(square, x, x_prime), full, rtol=1e-9)
    # A wide A (m < n0) and a rank-deficient one: P = pinv(A) A.
    wide = torch.randn(3, 12, generator=g, dtype=torch.float64)
    deficient = torch.randn(2, 12, generator=g, dtype=torch.float64).repeat_interleave(2, dim=0)
    for A in (wide, deficient):
        P = torch.linalg.pinv(A) @ A
        expected = ((x - x_prime) @ P.T).norm(dim=1) / 2
        assert torch.allclose(closed_form.projected_input_distance(A, x, x_prime), expected, rtol=1e-9)
        # Collisions only need the row space, so the projected distance never exceeds the input one.
        assert (closed_form.projected_input_distance(A, x, x_prime) <= full + 1e-12).all()


# --- the box-constrained search ----------------------------------------------------------------------

def _cvxpy_boxed(W: torch.Tensor, x: torch.Tensor, x_prime: torch.Tensor, objective: str) -> float:
    """A generic solver's optimum for the affine map u -> W u in the box [0, 1]: the least squares
    objective ||u - x||^2 + ||u' - x'||^2 ('squares') or max(||u - x||, ||u' - x'||) ('max')."""
    import cvxpy as cp

    n = x.numel()
    u, u_prime = cp.Variable(n), cp.Variable(n)
    a, b = x.flatten().numpy(), x_prime.flatten().numpy()
    goal = (cp.sum_squares(u - a) + cp.sum_squares(u_prime - b) if objective == "squares"
            else cp.maximum(cp.norm(u - a), cp.norm(u_prime - b)))
    constraints = [W.numpy() @ (u - u_prime) == 0, u >= 0, u <= 1, u_prime >= 0, u_prime <= 1]
    problem = cp.Problem(cp.Minimize(goal), constraints)
    problem.solve(solver=cp.CLARABEL)
    return float(problem.value)


def _binary_images(count: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mostly-saturated pixels, as in MNIST: the box binds on many coordinates."""
    g = torch.Generator().manual_seed(seed)
    def draw():
        return (torch.rand(count, n, generator=g, dtype=torch.float64) ** 3).round().clamp(0, 1) * 0.9 \
            + 0.1 * torch.rand(count, n, generator=g, dtype=torch.float64)
    return draw(), draw()


def test_box_projection_is_the_constrained_least_squares_point():
    """project() with a box against cvxpy's QP on random linearizations (Jacobians equal at both
    points: an affine map), with pairs whose unboxed projection leaves the box."""
    torch.manual_seed(0)
    J = torch.randn(6, 3, 16, dtype=torch.float64)
    x, x_prime = _binary_images(6, 16, seed=1)
    midpoint = (x + x_prime) / 2
    r = torch.zeros(6, 3, dtype=torch.float64)
    u, u_prime = linear_step.project(J, J, r, midpoint, midpoint, x, x_prime, box=(0.0, 1.0))
    free_u, _ = linear_step.project(J, J, r, midpoint, midpoint, x, x_prime)
    assert ((free_u < 0) | (free_u > 1)).any()          # the box binds: the test is not the unboxed case
    assert u.min() >= 0 and u.max() <= 1 and u_prime.min() >= 0 and u_prime.max() <= 1
    assert (J @ (u - u_prime).unsqueeze(2)).abs().max() < 1e-12   # on the linearized constraint
    for k in range(6):
        ours = float(((u[k] - x[k]) ** 2).sum() + ((u_prime[k] - x_prime[k]) ** 2).sum())
        assert ours == pytest.approx(_cvxpy_boxed(J[k], x[k], x_prime[k], "squares"), rel=1e-6)


@pytest.mark.parametrize("step", ["merit", "decay"])
def test_boxed_search_on_an_affine_map_matches_a_generic_solver(step):
    """For u -> W u in the box, decay's first step is the exact boxed least-squares point: its
    objective is the QP optimum and its distance at least the min-max optimum (SOCP). The merit
    search balances the two distances: its distance is the SOCP optimum itself, the distance
    that the bound needs (the box makes the least-squares point unbalanced, up to 9% above it here).
    Every point lies in the box."""
    torch.manual_seed(2)
    W = torch.randn(4, 20, dtype=torch.float64)
    x, x_prime = _binary_images(5, 20, seed=3)
    result = jacobian.search(lambda u: u @ W.T, None, x, x_prime, step=step, dtype=torch.float64,
                             box=(0.0, 1.0), return_points=True)
    for k in range(5):
        min_max = _cvxpy_boxed(W, x[k], x_prime[k], "max")
        if step == "decay":
            assert result.objective[k].item() == pytest.approx(_cvxpy_boxed(W, x[k], x_prime[k], "squares"), rel=1e-6)
            assert result.distance[k].item() >= min_max * (1 - 1e-6)
        else:
            assert result.distance[k].item() == pytest.approx(min_max, rel=1e-6)
            assert result.converged[k]
    unboxed = closed_form.affine_distance(W, x, x_prime)
    assert (result.distance >= unboxed * (1 - 1e-9)).all() and (result.distance > unboxed * 1.001).any()
    for points in (result.x_tilde, result.x_tilde_prime):
        assert points.min() >= 0 and points.max() <= 1


@pytest.mark.parametrize("step", ["merit", "decay"])
def test_boxed_search_on_a_relu_network_stays_in_the_box_and_verifies(step, pairs_of):
    torch.manual_seed(4)
    net = models.build("small", (1, 12, 12), 10)
    width = net.tap_widths()["conv2"]
    f = net.double().eval().extractor("conv2")
    x, x_prime = pairs_of((1, 12, 12), 6, seed=5)
    A = projection.draw(0, "box", "conv2", 5, 0, width, dtype=torch.float64)
    result = jacobian.search(f, A, x, x_prime, step=step, dtype=torch.float64, box=(0.0, 1.0), return_points=True)
    for points in (result.x_tilde, result.x_tilde_prime):
        assert points.min() >= 0 and points.max() <= 1
    g = lambda u: f(u) @ A.T  # noqa: E731
    with torch.no_grad():
        residual = (g(result.x_tilde_prime) - g(result.x_tilde)).norm(dim=1)
    assert (residual <= DEFAULT_VERIFY_TOL[torch.float64] * result.feature_gap).all()
    assert (result.distance < closed_form.input_distance(x, x_prime)).any()   # found better than the midpoint


def test_pairs_outside_the_box_are_refused(pairs_of):
    x, x_prime = pairs_of((6,), 2, seed=6)
    with pytest.raises(ValueError, match=r"outside the box \[0, 0.5\]"):
        jacobian.search(lambda u: u, None, x, x_prime, box=(0.0, 0.5))


def test_merit_takes_the_exact_gauss_newton_step_on_an_affine_map(pairs_of):
    """On an affine map the linearization is exact: the first trial (fraction alpha = 1) is the
    optimum, accepted, and the second Jacobian evaluation finds it stationary."""
    f, H = affine_extractor(30, 8, seed=11)
    x, x_prime = pairs_of((30,), 5, seed=12)
    result = jacobian.search(f, None, x, x_prime, step="merit", max_iter=15, dtype=torch.float64, box=None)
    assert torch.allclose(result.distance, closed_form.affine_distance(H, x, x_prime), rtol=1e-9)
    assert result.converged.all() and (result.iterations == 2).all()


def test_merit_does_not_cycle_on_an_unprojected_wide_map(monkeypatch):
    """On a random fcnn_smaller's fc2 without projection (50 constraints) accepted steps can keep
    the iterates too far from the collision set for the chord steps to restore them. Cycling does
    not end with more budget: without the safeguard (no growth, then shrinking, while that lasts)
    pairs 0 and 1 keep the midpoint even after decay's 40 Jacobian evaluations. With it every pair
    finds a collision that the search's own verification accepts (float64: residual within 1e-6
    of the feature gap), well inside the midpoint bound and within 5% of paper 001's schedule.

    Which pairs a 15-evaluation budget suffices for is not a property of the method: the iteration
    amplifies float64 rounding (with PyTorch's AVX2 kernels pair 5 needs more than 15 evaluations,
    at most 25, with others 15), so both searches get decay's budget here."""
    torch.manual_seed(0)
    net = models.build("fcnn_smaller", (1, 28, 28), 10).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 28, 28, generator=g, dtype=torch.float64)
    x_prime = torch.rand(8, 1, 28, 28, generator=g, dtype=torch.float64)
    f = net.extractor("fc2")
    budget = DEFAULT_MAX_ITER["decay"]
    bound = closed_form.input_distance(x, x_prime)
    found = jacobian.search(f, None, x, x_prime, step="merit", max_iter=budget, box=None)
    decay = jacobian.search(f, None, x, x_prime, step="decay", max_iter=budget, box=None)
    assert (found.iterations <= budget).all()
    assert (found.distance < 0.5 * bound).all()
    assert (found.distance <= 1.05 * decay.distance).all()
    # The control: the same pairs cycle without the safeguard (its patience never runs out).
    monkeypatch.setattr(merit, "MERIT_PATIENCE", budget + 1)
    unguarded = jacobian.search(f, None, x, x_prime, step="merit", max_iter=budget, box=None)
    assert (unguarded.distance == bound).any()


def test_jacobian_rows_carry_no_autograd_graph():
    """A module whose parameters require grad (a user's model, not prepared by the workflow) must
    not make the rows keep their graphs: iterates built from them would keep every earlier one
    alive (a 6-pair search of a 784-300-200 network grew past 20 GB this way)."""
    torch.manual_seed(13)
    layer = torch.nn.Linear(7, 3).double()
    assert layer.weight.requires_grad
    value, rows = linear_step.jacobian_rows(torch.nn.Sequential(layer, torch.nn.ReLU()), torch.rand(4, 7, dtype=torch.float64))
    assert not rows.requires_grad and not value.requires_grad
    assert rows.shape == (4, 3, 7)


def test_auto_step_is_merit_on_narrow_maps_and_decay_on_wide_ones(monkeypatch):
    limit = jacobian.AUTO_MERIT_MAX_FEATURES
    assert jacobian.resolve_step("auto", 10) == "merit" and jacobian.resolve_step("auto", limit) == "merit"
    assert jacobian.resolve_step("auto", limit + 1) == "decay" and jacobian.resolve_step("decay", 10) == "decay"
    with pytest.raises(ValueError, match="unknown step control 'line_search'; known: auto, decay, merit"):
        jacobian.resolve_step("line_search", 10)
    # search resolves by the map's width m: A's rows when projected, f's outputs when not.
    ran = []
    for name, run in list(jacobian.STEPS.items()):
        monkeypatch.setitem(jacobian.STEPS, name, lambda *a, _name=name, _run=run, **k: ran.append(_name) or _run(*a, **k))
    f, _ = affine_extractor(30, limit + 10, seed=15)
    x, x_prime = pairs_of_uniform(30, 4, seed=17)
    jacobian.search(f, None, x, x_prime, step="auto", box=None)
    jacobian.search(f, torch.randn(10, limit + 10, dtype=torch.float64), x, x_prime, step="auto", box=None)
    narrow, _ = affine_extractor(30, 8, seed=16)
    jacobian.search(narrow, None, x, x_prime, step="auto", box=None)
    assert ran == ["decay", "merit", "merit"]


def pairs_of_uniform(n: int, count: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, n, generator=g, dtype=torch.float64), torch.rand(count, n, generator=g, dtype=torch.float64)


def test_merit_results_do_not_depend_on_the_batch(pairs_of):
    """With a box the chord steps clip, so a pair that already collides must not take the steps
    other pairs of its batch still need: one pair at a time gives the same collisions, to rounding.
    (Over more iterations rounding differences between batch shapes can flip one trial's
    acceptance; 5 iterations stay clear of that here.)"""
    torch.manual_seed(18)
    net = models.build("small", (1, 12, 12), 10)
    width = net.tap_widths()["fc3"]
    f = net.double().eval().extractor("fc3")
    x, x_prime = pairs_of((1, 12, 12), 10, seed=19)
    A = projection.draw(0, "batch", "fc3", 4, 0, width, dtype=torch.float64)
    together = jacobian.search(f, A, x, x_prime, step="merit", max_iter=5, dtype=torch.float64, box=(0.0, 1.0))
    alone = jacobian.search(f, A, x, x_prime, step="merit", max_iter=5, dtype=torch.float64, box=(0.0, 1.0),
                            batch_size=1)
    assert torch.allclose(together.distance, alone.distance, rtol=1e-12, atol=0)


class _InfiniteInAStrip(torch.nn.Module):
    """W u, except +inf where the first coordinate lies in (0.3, 0.7)."""

    def __init__(self, W):
        super().__init__()
        self.W = W

    def forward(self, u):
        u = u.flatten(1)
        strip = (u[:, :1] > 0.3) & (u[:, :1] < 0.7)
        return u @ self.W.T + torch.where(strip, torch.inf, 0.0)


def test_merit_stops_a_pair_whose_features_become_infinite():
    """Pair 0's midpoint and everything near it map to inf: it keeps its midpoint, and the other
    pairs are unaffected
    (without the finiteness check its NaN residual reached the eigendecomposition and raised)."""
    torch.manual_seed(20)
    W = torch.randn(3, 6, dtype=torch.float64)
    g = torch.Generator().manual_seed(21)
    x, x_prime = torch.rand(4, 6, generator=g, dtype=torch.float64), torch.rand(4, 6, generator=g, dtype=torch.float64)
    x[:, 0], x_prime[:, 0] = 0.2, 0.8     # every midpoint's first coordinate is 0.5 ...
    x[1:, 0], x_prime[1:, 0] = 0.05, 0.2  # ... for pair 0 only
    found = jacobian.search(_InfiniteInAStrip(W), None, x, x_prime, step="merit", box=None)
    assert found.distance[0] == pytest.approx(float((x[0] - x_prime[0]).norm() / 2))
    rest = jacobian.search(_InfiniteInAStrip(W), None, x[1:], x_prime[1:], step="merit", box=None)
    assert torch.allclose(found.distance[1:], rest.distance, rtol=1e-12, atol=0)
    assert (rest.distance < closed_form.input_distance(x[1:], x_prime[1:])).all()


# --- the merit search's balancing metric -------------------------------------------------------------

def test_weighted_box_projection_is_the_weighted_least_squares_point():
    """project() with weights (w, w') and a box against cvxpy's QP: Jacobians that differ at the
    two points, a nonzero residual, and weights up to 20 apart."""
    import cvxpy as cp

    g = torch.Generator().manual_seed(31)
    B, m, n = 5, 3, 14
    J, J_prime = torch.randn(B, m, n, generator=g, dtype=torch.float64), torch.randn(B, m, n, generator=g, dtype=torch.float64)
    z, z_prime = _binary_images(B, n, seed=32)
    p, p_prime = _binary_images(B, n, seed=33)
    r = 0.3 * torch.randn(B, m, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, 0.2, 1.9, 0.1, 1.5], dtype=torch.float64)
    u, u_prime = linear_step.project(J, J_prime, r, z, z_prime, p, p_prime, box=(0.0, 1.0), weights=(w, 2 - w))
    assert u.min() >= 0 and u.max() <= 1 and u_prime.min() >= 0 and u_prime.max() <= 1
    for k in range(B):
        a, b = cp.Variable(n), cp.Variable(n)
        constraint = r[k].numpy() + J_prime[k].numpy() @ (b - z_prime[k].numpy()) - J[k].numpy() @ (a - z[k].numpy()) == 0
        goal = float(w[k]) * cp.sum_squares(a - p[k].numpy()) + float(2 - w[k]) * cp.sum_squares(b - p_prime[k].numpy())
        problem = cp.Problem(cp.Minimize(goal), [constraint, a >= 0, a <= 1, b >= 0, b <= 1])
        problem.solve(solver=cp.CLARABEL)
        ours = float(w[k] * ((u[k] - p[k]) ** 2).sum() + (2 - w[k]) * ((u_prime[k] - p_prime[k]) ** 2).sum())
        assert ours == pytest.approx(problem.value, rel=1e-6)
        residual = r[k] + J_prime[k] @ (u_prime[k] - z_prime[k]) - J[k] @ (u[k] - z[k])
        assert residual.abs().max() < 1e-9


def test_merit_reaches_a_local_min_max_where_least_squares_is_unbalanced():
    """On a smooth two-layer map (tanh, 8 hidden units, 2 features) the Jacobians differ at the
    two points, so the least-squares collision leaves one point farther than the other. The merit
    search minimizes the max: a generic solver (SLSQP on min t s.t. both squared distances <= t and
    g(u) = g(u')) started from its result improves it by less than 0.1% (a local min-max optimum,
    to the accuracy 15 iterations reach), while from the same start the least-squares optimum's
    max is larger, by more than 3% on some pairs."""
    from scipy.optimize import minimize
    g0 = torch.Generator().manual_seed(21)
    n = 6
    W = torch.randn(8, n, generator=g0, dtype=torch.float64) * 1.5
    b = torch.randn(8, generator=g0, dtype=torch.float64)
    V = torch.randn(2, 8, generator=g0, dtype=torch.float64)
    x = torch.randn(6, n, generator=g0, dtype=torch.float64)
    x_prime = torch.randn(6, n, generator=g0, dtype=torch.float64)
    found = jacobian.search(lambda u: torch.tanh(u @ W.T + b) @ V.T, None, x, x_prime, step="merit", max_iter=15,
                            dtype=torch.float64, box=None, return_points=True)
    Wn, bn, Vn = W.numpy(), b.numpy(), V.numpy()

    def features(u):
        return Vn @ np.tanh(Wn @ u + bn)

    def solve(k: int, objective: str) -> float:
        """SLSQP from the merit search's collision; the max of the two distances it ends at."""
        a, c = x[k].numpy(), x_prime[k].numpy()
        start = np.concatenate([found.x_tilde[k].numpy(), found.x_tilde_prime[k].numpy()])
        collide = dict(type="eq", fun=lambda v: features(v[:n]) - features(v[n:2 * n]))
        if objective == "max":
            squares = [lambda v: np.sum((v[:n] - a) ** 2), lambda v: np.sum((v[n:2 * n] - c) ** 2)]
            constraints = [collide] + [dict(type="ineq", fun=lambda v, s=s: v[-1] - s(v)) for s in squares]
            start = np.append(start, max(s(start) for s in squares))
            goal = lambda v: v[-1]  # noqa: E731
        else:
            constraints = [collide]
            goal = lambda v: np.sum((v[:n] - a) ** 2) + np.sum((v[n:] - c) ** 2)  # noqa: E731
        v = minimize(goal, start, constraints=constraints, method="SLSQP", options=dict(ftol=1e-13, maxiter=500)).x
        assert np.abs(features(v[:n]) - features(v[n:2 * n])).max() < 1e-7
        return max(np.linalg.norm(v[:n] - a), np.linalg.norm(v[n:2 * n] - c))

    least_squares = []
    for k in range(len(x)):
        assert float(found.distance[k]) <= solve(k, "max") * (1 + 1e-3)
        least_squares.append(solve(k, "squares"))
    assert (found.distance <= torch.tensor(least_squares) * (1 + 1e-6)).all()
    assert (found.distance < 0.97 * torch.tensor(least_squares)).any()


def test_curvature_fraction_measures_the_lagrangians_curvature_along_the_step_on_a_quadratic_map():
    """On a quadratic map g_k(u) = u^T P_k u / 2 + b_k^T u the Jacobians at the two ends of a step
    s differ by exactly (s^T P_k)_k, so the secant curvature of the curvature fraction is the exact
    curvature of the Lagrangian along the step: rho = lambda^T (s'^T P s' - s^T P s) /
    (w ||s||^2 + w' ||s'||^2), lambda the multipliers of the weighted projection of (x, x') onto
    the linearization at z, here from the KKT system solved directly."""
    gen = torch.Generator().manual_seed(51)
    B, m, n = 4, 3, 7
    P = torch.randn(m, n, n, generator=gen, dtype=torch.float64)
    P = P + P.transpose(1, 2)
    b = torch.randn(m, n, generator=gen, dtype=torch.float64)

    def g(u):
        return 0.5 * torch.einsum("bi,kij,bj->bk", u, P, u) + u @ b.T

    z, z_prime, x, x_prime, s, s_prime = (torch.randn(B, n, generator=gen, dtype=torch.float64) for _ in range(6))
    w = 2 * torch.rand(B, generator=gen, dtype=torch.float64)
    values, rows = linear_step.jacobian_rows(g, torch.cat([z, z_prime, z - s, z_prime - s_prime]))
    J, J_prime, J_old, J_old_prime = rows.chunk(4)
    g_z, g_z_prime = values[:B], values[B:2 * B]
    rho = merit._curvature(J, J_prime, g_z_prime - g_z, z, z_prime, x, x_prime, (w, 2 - w), s, s_prime,
                              linear_step._apply(J_old, s), linear_step._apply(J_old_prime, s_prime))
    for k in range(B):
        wk, wk_prime = float(w[k]), float(2 - w[k])
        eye = torch.eye(n, dtype=torch.float64)
        kkt = torch.zeros(2 * n + m, 2 * n + m, dtype=torch.float64)
        kkt[:n, :n], kkt[n:2 * n, n:2 * n] = wk * eye, wk_prime * eye
        kkt[:n, 2 * n:], kkt[n:2 * n, 2 * n:] = -J[k].T, J_prime[k].T
        kkt[2 * n:, :n], kkt[2 * n:, n:2 * n] = -J[k], J_prime[k]
        rhs = torch.cat([wk * x[k], wk_prime * x_prime[k],
                         -(g_z_prime[k] - g_z[k]) + J_prime[k] @ z_prime[k] - J[k] @ z[k]])
        multipliers = torch.linalg.solve(kkt, rhs)[2 * n:]
        curvature = (torch.einsum("i,kij,j->k", s_prime[k], P, s_prime[k])
                     - torch.einsum("i,kij,j->k", s[k], P, s[k]))
        expected = multipliers @ curvature / (wk * s[k].square().sum() + wk_prime * s_prime[k].square().sum())
        assert float(rho[k]) == pytest.approx(float(expected), rel=1e-9, abs=1e-12)
    # No step yet (NaN) or a zero step: no curvature, the merit search's own fraction is used.
    none = merit._curvature(J, J_prime, g_z_prime - g_z, z, z_prime, x, x_prime, (w, 2 - w), 0 * s, 0 * s_prime,
                               torch.zeros(B, m, dtype=torch.float64), torch.zeros(B, m, dtype=torch.float64))
    assert torch.isnan(none).all()


def test_weighted_chord_step_in_the_box_moves_free_coordinates_by_the_weighted_least_norm_step():
    """_chord_step with weights and a box: from points strictly inside the box with a small
    residual nothing clips, and the step is the weighted least-norm correction (the unboxed
    weighted projection of the points onto their own linearization); coordinates on the box's
    faces do not move."""
    g = torch.Generator().manual_seed(41)
    B, m, n = 4, 3, 12
    J, J_prime = torch.randn(B, m, n, generator=g, dtype=torch.float64), torch.randn(B, m, n, generator=g, dtype=torch.float64)
    u = 0.3 + 0.4 * torch.rand(B, n, generator=g, dtype=torch.float64)
    u_prime = 0.3 + 0.4 * torch.rand(B, n, generator=g, dtype=torch.float64)
    r = 1e-3 * torch.randn(B, m, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, 0.1, 1.8, 0.5], dtype=torch.float64)
    weights = (w, 2 - w)
    c, c_prime = merit._chord_step(J, J_prime, r, u, u_prime, (0.0, 1.0), weights)
    free, free_prime = linear_step.project(J, J_prime, r, u, u_prime, u, u_prime, weights=weights)
    assert torch.allclose(c, free, atol=1e-14) and torch.allclose(c_prime, free_prime, atol=1e-14)
    assert (c != u).all() and not torch.allclose(c, linear_step.project(J, J_prime, r, u, u_prime, u, u_prime)[0])
    # On a face: a point with its first 4 coordinates at 0 keeps them there.
    u[:, :4] = 0.0
    c, c_prime = merit._chord_step(J, J_prime, r, u, u_prime, (0.0, 1.0), weights)
    assert (c[:, :4] == 0).all()
    linearized = r + (J_prime @ (c_prime - u_prime).unsqueeze(2)).squeeze(2) - (J @ (c - u).unsqueeze(2)).squeeze(2)
    assert linearized.abs().max() < 1e-12
