"""Paper 002's polytope descent (layerbound.collide.polytope) against closed forms and against the
global optimum found by enumerating every activation pattern of tiny ReLU networks."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from layerbound.models import registry as models
import polytope_reference
from layerbound.collide import METHODS, CollisionOptions, closed_form, polytope
from layerbound.collide.options import PolytopeOptions

pytestmark = pytest.mark.usefixtures("one_thread")


def chain(widths: list[int], seed: int, relu_last: bool = True) -> list[polytope.Stage]:
    """A random fully connected ReLU chain n0 -> widths[0] -> ... (float64)."""
    rng = np.random.default_rng(seed)
    stages = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        last = i == len(widths) - 2
        stages.append(polytope.Stage(rng.normal(size=(n_out, n_in)), rng.normal(scale=0.5, size=n_out),
                                     relu=relu_last or not last))
    return stages


def pairs(count: int, n0: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(count, n0, generator=g, dtype=torch.float64) * 2 - 1,
            torch.rand(count, n0, generator=g, dtype=torch.float64) * 2 - 1)


def boxed_pairs(count: int, n0: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs in [0, 1]^n0 with about a quarter of their coordinates on each face of the box (like
    an image's black and white pixels): uniform on [-1/2, 3/2], clamped."""
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.rand(count, n0, generator=g, dtype=torch.float64) * 2 - 0.5).clamp(0, 1) for _ in range(2))


def pattern_combinations(stages: list[polytope.Stage]):
    """Every combination of sign patterns: the hidden layers' per point, the tap's shared (all
    active rows for an affine tap), as (pattern, pattern')."""
    hidden = [len(s.k) for s in stages[:-1]]
    tap = len(stages[-1].k) if stages[-1].relu else 0
    for code in itertools.product([False, True], repeat=2 * sum(hidden) + tap):
        code = np.array(code)
        pattern, pattern_prime, at = [], [], 0
        for n in hidden:
            pattern.append(code[at:at + n])
            pattern_prime.append(code[at + n:at + 2 * n])
            at += 2 * n
        last = code[at:at + tap] if stages[-1].relu else np.ones(len(stages[-1].k), dtype=bool)
        yield pattern + [last], pattern_prime + [last.copy()]


def global_optimum(stages: list[polytope.Stage], x: np.ndarray, x_prime: np.ndarray) -> float:
    """min over every pattern combination of the polytope's cone program: the exact collision
    distance of the chain."""
    V = np.eye(len(x))      # no input reduction: the reference solves in the full input space
    solutions = (polytope._cone_program(stages, V, x, x_prime, p, p_prime, None)
                 for p, p_prime in pattern_combinations(stages))
    return min([s[0] for s in solutions if s is not None], default=np.inf)


def boxed_global_optimum(stages: list[polytope.Stage], x: np.ndarray, x_prime: np.ndarray,
                         box: tuple[float, float]) -> float:
    """The exact boxed collision distance of the chain: the least optimum, over every pattern
    combination, of the polytope's cone program in the whole input space with the box, each one
    stated and solved independently of the descent (the dense form through cvxpy,
    polytope_reference)."""
    return min(polytope_reference.cone_program(stages, x, x_prime, p, p_prime, box=box)[0]
               for p, p_prime in pattern_combinations(stages))


@pytest.mark.parametrize("box", [None, (-1.0, 1.0)])
@pytest.mark.parametrize("widths", [[6, 8, 5], [5, 3, 4]])
def test_layered_cone_program_equals_the_dense_form(widths, box):
    """The sparse layered program (with the input reduction when the first layer is narrow and
    there is no box) has the dense form's optimum and duals on random polytopes; a sparse stage
    matrix changes nothing."""
    stages = chain(widths, seed=7 * sum(widths))
    xs, xs_prime = (t.numpy() for t in pairs(12, widths[0], seed=11))
    rng = np.random.default_rng(5)
    V = polytope.input_basis(stages[0].W, box)
    assert (V is None) == (widths[1] >= widths[0] or box is not None)
    sparse_stages = [polytope.Stage(sp.csr_matrix(s.W), s.k, s.relu) for s in stages]
    solved = 0
    for k in range(len(xs)):
        x, x_prime = xs[k], xs_prime[k]
        # The midpoint's polytope (always feasible), and on every other pair each point's hidden
        # patterns taken near the midpoint instead (the tap's shared).
        mid = (x + x_prime) / 2
        noise = 0.3 * (k % 2)
        pattern = [p > 0 for p in polytope._pre_activations(stages, mid + noise * rng.normal(size=len(x)))]
        pattern_prime = [p > 0 for p in polytope._pre_activations(stages, mid + noise * rng.normal(size=len(x)))]
        pattern_prime[-1] = pattern[-1].copy()
        result = polytope._cone_program(stages, V, x, x_prime, pattern, pattern_prime, box)
        t_ref, duals_ref = polytope_reference.cone_program(stages, x, x_prime, pattern, pattern_prime, box=box)
        if result is None or t_ref is None or not np.isfinite(t_ref):
            assert (result is None) == (t_ref is None or not np.isfinite(t_ref))   # infeasible for both
            continue
        solved += 1
        t, u, u_prime, duals, duals_prime = result
        assert t == pytest.approx(t_ref, rel=1e-6, abs=1e-8)
        # Duals need not be unique; what the flip rule relies on is complementarity: a positive dual
        # only on a sign constraint that binds at the optimum (its pre-activation at zero).
        for point, pats, ds in ((u, pattern, duals), (u_prime, pattern_prime, duals_prime)):
            z = point
            for stage, s, d in zip(stages, pats, ds):
                z = stage.W @ z + stage.k
                if stage.relu:
                    sign = np.where(s, 1.0, -1.0)
                    assert (sign * z >= -1e-6).all()                         # inside the polytope
                    assert (d * np.abs(z) <= 1e-6 * (1 + d.max())).all()      # complementary
                    z = z * s
        # And a clearly positive dual of the reference is positive here too.
        scale_ref = max(d.max(initial=0) for d in duals_ref[0] + duals_ref[1])
        for mine, ref in zip(duals + duals_prime, duals_ref[0] + duals_ref[1]):
            if scale_ref > 1e-6:
                assert (mine[ref > 1e-2 * scale_ref] > 0).all()
        t_sparse = polytope._cone_program(sparse_stages, V, x, x_prime, pattern, pattern_prime, box)[0]
        assert t_sparse == pytest.approx(t, rel=1e-9)
    assert solved >= 8


def test_affine_layer_is_the_closed_form():
    # A pre-activation tap: one cone program, ||V^T (x - x')|| / 2 exactly.
    stages = chain([12, 5], seed=0, relu_last=False)
    x, x_prime = pairs(6, 12, seed=1)
    result = polytope.search(stages, x, x_prime)
    expected = closed_form.affine_distance(torch.from_numpy(stages[0].W), x, x_prime)
    assert torch.allclose(result.distance, expected, rtol=1e-6)
    assert (expected < 0.9 * closed_form.input_distance(x, x_prime)).all()   # a real reduction
    assert result.converged.all() and (result.iterations == 1).all()


def test_a_wide_full_rank_layer_only_collides_at_the_midpoint():
    # n_1 > n_0 with a full-rank map: no two inputs share features, so d = ||x - x'|| / 2 (why
    # paper 001's Figure 7 is flat: the first conv layer without projection is the input space).
    stages = chain([4, 9], seed=2, relu_last=False)
    x, x_prime = pairs(5, 4, seed=3)
    result = polytope.search(stages, x, x_prime)
    assert torch.allclose(result.distance, closed_form.input_distance(x, x_prime), rtol=1e-7)


@pytest.mark.parametrize("widths", [[2, 3], [3, 5], [2, 3, 2], [3, 2, 3]])
def test_descent_against_the_enumerated_global_optimum(widths):
    """Never below the global optimum (it returns true collisions), never above the midpoint, and
    at it on most pairs (the descent is local)."""
    stages = chain(widths, seed=sum(widths))
    x, x_prime = pairs(8, widths[0], seed=len(widths))
    result = polytope.search(stages, x, x_prime)
    midpoint = closed_form.input_distance(x, x_prime)
    reached = 0
    for k in range(len(x)):
        optimum = global_optimum(stages, x[k].numpy(), x_prime[k].numpy())
        d = result.distance[k].item()
        assert d >= optimum - 1e-6 * (1 + optimum)
        assert d <= midpoint[k].item() + 1e-12
        reached += d <= optimum + 1e-5 * (1 + optimum)
    assert reached >= 5, f"the descent reached the global optimum on {reached} of 8 pairs"


def test_boxed_search_leaves_the_row_space():
    """f(u) = u_1 + u_2 in [0, 1]^2 from x = (0, 1), x' = (1, 1): x~ can raise the sum only
    through u_1 (u_2 is at the box), by a at distance a; x~' lowers it by sqrt(2) e at distance e
    along -(1, 1) / sqrt(2). The collision needs a + sqrt(2) e = 1, so the boxed optimum is
    a = e = sqrt(2) - 1, below the midpoint's 1/2, at x~ = (sqrt(2) - 1, 1), x~' = (1, 1) / sqrt(2).
    The row-space reduction (delta along (1, 1)) cannot raise the sum of x~ inside the box."""
    stages = [polytope.Stage(np.array([[1.0, 1.0]]), np.zeros(1), relu=False)]
    x, x_prime = torch.tensor([[0.0, 1.0]], dtype=torch.float64), torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    result = polytope.search(stages, x, x_prime, box=(0.0, 1.0), return_points=True)
    # Clarabel stops at relative gap and feasibility 1e-8, and t's sensitivity to both is O(1) here.
    assert result.distance.item() == pytest.approx(np.sqrt(2) - 1, rel=1e-6)
    np.testing.assert_allclose(result.x_tilde.numpy(), [[np.sqrt(2) - 1, 1.0]], atol=1e-6)
    np.testing.assert_allclose(result.x_tilde_prime.numpy(), [[1 / np.sqrt(2)] * 2], atol=1e-6)


@pytest.mark.parametrize("widths, relu_last, seed", [
    ([10, 2, 2], False, 9),      # the row-space search stayed at the midpoint on all 8 pairs
    ([2, 1, 2], True, 1),
    ([4, 3], True, 0),
])
def test_boxed_descent_against_the_enumerated_global_optimum(widths, relu_last, seed):
    """In the [0, 1] box with a first layer narrower than the input: never below the boxed global
    optimum (enumerated over every pattern, each program solved by cvxpy), never above the midpoint,
    and at it on each of the 8 pairs."""
    box = (0.0, 1.0)
    stages = chain(widths, seed=seed, relu_last=relu_last)
    x, x_prime = boxed_pairs(8, widths[0], seed=seed)
    result = polytope.search(stages, x, x_prime, box=box)
    midpoint = closed_form.input_distance(x, x_prime)
    reached = 0
    for k in range(len(x)):
        optimum = boxed_global_optimum(stages, x[k].numpy(), x_prime[k].numpy(), box)
        d = result.distance[k].item()
        # Both sides solve the same programs to Clarabel's 1e-8 gap and feasibility.
        assert d >= optimum - 1e-6 * (1 + optimum)
        assert d <= midpoint[k].item() + 1e-12
        reached += d <= optimum + 1e-6 * (1 + optimum)
    assert reached == len(x), f"the boxed descent reached the global optimum on {reached} of 8 pairs"


def test_collisions_verify_through_the_network_and_the_registry(one_thread):
    """Through a trained-architecture network: the stages equal the network, the collisions verify
    with its forward pass, and CollisionOptions dispatches to the method."""
    torch.manual_seed(0)
    net = models.build("fcnn_smaller", (1, 6, 6), 10).double().eval()
    x, x_prime = (t.reshape(3, 1, 6, 6).abs().clamp(0, 1) for t in pairs(3, 36, seed=5))
    f = net.extractor("fc2")
    stages = polytope.stages_of(f, (1, 6, 6))
    u = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    np.testing.assert_allclose(polytope.forward(stages, u.reshape(4, -1).numpy()), f(u).detach().numpy(), atol=1e-12)
    options = CollisionOptions(method="polytope", dtype="float64", box=None, method_options=PolytopeOptions())
    result = options.run(f, None, x, x_prime, return_points=True)
    with torch.no_grad():
        residual = (f(result.x_tilde_prime) - f(result.x_tilde)).norm(dim=1)
    assert torch.allclose(residual, result.residual, atol=1e-9)
    assert (result.residual <= 1e-6 * result.feature_gap).all()
    assert (result.distance < closed_form.input_distance(x, x_prime)).all()
    assert "polytope" in METHODS
    with pytest.raises(ValueError, match="unprojected maps only"):
        options.run(f, torch.eye(3, 50, dtype=torch.float64), x, x_prime, return_points=False)


def test_unsupported_layers_fail_with_one_line():
    net = models.build("cnn4", (1, 28, 28), 10).double().eval()     # conv - BN - ReLU - max pool
    with pytest.raises(ValueError, match="ReLU activations only"):
        polytope.stages_of(net.extractor("conv2"), (1, 28, 28))
    with pytest.raises(ValueError, match="needs a layerbound network"):
        polytope.stages_of(lambda u: u, (1, 28, 28))
