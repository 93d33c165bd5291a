"""Certification (collide/certify.py): every reported collision really collides.

The maps here have known answers: on an injective map every collision has x~ = x~', so the
collision distance is exactly ||x - x'|| / 2 and a smaller reported distance is an invalid edge;
on affine maps the closed form of paper 002, Section 3.1 gives it; on a smooth non-injective
network an independent float64 solve (SLSQP on a numpy copy of the network) locates the collision
the certificate reports.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import nn

from layerbound import api
from layerbound.data import pairs as pairsets
from layerbound.collide import certify, closed_form, jacobian

pytestmark = pytest.mark.usefixtures("one_thread")

# A reported distance may exceed the truth (a float32 midpoint is rounded) but never fall below
# it by more than the certificate's first-order accuracy (XTOL = 1e-10) and float64 rounding of
# the norms: the acceptance bound.
BELOW_TRUTH = 1e-9


def tanh_map(n: int = 20, c: float = 5.0, seed: int = 0):
    """g(u) = tanh(c W u), W square Gaussian: injective, saturating (the issue's 0.47x case)."""
    W = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return lambda u: torch.tanh(c * u.flatten(1) @ W.T.to(u.dtype)), n


def cube_map(n: int = 10, K: float = 1000.0):
    """g(u) = (K u_0, u_1^3, ..., u_{n-1}^3): injective, badly scaled (the issue's 0.59x case)."""
    def g(u: torch.Tensor) -> torch.Tensor:
        u = u.flatten(1)
        return torch.cat([K * u[:, :1], u[:, 1:] ** 3], dim=1)
    return g, n


def draw_pairs(n: int, count: int, boxed: bool, seed: int = 1):
    rng = torch.Generator().manual_seed(seed)
    draw = torch.rand if boxed else torch.randn
    return draw(count, n, generator=rng, dtype=torch.float64), draw(count, n, generator=rng, dtype=torch.float64)


@pytest.mark.parametrize("make_map", [tanh_map, cube_map], ids=["tanh", "cube"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("boxed", [False, True], ids=["unboxed", "boxed"])
def test_injective_maps_never_report_less_than_the_truth(make_map, dtype, boxed):
    g, n = make_map()
    x, x_prime = draw_pairs(n, 8, boxed)
    box = (0.0, 1.0) if boxed else None
    truth = (x - x_prime).norm(dim=1) / 2          # x~ = x~' for every collision of an injective map
    for step in ("merit", "decay"):
        found = jacobian.search(g, None, x.to(dtype), x_prime.to(dtype), dtype=dtype, box=box, step=step,
                                return_points=True)
        result = certify.certify(g, x, x_prime, found, box)
        assert (result.distance >= (1 - BELOW_TRUTH) * truth).all(), (step, (result.distance / truth).min())
        assert (result.distance <= truth * (1 + 1e-6)).all()   # never above the midpoint (float32 rounding aside)
        # The reported points collide in float64, and the record says what happened to each pair.
        assert (result.candidate >= -1).all() and (result.polish_steps >= 0).all()
        fell_back = result.candidate != 0
        midpoint = result.candidate < 0
        torch.testing.assert_close(result.distance[midpoint], truth[midpoint], rtol=4e-16, atol=0)
        assert (result.search_distance[~fell_back] > 0).all()


def test_the_search_alone_reports_invalid_edges_on_the_tanh_map():
    """The failure certification exists for: the float32 search's own distances fall well below
    the truth on the saturating tanh map (so the test above is not vacuous)."""
    g, n = tanh_map()
    x, x_prime = draw_pairs(n, 8, boxed=True)
    found = jacobian.search(g, None, x.float(), x_prime.float(), dtype=torch.float32, box=(0.0, 1.0),
                            return_points=True)
    assert ((found.distance / ((x - x_prime).norm(dim=1) / 2)) < 0.9).any()


def test_the_api_reports_certified_distances_on_an_injective_network():
    """api.collisions on a wrapped tanh network (no projection: m >= n_j) reports at least the
    true distance ||x - x'|| / 2 for every pair, and counts the pairs that fell back."""
    torch.manual_seed(0)
    n = 12
    linear = nn.Linear(n, n, bias=False)
    with torch.no_grad():
        linear.weight.copy_(5 * torch.randn(n, n))
    model = api.wrap(nn.Sequential(linear, nn.Tanh()), (n,), num_classes=n)
    S = 3
    x_a, x_b = torch.randn(S, n), torch.randn(S, n)
    pairs = pairsets.PairSet("toy", "toy", "train", (0, 1), S, 0, x_a, x_b, torch.zeros(S), torch.ones(S),
                             torch.arange(S), torch.arange(S))
    found = api.collisions(model, "1", pairs, m=n, box=None)
    truth = torch.cdist(x_a.double(), x_b.double()).numpy() / 2
    assert (found.distances[0] >= (1 - BELOW_TRUTH) * truth).all()
    assert found.candidates.shape == found.distances.shape and found.certified_in == "float64"


# --- a smooth non-injective network: the certified collision against an independent solve ------

def _smooth_net(activation: str, seed: int = 3):
    rng = np.random.default_rng(seed)
    W1, b1 = rng.normal(size=(6, 8)) / math.sqrt(8), rng.normal(size=6) * 0.1
    A = rng.normal(size=(3, 6))                     # a projection to m = 3 < 8 inputs: collisions abound
    return W1, b1, A, activation


def _np_features(net, u: np.ndarray) -> np.ndarray:
    W1, b1, A, activation = net
    z = u @ W1.T + b1
    if activation == "gelu":
        from scipy.special import erf
        h = 0.5 * z * (1 + erf(z / math.sqrt(2)))
    else:
        h = z / (1 + np.exp(-z))
    return h @ A.T


def _torch_map(net):
    W1, b1, A, activation = (torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in net)
    act = nn.GELU() if activation == "gelu" else nn.SiLU()

    def g(u: torch.Tensor) -> torch.Tensor:
        return act(u.flatten(1) @ W1.T.to(u.dtype) + b1.to(u.dtype)) @ A.T.to(u.dtype)
    return g


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_a_smooth_network_collision_matches_an_independent_float64_solve(activation):
    net = _smooth_net(activation)
    g = _torch_map(net)
    x, x_prime = draw_pairs(8, 6, boxed=False, seed=5)
    found = jacobian.search(g, None, x.float(), x_prime.float(), dtype=torch.float32, return_points=True)
    result = certify.certify(g, x, x_prime, found, None)
    assert (result.candidate == 0).all()           # nothing to fall back from on this smooth map
    u, u_prime = result.x_tilde.numpy(), result.x_tilde_prime.numpy()
    F = np.maximum(np.linalg.norm(_np_features(net, x.numpy()), axis=1),
                   np.linalg.norm(_np_features(net, x_prime.numpy()), axis=1))
    residual = np.linalg.norm(_np_features(net, u_prime) - _np_features(net, u), axis=1)
    assert (residual <= certify.CERTIFY_TOL[torch.float64][0] * 4 * F).all()   # collides in numpy too
    distance = np.maximum(np.linalg.norm(u - x.numpy(), axis=1), np.linalg.norm(u_prime - x_prime.numpy(), axis=1))
    np.testing.assert_allclose(result.distance.numpy(), distance, rtol=1e-14)

    # SLSQP in float64 projects the search's own candidate onto {g(v) = g(v')}: Gauss-Newton from
    # the same start reaches a point of that set within second order of the candidate's offset,
    # so the distances agree to about offset^2 / distance (the 10 allows for curvature), plus
    # SLSQP's own accuracy (its equality constraints hold to about 1e-12 here: 1e-10 of d).
    z0 = np.concatenate([found.x_tilde.double().numpy(), found.x_tilde_prime.double().numpy()], axis=1)
    for k in range(len(x)):
        solved = scipy.optimize.minimize(
            lambda z: np.sum((z - z0[k]) ** 2), z0[k], jac=lambda z: 2 * (z - z0[k]), method="SLSQP",
            constraints={"type": "eq", "fun": lambda z: (_np_features(net, z[None, 8:]) - _np_features(net, z[None, :8]))[0]},
            options={"ftol": 1e-16, "maxiter": 200})
        v, v_prime = solved.x[:8], solved.x[8:]
        reference = max(np.linalg.norm(v - x[k].numpy()), np.linalg.norm(v_prime - x_prime[k].numpy()))
        offset = np.linalg.norm(z0[k] - np.concatenate([u[k], u_prime[k]]))
        assert abs(result.distance[k].item() - reference) <= 10 * offset ** 2 / reference + 1e-10 * reference, k


# --- closed forms: unchanged by the certificate ------------------------------------------------

def test_the_affine_closed_forms_keep_their_digits():
    """Input with a projection (d = ||P (x - x')|| / 2) and an affine layer (d = ||V^T (x - x')|| / 2,
    paper 002 Section 3.1): certified to float64 rounding of the closed form."""
    rng = torch.Generator().manual_seed(7)
    x, x_prime = torch.rand(10, 1, 6, 6, generator=rng), torch.rand(10, 1, 6, 6, generator=rng)
    A = torch.randn(5, 36, generator=rng)
    H, k = torch.randn(20, 36, generator=rng), torch.randn(20, generator=rng)
    for L, g64 in ((A.double(), lambda u: u.flatten(1) @ A.double().T),
                   ((A[:, :20].double() @ H.double()), lambda u: (u.flatten(1) @ H.double().T + k.double()) @ A[:, :20].double().T)):
        g32 = lambda u, g64=g64: g64(u.double()).float()  # noqa: E731
        found = closed_form.collisions(g32, L, x, x_prime, verify_tol=1e-3)
        result = certify.certify(g64, x.double(), x_prime.double(), found, None)
        exact = closed_form.affine_distance(L, x, x_prime)
        np.testing.assert_allclose(result.distance.numpy(), exact.numpy(), rtol=1e-12)
        assert (result.candidate == 0).all()


def test_the_midpoint_is_certified_as_it_is():
    g, n = tanh_map()
    x, x_prime = draw_pairs(n, 5, boxed=False)
    midpoint = (x + x_prime) / 2
    found = jacobian.search(g, None, x, x_prime, max_iter=0, return_points=True)   # returns the midpoint
    assert torch.equal(found.x_tilde, midpoint)
    result = certify.certify(g, x, x_prime, found, None)
    assert (result.polish_steps == 0).all() and (result.residual == 0).all() and (result.candidate == 0).all()
    torch.testing.assert_close(result.distance, (x - x_prime).norm(dim=1) / 2, rtol=4e-16, atol=0)


def _candidate(x: torch.Tensor, x_prime: torch.Tensor, u: torch.Tensor, u_prime: torch.Tensor) -> certify.Collisions:
    """A method's result whose best candidate is (u, u') (distance as the method would report it)."""
    B = len(x)
    distance = torch.maximum((u - x).flatten(1).norm(dim=1), (u_prime - x_prime).flatten(1).norm(dim=1))
    return certify.Collisions(distance, distance ** 2, torch.zeros(B, dtype=torch.float64),
                              torch.ones(B, dtype=torch.float64), torch.ones(B, dtype=torch.int64),
                              torch.ones(B, dtype=torch.bool), x_tilde=u, x_tilde_prime=u_prime)


def test_a_zero_residual_where_float64_saturates_is_no_collision():
    # g(u) = tanh(s (w.u + b)) is strictly increasing in w.u, so g(u) = g(u') only where
    # w.u = w.u': the distance is |w.(x - x')| / (2 ||w||). With both points past z = 19, float64's
    # tanh is exactly 1.0 at both, so the pair itself has residual 0; it is no collision.
    rng = torch.Generator().manual_seed(3)
    w = torch.randn(8, generator=rng, dtype=torch.float64)
    s = 200.0
    g = lambda u: torch.tanh(s * (u.flatten(1) @ w)).unsqueeze(1)  # noqa: E731
    x = torch.randn(6, 8, generator=rng, dtype=torch.float64)
    x_prime = torch.randn(6, 8, generator=rng, dtype=torch.float64)
    # Shift each point along w so that z = s w.u is 20 + (0..5) and 40 + (0..5): saturated, distinct.
    unit = w / w.norm()
    for points, z in ((x, 20.0), (x_prime, 40.0)):
        target = (z + torch.arange(6, dtype=torch.float64)) / s
        points += (target - points @ w).unsqueeze(1) * unit / w.norm()
    assert (g(x) == g(x_prime)).all() and (g(x) == 1.0).all()          # the rounding this is about
    truth = (x - x_prime) @ w / (2 * w.norm())
    result = certify.certify(g, x, x_prime, _candidate(x, x_prime, x.clone(), x_prime.clone()), None)
    assert (result.candidate == -1).all()                              # refused: the midpoint instead
    assert (result.distance >= truth.abs() * (1 - BELOW_TRUTH)).all()


def test_a_partly_saturated_residual_is_no_collision():
    # g(u) = (tanh(2 w.u), v.u), v orthogonal to w: collisions need w.u = w.u' and v.u = v.u', so
    # the distance is ||D (x - x')|| / 2, D the orthonormal rows w/|w|, v/|v|. Both points are past
    # tanh's float64 saturation and the candidate matches v.u to 1e-13: a small residual, all of it
    # in the feature the Jacobians reach, while the saturated one reads 0.
    rng = torch.Generator().manual_seed(3)
    w, v = torch.randn(8, generator=rng, dtype=torch.float64), torch.randn(8, generator=rng, dtype=torch.float64)
    v -= (v @ w) / (w @ w) * w
    g = lambda u: torch.stack([torch.tanh(2 * (u.flatten(1) @ w)), u.flatten(1) @ v], 1)  # noqa: E731
    x = torch.randn(4, 8, generator=rng, dtype=torch.float64)
    x_prime = torch.randn(4, 8, generator=rng, dtype=torch.float64)
    for points, z in ((x, 20.0), (x_prime, 40.0)):
        points += ((z + torch.arange(4, dtype=torch.float64)) / 2 - points @ w).unsqueeze(1) * w / w.norm() ** 2
    step = ((x_prime @ v - x @ v + 1e-13) / (2 * v.norm())).unsqueeze(1) * v / v.norm()
    u, u_prime = x + step, x_prime - step
    residual = (g(u_prime) - g(u)).norm(dim=1)
    assert ((residual > 0) & (residual < 1e-12)).all()
    D = torch.stack([w / w.norm(), v / v.norm()])
    truth = ((x - x_prime) @ D.T).norm(dim=1) / 2
    result = certify.certify(g, x, x_prime, _candidate(x, x_prime, u, u_prime), None)
    assert (result.candidate == -1).all()
    assert (result.distance >= truth * (1 - BELOW_TRUTH)).all()


def test_an_exact_zero_residual_where_the_jacobians_reach_is_certified():
    # g(u) = u_0 + u_1 (affine): moving x = (0.5, 0) and x' = (0, 1) by (1/8, 1/8) towards each
    # other gives points with g = 0.75 at both, exactly (dyadic numbers, no rounding): the optimum
    # |w.(x - x')| / (2 ||w||) = 0.125 sqrt(2), and the Jacobians [1, 1] reach the feature direction.
    g = lambda u: u.flatten(1)[:, :1] + u.flatten(1)[:, 1:2]  # noqa: E731
    x = torch.tensor([[0.5, 0.0]], dtype=torch.float64)
    x_prime = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    u, u_prime = x + 0.125, x_prime - 0.125
    assert (g(u) == g(u_prime)).all()
    result = certify.certify(g, x, x_prime, _candidate(x, x_prime, u, u_prime), None)
    assert result.candidate.tolist() == [0] and result.residual.tolist() == [0.0]
    assert math.isclose(result.distance.item(), 0.125 * math.sqrt(2), rel_tol=4e-16)


def test_a_float32_midpoint_is_reported_as_the_exact_midpoint_not_as_a_fallback():
    # On an injective map the search's best is its own float32 midpoint (x~ = x~'); the exact
    # float64 midpoint is the closest collision of that kind and counts as that candidate.
    g, n = tanh_map()
    x, x_prime = draw_pairs(n, 6, boxed=True)
    x32, x32_prime = x.float(), x_prime.float()
    x, x_prime = x32.double(), x32_prime.double()
    midpoint32 = ((x32 + x32_prime) / 2).double()
    result = certify.certify(g, x, x_prime, _candidate(x, x_prime, midpoint32, midpoint32.clone()), None)
    assert (result.candidate == 0).all()
    exact = (x - x_prime).norm(dim=1) / 2
    torch.testing.assert_close(result.distance, exact, rtol=4e-16, atol=0)
    torch.testing.assert_close(closed_form.input_distance(x32, x32_prime), exact, rtol=4e-16, atol=0)


def test_a_model_that_cannot_run_in_float64_is_certified_in_float32_and_says_so():
    def float32_only() -> certify.Features:
        def f(u: torch.Tensor) -> torch.Tensor:
            if u.dtype != torch.float32:
                raise RuntimeError("expected scalar type Float but found Double")
            return u.flatten(1) * 2
        return f
    g = float32_only()
    exact, dtype, said = certify.certification_map(float32_only, None, g, torch.float32, torch.zeros(1, 3))
    assert exact is g and dtype == torch.float32
    assert said.startswith("float32 (the model cannot run in float64: expected scalar type Float")
    x, x_prime = torch.rand(4, 3), torch.rand(4, 3)
    found = jacobian.search(g, None, x, x_prime, return_points=True)
    result = certify.certify(g, x, x_prime, found, None, dtype)
    assert (result.distance >= (1 - 1e-5) * (x - x_prime).double().norm(dim=1) / 2).all()   # 2u is injective
