"""Subnetwork robustness (paper 003): split a network into f_a and f_b, freeze f_a, retrain f_b
adversarially (Algorithm 1, "Learning hyperparameter rho"), and measure the dependence rho between
consecutive layers.

A layerbound network (`models.TappedNet`) is a list of stages, each one weight layer (a conv or a
linear map, with batch norm where the architecture has it) and its activation; stage j outputs
tap j. `split_last(net, k)` makes f_b the last k weight layers (paper 003's "f_b layers", the
reference code's convention) and f_a the stages before; `split_after(net, tap)` cuts after a named
tap. h_j is the output of stage j (post-activation; raw logits for the last), h_a that of f_a.
A loaded network (`loaded.LoadedNet`: torchvision, python) has no stages: its weight layers are its
conv and linear modules in execution order, `split_last` cuts before any of them (paper 003's
reference code's rule, so a ResNet may be cut inside a residual block), f_a owns every module first
run before the cut, and h_j is the output of weight layer j (`module_outputs`, forward hooks).

Freezing f_a (`freeze_f_a`, `train_mode`): its parameters get requires_grad=False and the
optimizer sees only f_b's parameters (so neither gradients nor weight decay touch f_a), and during
training f_a stays in eval mode, so its BatchNorm layers normalize with their stored running
statistics and do not update them. f_a therefore computes the same function in training as at
test time, and its weights and buffers stay bit-identical (`algorithm1` checks this after every
trial). The reference code instead trains f_a's BatchNorm in train mode and restores f_a's weights
and buffers from the robust checkpoint after every optimizer step: its f_a normalizes training
batches with batch statistics.

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
returned (`rho`, `rho_best`). The attacks are callables (model, x, y) -> x_adv, so any attack can
be plugged in: `PGDAttack` is Madry's PGD of adversary.py, `LibraryAttack` any attack of the attack
module (attacks.py: FGSM, BIM, PGD, C&W, AutoAttack), and `ATTACKS` maps the config's names to them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..models import adversary, loaded
from ..attacks import info as attack_info, evaluate as attacks
from ..core import seeds
from ..config import defaults, paper003_iterations
from ..core.errors import CheckpointMismatch
from .mutual_info import PAPER003_ESTIMATOR, EdgeOptions, class_conditional_mi

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
WEIGHT_LAYERS = loaded.WEIGHT_LAYERS   # conv and linear: the layers f_b's size counts


# --- the split -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """h_0..h_{n-1} = `taps`, f_a computes h_0..h_{a-1}, f_b the rest.

    `f_a_modules` / `f_b_modules`: the names (in the network) of the modules each part owns, so
    freezing, copying f_b and the checks work on state_dict keys by module. A registry network's
    parts are its stages; a loaded network's are the modules that run before / from f_b's first
    weight layer. `hooked`: h_j are outputs of the network's modules of those names (`net.<tap>`,
    loaded networks), not registry taps.
    """

    taps: tuple[str, ...]
    a: int
    f_a_modules: tuple[str, ...] = ()
    f_b_modules: tuple[str, ...] = ()
    hooked: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.a < len(self.taps):
            raise ValueError(f"f_a and f_b need at least one layer each: cannot split {len(self.taps)} "
                             f"layers after {self.a}")

    @property
    def f_a_taps(self) -> tuple[str, ...]:
        return self.taps[:self.a]

    @property
    def f_b_taps(self) -> tuple[str, ...]:
        return self.taps[self.a:]

    def layer_pairs(self) -> list[tuple[str, str]]:
        """(h_{j-1}, h_j) for j = a+1..n: from f_a's output through f_b's layers to the logits."""
        return [(self.taps[j - 1], self.taps[j]) for j in range(self.a, len(self.taps))]


def _weight_layers(stage: nn.Module) -> int:
    return sum(isinstance(m, WEIGHT_LAYERS) for m in stage.modules())


def _is_loaded(net: nn.Module) -> bool:
    return not hasattr(net, "pre")


def _stage_split(net: nn.Module, a: int) -> Split:
    """A registry network cut before stage a: each part owns its stages and everything in them."""
    def owned(stages: range) -> tuple[str, ...]:
        return tuple(name for name, _ in net.named_modules()
                     if name.count(".") >= 1 and name.split(".")[0] in ("pre", "post")
                     and int(name.split(".")[1]) in stages)
    return Split(tuple(net.taps), a, owned(range(a)), owned(range(a, len(net.taps))))


def loaded_weight_layers(net: nn.Module) -> list[str]:
    """A loaded network's conv and linear modules in execution order (names inside `net.net`)."""
    return loaded.weight_layers(net.net, net.input_shape, next(net.parameters()).device)


def _loaded_split(net: nn.Module, k: int) -> Split:
    """A loaded network cut before its k-th weight layer from the output (the reference code's
    rule: any conv or linear module, in execution order). f_a owns every module first run before
    that layer (for a ResNet cut inside a block: the block's earlier convolutions and their
    BatchNorm), f_b every module first run from it on; modules that never run belong to neither."""
    device = next(net.parameters()).device
    order = loaded.execution_order(net.net, net.input_shape, device)
    weights = loaded.weight_layers(net.net, net.input_shape, device, order)
    if not 1 <= k < len(weights):
        raise ValueError(f"{net.arch} has {len(weights)} weight layers (conv and linear): f_b cannot be its last {k} "
                         f"(f_a keeps one); choose k in 1..{len(weights) - 1}")
    cut = order.index(weights[len(weights) - k])
    return Split(tuple(weights), len(weights) - k, tuple(f"net.{m}" for m in order[:cut]),
                 tuple(f"net.{m}" for m in order[cut:]), hooked=True)


def split_last(net: nn.Module, k: int) -> Split:
    """f_b = the last k weight layers (conv or linear; batch norm does not count)."""
    if _is_loaded(net):
        return _loaded_split(net, k)
    counts = [_weight_layers(stage) for stage in net.pre]
    ends = {sum(counts[a:]): a for a in range(1, len(counts))}   # k -> a: stages a.. hold k weight layers
    if k not in ends:
        raise ValueError(f"{net.arch} has {sum(counts)} weight layers in stages of {counts}: f_b cannot be "
                         f"its last {k} (f_a and f_b need one stage each); choose k in {sorted(ends)}")
    return _stage_split(net, ends[k])


def split_after(net: nn.Module, tap: str) -> Split:
    """f_a = the network up to and including `tap`, f_b = the rest (for a loaded network `tap` is
    one of its weight layers)."""
    taps = tuple(loaded_weight_layers(net)) if _is_loaded(net) else tuple(net.taps)
    if tap not in taps[:-1]:
        raise ValueError(f"cannot split {net.arch} after {tap!r}; choose one of {', '.join(taps[:-1])}")
    if _is_loaded(net):
        return _loaded_split(net, len(taps) - 1 - taps.index(tap))
    return _stage_split(net, taps.index(tap) + 1)


def _modules(net: nn.Module, names) -> list[nn.Module]:
    return [net.get_submodule(name) for name in names]


def f_a_modules(net: nn.Module, split: Split) -> list[nn.Module]:
    return _modules(net, split.f_a_modules)


def f_b_modules(net: nn.Module, split: Split) -> list[nn.Module]:
    return _modules(net, split.f_b_modules)


def f_b_parameters(net: nn.Module, split: Split) -> list[nn.Parameter]:
    return [p for m in f_b_modules(net, split) for p in m.parameters(recurse=False)]


def _owned(key: str, modules: set[str]) -> bool:
    """Whether state_dict entry `key` belongs to one of `modules` (its module is the key's prefix)."""
    return key.rpartition(".")[0] in modules


def f_a_state(net: nn.Module, split: Split) -> dict[str, torch.Tensor]:
    """A copy of f_a's weights and buffers (BatchNorm running statistics and batch counts)."""
    owned = set(split.f_a_modules)
    return {key: value.detach().clone() for key, value in net.state_dict().items() if _owned(key, owned)}


def f_a_changes(net: nn.Module, split: Split, reference: dict[str, torch.Tensor]) -> list[str]:
    """The entries of f_a's state that differ from `reference` (bit for bit); empty if none."""
    state = f_a_state(net, split)
    return sorted(k for k in set(state) | set(reference)
                  if k not in state or k not in reference or not torch.equal(state[k], reference[k]))


def _network_of(net: nn.Module) -> tuple:
    """What must agree for f_b to move between two networks: the architecture and, for a loaded
    one, its source spec except the weights file."""
    spec = {k: v for k, v in getattr(net, "spec", {}).items() if k != "weights"}
    return net.arch, json.dumps(spec, sort_keys=True)


def load_f_b(net: nn.Module, source: nn.Module, split: Split) -> None:
    """Copy f_b's weights and buffers from `source` (the same architecture) into `net`."""
    if _network_of(source) != _network_of(net) or (not split.hooked and tuple(source.taps) != split.taps):
        raise CheckpointMismatch(f"cannot take f_b from a {source.arch} network into a {net.arch} one: "
                                 f"{_network_of(source)[1]} vs {_network_of(net)[1]}, taps "
                                 f"{list(getattr(source, 'taps', []))} vs {list(split.taps)}")
    own = net.state_dict()
    owned = set(split.f_b_modules)
    for key, value in source.state_dict().items():
        if _owned(key, owned):
            if own[key].shape != value.shape:
                raise CheckpointMismatch(f"f_b entry {key} has shape {tuple(value.shape)} in the regular "
                                         f"network, {tuple(own[key].shape)} in the robust one")
            own[key].copy_(value)


def freeze_f_a(net: nn.Module, split: Split) -> None:
    """No gradients for f_a's parameters (the optimizer is given f_b's alone)."""
    for module in f_a_modules(net, split):
        for p in module.parameters(recurse=False):
            p.requires_grad_(False)


def train_mode(net: nn.Module, split: Split) -> None:
    """f_b in training mode, f_a in eval mode (its BatchNorm uses and keeps its running statistics,
    its dropout is off). Each f_a module is switched alone: a container that also holds f_b modules
    (a ResNet block cut inside) is not in f_a."""
    net.train()
    for module in f_a_modules(net, split):
        module.training = False


# --- attacks -------------------------------------------------------------------------------------

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
    algorithm1 seeds, and the global generator is left as if one number had been drawn. Every
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
ATTACKS: dict[str, Callable[[dict], Attack]] = {
    "pgd": lambda spec: PGDAttack(spec["norm"], float(spec["eps"]), int(spec["steps"]), float(spec["step_size"])),
    **{name: (lambda spec: LibraryAttack(spec["method"], float(spec["eps"]), library_options(spec)))
       for name in ("fgsm", "bim", "pgd_linf", "pgd_l2", "cw_l2", "autoattack_linf", "autoattack_l2")},
}


def make_attack(spec: dict) -> Attack:
    if spec["method"] not in ATTACKS:
        raise ValueError(f"unknown attack {spec['method']!r}; known: {', '.join(ATTACKS)}")
    return ATTACKS[spec["method"]](spec)


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


# --- layer outputs and rho -----------------------------------------------------------------------

@torch.no_grad()
def layer_outputs(net: nn.Module, x: torch.Tensor, taps, batch_size: int = 500) -> dict[str, np.ndarray]:
    """h_j = net.features(x, tap) for every tap in `taps`, flattened, from one pass per batch."""
    wanted = set(taps)
    unknown = wanted - set(net.taps)
    if unknown:
        raise KeyError(f"{net.arch} has no tap {sorted(unknown)[0]!r}; taps: {', '.join(net.taps)}")
    last = max(net.taps.index(t) for t in wanted)
    net.eval()
    pieces: dict[str, list[np.ndarray]] = {t: [] for t in wanted}
    for i in range(0, len(x), batch_size):
        h = x[i:i + batch_size]
        for j in range(last + 1):
            h = net.post[j](net.pre[j](h))
            if net.taps[j] in wanted:
                pieces[net.taps[j]].append(h.flatten(1).double().cpu().numpy())
    return {t: np.concatenate(p) for t, p in pieces.items()}


@torch.no_grad()
def module_outputs(net: nn.Module, x: torch.Tensor, names, batch_size: int = 500) -> dict[str, np.ndarray]:
    """The outputs of a loaded network's modules `names` (inside `net.net`; for paper 003 its conv
    and linear layers, as the reference code hooks them), flattened, from one forward pass per batch.
    A module that runs more than once per pass has no single output and fails."""
    wanted = list(dict.fromkeys(names))
    pieces: dict[str, list[np.ndarray]] = {t: [] for t in wanted}
    batch: dict[str, list[torch.Tensor]] = {}

    def keep(name):
        return lambda module, args, output: batch.setdefault(name, []).append(output)
    handles = [net.net.get_submodule(name).register_forward_hook(keep(name)) for name in wanted]
    net.eval()
    try:
        for i in range(0, len(x), batch_size):
            batch.clear()
            net(x[i:i + batch_size])
            for name in wanted:
                if len(batch.get(name, [])) != 1:
                    raise ValueError(f"{net.arch}: module {name} ran {len(batch.get(name, []))} times in one forward pass")
                pieces[name].append(batch[name][0].flatten(1).double().cpu().numpy())
    finally:
        for handle in handles:
            handle.remove()
    return {t: np.concatenate(p) for t, p in pieces.items()}


def layer_mi(net: nn.Module, split: Split, x: torch.Tensor, y: torch.Tensor, estimator: str = PAPER003_ESTIMATOR,
             seed: int = 0, edge_options: EdgeOptions | None = None) -> dict[str, float]:
    """I_j = sum_y pi(y) I(h_{j-1}; h_j | y) (paper 003, eq. 5) in bits, for j = a+1..n.

    Keyed by h_j's tap: the entry for the logits is paper 003's rho_n, the one for f_b's first layer
    rho_{a+1}. `x` are the (adversarially perturbed) inputs, `y` their true labels.
    """
    pairs = split.layer_pairs()
    outputs = (module_outputs if split.hooked else layer_outputs)(net, x, [t for pair in pairs for t in pair])
    labels = y.cpu().numpy()
    return {nxt: class_conditional_mi(outputs[prev], outputs[nxt], labels, estimator,
                                      seed=seeds.derive(f"{seed}/mi/{nxt}"), edge_options=edge_options).value
            for prev, nxt in pairs}


# --- Algorithm 1 ---------------------------------------------------------------------------------

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
class Algorithm1Result:
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


def algorithm1(robust: nn.Module, regular: nn.Module, split: Split, train: tuple[torch.Tensor, torch.Tensor],
               test: tuple[torch.Tensor, torch.Tensor], train_attack: Attack, eval_attack: Attack,
               options: RetrainOptions = RetrainOptions(), seed: int = 0, mi: MI | None = layer_mi,
               progress: bool = True) -> Algorithm1Result:
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
    return Algorithm1Result(split, options.k, acc_star, acc_sr, trials, best_state)
