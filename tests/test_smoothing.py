"""The merit search's smoothing (collision.search.smooth_iters; collide/merit.py, features.Smoothing):
its softplus is the closed form, it leaves the map as it was, it follows its schedule, and every
collision it reports is one of the map itself."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from layerbound.collide import closed_form, features, jacobian, linear_step, merit, options, projection
from layerbound.collide.base import DEFAULT_VERIFY_TOL
from layerbound.collide.options import CollisionOptions, SearchOptions
from layerbound.config import ConfigError, validate
from layerbound.models import registry as models

from test_collide import _binary_images, _cvxpy_boxed

pytestmark = pytest.mark.usefixtures("one_thread")
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
# CollisionOptions().digest() at commit 4b27afa, before smooth_iters existed (a new SEARCH_REVISION
# or CERTIFY_REVISION changes it on purpose: then update it).
DIGEST_BEFORE_SMOOTHING = "12c5762cc7e69480cddb9238d7f1669397912a502c853d0fc3e58ff348c40776"


def _fcnn_map():
    torch.manual_seed(0)
    net = features.prepare_model(models.build("fcnn_smaller", (1, 10, 10), 10), torch.float64, torch.device("cpu"))
    return net, features.feature_map(net, "fc2", torch.device("cpu"))


def test_softplus_is_the_closed_form_while_active_and_the_relu_after(pairs_of):
    net, f = _fcnn_map()
    x, _ = pairs_of((1, 10, 10), 4, seed=1)
    first, second = net.pre[0][1], net.pre[1]
    smoothing = features.Smoothing(f)
    with torch.no_grad():
        before = f(x)
        beta = 7.0
        with smoothing.softplus(beta):
            smoothed = f(x)
        hidden = torch.log1p(torch.exp(beta * first(x.flatten(1)))) / beta
        expected = torch.log1p(torch.exp(beta * second(hidden))) / beta
        assert torch.allclose(smoothed, expected, rtol=1e-12, atol=0)
        assert torch.equal(f(x), before)   # the ReLUs again, bit for bit
        with pytest.raises(RuntimeError):
            with smoothing.softplus(beta):
                raise RuntimeError("inside")
        assert torch.equal(f(x), before)   # restored on an exception too
        with smoothing.softplus(beta), pytest.raises(RuntimeError, match="smoothed already"):
            with smoothing.softplus(2 * beta):
                pass
        assert torch.equal(f(x), before)
    assert len(smoothing.relus) == 2


def test_the_first_evaluations_follow_the_sharpness_schedule(pairs_of, monkeypatch):
    _, f = _fcnn_map()
    x, x_prime = pairs_of((1, 10, 10), 3, seed=2)
    A = projection.draw(0, "fcnn", "fc2", 5, 0, 50, dtype=torch.float64)
    # Per Jacobian evaluation (the midpoint's first), the sharpnesses its forward pass ran at.
    evaluations, softplus, rows = [], features.Smoothing.softplus, merit.jacobian_rows

    def recording(self, beta):
        if evaluations:
            evaluations[-1].add(beta)
        return softplus(self, beta)

    def counted(g, u, *args):
        evaluations.append(set())
        return rows(g, u, *args)
    monkeypatch.setattr(features.Smoothing, "softplus", recording)
    monkeypatch.setattr(merit, "jacobian_rows", counted)
    result = jacobian.search(f, A, x, x_prime, step="merit", max_iter=12, smooth_iters=4, dtype=torch.float64)
    assert evaluations[:4] == [{options.SMOOTH_BETA * options.SMOOTH_GROWTH ** i} for i in range(4)]
    assert len(evaluations) == int(result.iterations.max()) > 4 and not any(evaluations[4:])
    evaluations.clear()
    jacobian.search(f, A, x, x_prime, step="decay", max_iter=12, smooth_iters=4, dtype=torch.float64)
    assert evaluations == []   # decay does not smooth (nor use merit's rows)


def test_maps_without_relu_modules_are_searched_as_without_smoothing(pairs_of):
    torch.manual_seed(3)
    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 20), torch.nn.Tanh(),
                            torch.nn.Linear(20, 8)).double().eval()
    assert not features.Smoothing(f)
    x, x_prime = pairs_of((36,), 6, seed=4)
    plain = jacobian.search(f, None, x, x_prime, step="merit", dtype=torch.float64)
    smoothed = jacobian.search(f, None, x, x_prime, step="merit", smooth_iters=5, dtype=torch.float64)
    assert torch.equal(plain.distance, smoothed.distance) and torch.equal(plain.iterations, smoothed.iterations)


@pytest.mark.parametrize("shift", [0.2, 2.0])
def test_smoothed_search_reaches_the_boxed_optimum_of_a_map_linear_on_the_box(shift):
    """u -> W relu(u + shift) is u -> W u + W shift on [0, 1]^n (its kinks lie outside the box), so
    the min-max optimum is a cone program's (cvxpy). Shift 0.2: the smoothed maps, W softplus(u +
    0.2) of sharpness 5 to 80, are not affine there, and the search must leave what it found on
    them and reach the map's own optimum in the evaluations left. Shift 2: they are affine to 1e-5,
    so the search converges on them within the smoothed evaluations, and must not stop there (it
    has offered no collision yet)."""
    torch.manual_seed(2)
    W = torch.randn(4, 20, dtype=torch.float64)
    f = torch.nn.Sequential(torch.nn.Linear(20, 20), torch.nn.ReLU(), torch.nn.Linear(20, 4, bias=False))
    f = f.double().eval()
    with torch.no_grad():
        f[0].weight.copy_(torch.eye(20))
        f[0].bias.fill_(shift)
        f[2].weight.copy_(W)
    x, x_prime = _binary_images(5, 20, seed=3)
    result = jacobian.search(f, None, x, x_prime, step="merit", max_iter=15, smooth_iters=5, dtype=torch.float64,
                             box=(0.0, 1.0), return_points=True)
    for k in range(5):
        assert result.distance[k].item() == pytest.approx(_cvxpy_boxed(W, x[k], x_prime[k], "max"), rel=1e-6)
    # Converged on the map itself, after the smoothed evaluations (no pair stops during them).
    assert result.converged.all() and (result.iterations > 5).all()


def test_smoothed_search_reports_only_collisions_of_the_map_itself(pairs_of, monkeypatch):
    torch.manual_seed(4)
    net = models.build("small", (1, 12, 12), 10)
    A = projection.draw(0, "box", "conv2", 5, 0, net.tap_widths()["conv2"], dtype=torch.float64)
    f = features.feature_map(features.prepare_model(net, torch.float64, torch.device("cpu")), "conv2",
                             torch.device("cpu"))
    x, x_prime = pairs_of((1, 12, 12), 6, seed=5)
    with torch.no_grad():
        gap = (f(x_prime) @ A.T - f(x) @ A.T).norm(dim=1)
    offered, offer = [], linear_step._Best.offer

    def checked(self, pairs, u, u_prime, distance, objective, collides):
        # Every point offered as a collision is one of the map itself (the search's own half tolerance).
        with torch.no_grad():
            residual = (f(u_prime) @ A.T - f(u) @ A.T).norm(dim=1)
        assert (residual[collides] <= DEFAULT_VERIFY_TOL[torch.float64] / 2 * gap[pairs][collides]).all()
        offered.append(int(collides.sum()))
        return offer(self, pairs, u, u_prime, distance, objective, collides)
    monkeypatch.setattr(linear_step._Best, "offer", checked)
    result = jacobian.search(f, A, x, x_prime, step="merit", max_iter=15, smooth_iters=5, dtype=torch.float64,
                             box=(0.0, 1.0), return_points=True)
    assert sum(offered) > 0
    with torch.no_grad():
        residual = (f(result.x_tilde_prime) @ A.T - f(result.x_tilde) @ A.T).norm(dim=1)
    assert (residual <= DEFAULT_VERIFY_TOL[torch.float64] * result.feature_gap).all()
    # No pair fell back to its midpoint: a collision of the smoothed map offered as one would
    # fail the final check on the map itself and leave the pair there.
    assert (result.distance < 0.99 * closed_form.input_distance(x, x_prime)).all()


def test_smooth_iters_below_the_budget_and_out_of_the_digest_when_off(monkeypatch):
    with pytest.raises(ValueError, match=r"smooth_iters \(5\) must be below max_iter \(5\)"):
        jacobian.search(lambda u: u, None, torch.zeros(1, 3), torch.ones(1, 3), step="merit", max_iter=5,
                        smooth_iters=5)
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["collision"]["search"]["smooth_iters"] = 15   # max_iter null: merit's 15
    with pytest.raises(ConfigError, match=r"collision.search.smooth_iters \(15\) must be below max_iter \(15\)"):
        validate(raw)
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["collision"]["search"].update(smooth_iters=15, step="decay")   # decay ignores it
    validate(raw)
    # Off (0), the option is left out of the JSON: the shards made before it keep their digest
    # (the default options' digest before the option existed, commit 4b27afa).
    assert "smooth_iters" not in CollisionOptions().to_json()
    assert CollisionOptions().digest() == DIGEST_BEFORE_SMOOTHING
    on = CollisionOptions(method_options=SearchOptions(smooth_iters=5))
    assert '"smooth_iters":5' in on.to_json() and on.digest() != CollisionOptions().digest()
    assert CollisionOptions.from_dict(json.loads(on.to_json())) == on
    # On, the sharpness schedule is part of the digest: a new one re-runs the smoothed shards only.
    before = on.digest()
    monkeypatch.setattr(options, "SMOOTH_BETA", 2 * options.SMOOTH_BETA)
    assert on.digest() != before and CollisionOptions().digest() == DIGEST_BEFORE_SMOOTHING
