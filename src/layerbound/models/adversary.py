"""The inner maximizations used inside training (Madry PGD and TRADES), written directly.

Inputs are pixels in [0, 1]; budgets are in pixel space. Evaluation attacks for the papers'
comparisons (FAB, C&W, AutoAttack) come from an attack library in a separate module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("l2", "linf")


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


def project(delta: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Project delta onto the eps-ball of `norm`, then so that x + delta stays in [0, 1]."""
    if norm == "l2":
        delta = delta * torch.clamp(eps / (_per_sample_norm(delta) + 1e-12), max=1.0)
    elif norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
    return (x + delta).clamp(0.0, 1.0) - x


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit `norm` (normalized gradient for l2, sign for linf)."""
    if norm == "l2":
        return grad / (_per_sample_norm(grad) + 1e-12)
    return grad.sign()


def random_start(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random point of the eps-ball (l2: random direction, radius eps * U^(1/n))."""
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * eps
    else:
        direction = torch.randn(x.shape, generator=generator, device=x.device)
        direction = direction / _per_sample_norm(direction)
        n = x[0].numel()
        radius = eps * torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), generator=generator, device=x.device) ** (1.0 / n)
        delta = direction * radius
    return project(delta, x, norm, eps)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, steps: int,
        step_size: float, rand_init: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Madry et al. PGD maximizing the cross-entropy; returns x_adv (detached).

    The caller chooses the model's mode (training uses eval mode for the attack, as TRADES does).
    """
    delta = random_start(x, norm, eps, generator) if rand_init else torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = project(delta.detach() + step_size * ascent_direction(grad, norm), x, norm, eps)
    return (x + delta).detach()


def trades_kl(model: nn.Module, x: torch.Tensor, norm: str, eps: float, steps: int, step_size: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """TRADES inner maximization of KL(f(x) || f(x_adv)) from x + 0.001 N(0, 1) (Zhang et al. 2019)."""
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    delta = project(0.001 * torch.randn(x.shape, generator=generator, device=x.device), x, norm, eps)
    for _ in range(steps):
        delta.requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x + delta), dim=1), p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(kl, delta)
        delta = project(delta.detach() + step_size * ascent_direction(grad, norm), x, norm, eps)
    return (x + delta).detach()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / max(len(x), 1)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, steps: int,
                    step_size: float | None = None, batch_size: int = 250, seed: int = 0) -> float:
    """Accuracy under PGD (random start) at budget eps; step size 2.5 eps / steps by default."""
    step_size = 2.5 * eps / steps if step_size is None else step_size
    generator = torch.Generator(device=x.device).manual_seed(seed)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        x_adv = pgd(model, xb, yb, norm, eps, steps, step_size, generator=generator)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == yb).sum().item()
    return correct / max(len(x), 1)
