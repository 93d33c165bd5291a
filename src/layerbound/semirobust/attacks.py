"""The attacks of paper 003's study: callables (model, x, y) -> x_adv, so any attack plugs into
Algorithm 1. `PGDAttack` is Madry's PGD of models/adversary.py, `LibraryAttack` any attack of the
attack stage (attacks/evaluate.py: FGSM, BIM, PGD, C&W, AutoAttack), and `STUDY_ATTACKS` maps the
config's names to them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..attacks import evaluate as attacks
from ..attacks import info as attack_info
from ..config import paper003_iterations
from ..models import adversary

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


paper_iterations = paper003_iterations   # min(4 + e, 1.25 e), e = 255 eps: 10, 20, 36 at 8, 16, 32 / 255


@dataclass(frozen=True)
class PGDAttack:
    """Madry's PGD (adversary.pgd) as an attack callable; random starts from torch's global RNG."""

    norm: str
    eps: float
    steps: int
    step_size: float | None = None    # None: 2.5 eps / steps

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        step = 2.5 * self.eps / self.steps if self.step_size is None else self.step_size
        return adversary.pgd(model, x, y, self.norm, self.eps, self.steps, step)


@dataclass(frozen=True)
class LibraryAttack:
    """An attack of the attack module (attacks.build: torchattacks) as an attack callable.

    Its seed (AutoAttack's components, FAB) and random start come from torch's global RNG, which
    retrain_semirobust seeds, and the global generator is left as if one number had been drawn. Every
    returned image is checked as attacks.robust_flags checks it: one that is not finite, leaves the
    [0, 1] box or lies farther than eps in the attack's norm (C&W is minimum-norm, unbounded) is
    replaced by the clean image, so accuracies and training use images within the budget only.
    """

    name: str
    eps: float
    options: dict   # the attack module's option blocks this attack reads (pgd, bim, cw, autoattack)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        num_classes = getattr(model, "num_classes", None)
        if num_classes is None:
            with torch.no_grad():
                num_classes = int(model(x[:1]).shape[1])
        attack = attacks.build(self.name, model, self.eps, self.options, int(num_classes), int(x[0].numel()), seed)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):   # torchattacks reseeds the global generator
            torch.manual_seed(seed)
            x_adv = attack(x, y).detach()
        norm = attack_info.ATTACKS[self.name].norm
        valid = attacks.in_box(x_adv) & attacks.within(attacks.perturbation_norms(x_adv, x, norm), self.eps)
        return torch.where(valid.view(-1, *([1] * (x.ndim - 1))), x_adv, x)


def library_options(spec: dict) -> dict:
    """The attack module's option blocks for a resolved study attack: its steps and step size for
    the iterative ones (step_factor = step_size * steps / eps), C&W's and AutoAttack's as resolved."""
    options = dict(spec.get("options") or {})
    if spec["method"] in ("bim", "pgd_linf", "pgd_l2"):
        block = {"steps": int(spec["steps"]), "step_factor": float(spec["step_size"]) * int(spec["steps"]) / float(spec["eps"])}
        options.update(pgd=block, bim=block)
    return options


def attack_label(spec: dict) -> str:
    """How tables and figures name an attack: 'PGD-linf eps 0.0314 (10 steps of 0.00392, random start)'."""
    method, eps = spec["method"], float(spec["eps"])
    if method == "pgd":
        return (f"PGD-{spec['norm']} eps {eps:.4g} ({spec['steps']} steps of {spec['step_size']:.3g}, random start, "
                "adversary.py)")
    name = f"{attack_info.ATTACKS[method].label} ({attack_info.LIBRARY})"
    if method == "fgsm":
        return f"{name} eps {eps:.4g} (one signed-gradient step of eps)"
    if method in ("bim", "pgd_linf", "pgd_l2"):
        start = "no random start" if method == "bim" else "random start"
        return f"{name} eps {eps:.4g} ({spec['steps']} steps of {spec['step_size']:.3g}, {start})"
    what = attacks.settings_text(method, spec["options"])
    if method == "cw_l2":
        what += "; points beyond eps count as the clean image"
    return f"{name} eps {eps:.4g} ({what})"


# The attacks a study may name (config `semirobust.train_attack.method`, `eval_attack.method`): each
# maps the resolved spec (config.study_attack: method, norm, eps, steps, step_size, options) to an
# attack callable.
STUDY_ATTACKS: dict[str, Callable[[dict], Attack]] = {
    "pgd": lambda spec: PGDAttack(spec["norm"], float(spec["eps"]), int(spec["steps"]), float(spec["step_size"])),
    **{name: (lambda spec: LibraryAttack(spec["method"], float(spec["eps"]), library_options(spec)))
       for name in ("fgsm", "bim", "pgd_linf", "pgd_l2", "cw_l2", "autoattack_linf", "autoattack_l2")},
}


def make_attack(spec: dict) -> Attack:
    if spec["method"] not in STUDY_ATTACKS:
        raise ValueError(f"unknown attack {spec['method']!r}; known: {', '.join(STUDY_ATTACKS)}")
    return STUDY_ATTACKS[spec["method"]](spec)


def adversarial_accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack,
                         batch_size: int = 250) -> tuple[float, torch.Tensor]:
    """Accuracy of `net` (eval mode) on attack(net, x, y), and those adversarial inputs."""
    net.eval()
    adv, correct = [], 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        x_adv = attack(net, xb, yb).detach()
        with torch.no_grad():
            correct += (net(x_adv).argmax(1) == yb).sum().item()
        adv.append(x_adv)
    return correct / max(len(x), 1), torch.cat(adv) if adv else x[:0]
