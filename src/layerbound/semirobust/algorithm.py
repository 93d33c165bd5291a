"""Subnetwork robustness (paper 003): split a network into f_a and f_b, freeze f_a, retrain f_b
adversarially (Algorithm 1, "Learning hyperparameter rho"), and measure the dependence rho between
consecutive layers.

Algorithm 1 (paper 003, Section 3.2), with the adversarial test accuracy Acc under an evaluation
attack:
    Acc*   = Acc of the adversarially trained network (f_a*, f_b*)
    Acc_sr = Acc of (f_a*, f_b), f_b from the regularly trained network
    for t = 1..T: load f_b from the regular network, freeze f_a*; for e = 1..E: one epoch of
        adversarial training of f_b, Acc_t^e = Acc of (f_a*, f~_b); stop at the first e with
        Acc* - Acc_t^e <= k. Then I_{j,t} = sum_y pi(y) I(h_{j-1}; h_j | y) (eq. 5) for
        j = a+1..n on the adversarially perturbed test inputs.
    Acc~ = the largest Acc_t (a trial's last epoch), rho_j = min_t I_{j,t}.
The paper's text reports the I_{j,t} of the trial reaching Acc~ instead of the minimum; both are
returned (`rho`, `rho_best`). The attacks: semirobust/attacks.py; the split and freezing f_a: semirobust/split.py;
the I_{j,t}: semirobust/layer_mi.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.schema import defaults
from ..core import seeds
from .attacks import Attack, adversarial_accuracy
from .layer_mi import layer_mi
from .split import Split, f_a_changes, f_a_state, f_b_parameters, freeze_f_a, load_f_b, train_mode


_RETRAIN = defaults("semirobust")


@dataclass(frozen=True)
class RetrainOptions:
    """Training of f_b; defaults from the schema's `semirobust` block (the reference code's settings:
    10 trials of up to 10 epochs, SGD lr 0.01, momentum 0.9, weight decay 5e-4)."""

    trials: int = _RETRAIN["trials"]              # T
    epochs: int = _RETRAIN["epochs"]              # E
    k: float = _RETRAIN["tolerance"]              # stop when Acc* - Acc <= k (accuracies as fractions)
    lr: float = _RETRAIN["lr"]
    momentum: float = _RETRAIN["momentum"]
    weight_decay: float = _RETRAIN["weight_decay"]
    batch_size: int = _RETRAIN["batch_size"]

    def __post_init__(self) -> None:
        if self.trials < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("Algorithm 1 needs trials, epochs and batch_size >= 1")


@dataclass
class Trial:
    accuracies: list[float]                 # Acc_t^e for the epochs run
    reached: bool                           # Acc* - Acc_t^e <= k at the last epoch run
    mi: dict[str, float] = field(default_factory=dict)   # I_{j,t} by h_j's tap

    @property
    def accuracy(self) -> float:
        return self.accuracies[-1]


@dataclass
class RetrainResult:
    split: Split
    k: float
    acc_star: float                          # Acc*
    acc_sr: float                            # Acc_sr
    trials: list[Trial]
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)   # (f_a*, f~_b) of the best trial

    @property
    def best(self) -> int:
        """The trial with the largest accuracy (the first of equals)."""
        return max(range(len(self.trials)), key=lambda t: (self.trials[t].accuracy, -t))

    @property
    def best_accuracy(self) -> float:       # Acc~
        return self.trials[self.best].accuracy

    @property
    def difference(self) -> float:          # Table 1's "Diff.": Acc~ - Acc*
        return self.best_accuracy - self.acc_star

    @property
    def rho(self) -> dict[str, float]:
        """rho_j = min over trials of I_{j,t} (Algorithm 1's last step)."""
        if not self.trials[0].mi:
            return {}
        return {tap: min(t.mi[tap] for t in self.trials) for tap in self.trials[0].mi}

    @property
    def rho_best(self) -> dict[str, float]:
        """I_{j,t} of the best trial (what paper 003's text says it reports)."""
        return dict(self.trials[self.best].mi)

    def to_dict(self) -> dict:
        return {"f_a": list(self.split.f_a_taps), "f_b": list(self.split.f_b_taps), "k": self.k,
                "acc_star": self.acc_star, "acc_sr": self.acc_sr, "best_trial": self.best,
                "best_accuracy": self.best_accuracy, "difference": self.difference,
                "rho": self.rho, "rho_best": self.rho_best,
                "trials": [{"accuracies": t.accuracies, "reached": t.reached, "mi": t.mi} for t in self.trials]}


def train_f_b_epoch(net: nn.Module, split: Split, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                    y: torch.Tensor, attack: Attack, batch_size: int, shuffle: torch.Generator) -> None:
    """One epoch of adversarial training of f_b: attack in eval mode, step with f_a frozen."""
    order = torch.randperm(len(x), generator=shuffle).to(x.device)
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        net.eval()   # the inner maximization runs in eval mode, as in train.py
        x_adv = attack(net, x[idx], y[idx]).detach()
        train_mode(net, split)
        loss = F.cross_entropy(net(x_adv), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    net.eval()


MI = Callable[[nn.Module, Split, torch.Tensor, torch.Tensor], dict[str, float]]


def retrain_semirobust(robust: nn.Module, regular: nn.Module, split: Split, train: tuple[torch.Tensor, torch.Tensor],
                       test: tuple[torch.Tensor, torch.Tensor], train_attack: Attack, eval_attack: Attack,
                       options: RetrainOptions = RetrainOptions(), seed: int = 0, mi: MI | None = layer_mi,
                       progress: bool = True) -> RetrainResult:
    """Paper 003's Algorithm 1 on trained networks (f_a*, f_b*) = `robust` and (f_a, f_b) = `regular`.

    Neither network is changed; the result holds the best trial's retrained network as a state dict
    (on the CPU). Every evaluation draws the same attack randomness (torch's global
    RNG is seeded from `seed` before it) and trial t's training from its own seed, so results are
    reproducible and a trial does not depend on the others. `mi=None` skips the I_{j,t}.
    """
    x_train, y_train = train
    x_test, y_test = test
    eval_seed = seeds.derive(f"{seed}/semirobust/eval")

    def evaluate(net: nn.Module) -> tuple[float, torch.Tensor]:
        torch.manual_seed(eval_seed)
        return adversarial_accuracy(net, x_test, y_test, eval_attack)

    acc_star, _ = evaluate(robust)
    start = copy.deepcopy(robust)
    load_f_b(start, regular, split)
    acc_sr, _ = evaluate(start)
    frozen = f_a_state(robust, split)

    trials = []
    bar = tqdm(total=options.trials * options.epochs, desc=f"Algorithm 1 (f_b = {', '.join(split.f_b_taps)})",
               unit="epoch", disable=not progress, mininterval=2.0, dynamic_ncols=True)
    for t in range(options.trials):
        net = copy.deepcopy(start)
        freeze_f_a(net, split)
        optimizer = torch.optim.SGD(f_b_parameters(net, split), lr=options.lr, momentum=options.momentum,
                                    weight_decay=options.weight_decay)
        trial_seed = seeds.derive(f"{seed}/semirobust/trial{t}")
        shuffle = torch.Generator().manual_seed(trial_seed)
        accuracies, reached, x_adv = [], False, None
        for e in range(options.epochs):
            torch.manual_seed(seeds.derive(f"{trial_seed}/epoch{e}"))
            train_f_b_epoch(net, split, optimizer, x_train, y_train, train_attack, options.batch_size, shuffle)
            accuracy, x_adv = evaluate(net)
            accuracies.append(accuracy)
            bar.update(1)
            if acc_star - accuracy <= options.k:
                reached = True
                break
        bar.update(options.epochs - len(accuracies))
        changed = f_a_changes(net, split, frozen)
        if changed:
            raise RuntimeError(f"f_a changed during retraining of trial {t}: {', '.join(changed)}")
        trial = Trial(accuracies, reached)
        if mi is not None:
            trial.mi = mi(net, split, x_adv, y_test)
        trials.append(trial)
        if len(trials) == 1 or trial.accuracy > max(t.accuracy for t in trials[:-1]):
            best_state = {key: value.detach().cpu().clone() for key, value in net.state_dict().items()}
        bar.set_postfix(acc=f"{accuracy:.3f}", target=f"{acc_star - options.k:.3f}")
    bar.close()
    return RetrainResult(split, options.k, acc_star, acc_sr, trials, best_state)
