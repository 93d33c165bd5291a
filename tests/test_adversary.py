import pytest
import torch
import torch.nn.functional as F

from layerbound.models import adversary, registry as models


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = models.build("fcnn_smaller", (1, 28, 28), 10).eval()
    x = torch.rand(16, 1, 28, 28)
    y = torch.randint(0, 10, (16,))
    return net, x, y


@pytest.mark.parametrize("norm,eps", [("l2", 1.5), ("linf", 0.1)])
def test_projection_stays_in_ball_and_pixel_range(norm, eps):
    torch.manual_seed(1)
    x = torch.rand(8, 1, 28, 28)
    delta = adversary.project(torch.randn_like(x) * 3, x, norm, eps)
    size = delta.flatten(1).norm(dim=1) if norm == "l2" else delta.flatten(1).abs().amax(dim=1)
    assert (size <= eps * (1 + 1e-6)).all()
    assert ((x + delta) >= 0).all() and ((x + delta) <= 1).all()


def test_random_start_fills_the_l2_ball():
    torch.manual_seed(2)
    x = torch.full((2000, 1, 4, 4), 0.5)
    delta = adversary.random_start(x, "l2", 0.3)
    radius = delta.flatten(1).norm(dim=1)
    assert (radius <= 0.3 + 1e-6).all()
    # Uniform in a 16-dimensional ball: P(r <= 0.3 t) = t^16, so the median radius is 0.3 * 0.5^(1/16).
    assert abs(radius.median().item() - 0.3 * 0.5 ** (1 / 16)) < 0.005


@pytest.mark.parametrize("norm,eps", [("l2", 1.0), ("linf", 0.05)])
def test_pgd_increases_the_loss_within_budget(setup, norm, eps):
    net, x, y = setup
    x_adv = adversary.pgd(net, x, y, norm, eps, steps=10, step_size=2.5 * eps / 10)
    delta = (x_adv - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()
    with torch.no_grad():
        assert F.cross_entropy(net(x_adv), y) > F.cross_entropy(net(x), y) + 0.01


def test_trades_attack_increases_kl(setup):
    net, x, _ = setup
    x_adv = adversary.trades_kl(net, x, "l2", 1.0, steps=10, step_size=0.25)
    with torch.no_grad():
        p = F.softmax(net(x), 1)
        kl_adv = F.kl_div(F.log_softmax(net(x_adv), 1), p, reduction="sum")
    assert kl_adv > 1e-3
    assert ((x_adv - x).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all()


def test_zero_budget_attack_leaves_accuracy_unchanged(setup):
    net, x, y = setup
    assert adversary.robust_accuracy(net, x, y, "l2", 0.0, steps=3) == adversary.accuracy(net, x, y)
