"""Evaluation attacks from one maintained library (torchattacks 3.5.1) and what is computed from them.

Training's inner maximizations stay hand-written in `adversary.py`; everything here evaluates a
trained model. Inputs are pixels in [0, 1] (the models take them directly, with no normalization),
budgets are in pixel space, and every adversarial image stays in the [0, 1] box.

Two measurements:

- `robust_accuracy_table`: per attack and budget eps, the fraction of test examples that the model
  classifies correctly and that the attack did not break. An output counts as breaking an example
  only after it is checked here: finite, inside the box, within eps in the attack's norm (relative
  slack `NORM_RTOL` for float32 rounding) and misclassified. Outputs failing the first three checks
  are counted in the column `invalid` and never break anything. A point found at a smaller eps
  also breaks the example at every larger eps, so robust accuracy never increases with eps. The
  rows of "any" attack per norm count an example robust only if no attack of that norm broke it
  at that eps or a smaller one.
- `fab_pairs`: the points of paper 001's Section 6.1 comparison: FAB-l2 (minimum norm, on the
  full model) on the pair set's 2S training examples, with the model's two-class cross-entropy
  at the clean and at the FAB point; `bounds/fab_curve.py` turns them into the loss curve.

Quirks of torchattacks 3.5.1 this module works around (SPEC.md section 11):
- FAB returns the clean input when no adversarial point lies within its `eps`: the minimum-norm
  runs pass eps = the diameter of the box, sqrt(n), so every point FAB finds is returned.
- its AutoAttack class runs 10 iterations per component (the original: 100) and draws its seeds
  from the clock; the AutoAttack here is the same standard ensemble (APGD-CE, APGD-T, FAB-T,
  Square, each on the examples the previous ones left) composed from the library's components
  with the iterations, target classes and Square queries set explicitly and seeds derived.
- its FAB docstring example passes `loss_fn` and `targeted`, which the constructor rejects; only
  the constructor's own arguments are passed here.
- its C&W starts from atanh(2x - 1), which is infinite at pixels exactly 0 or 1, so those pixels
  never move (most MNIST pixels are 0), and it uses one constant c without a binary search: it
  is a weak attack on MNIST and appears for completeness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core import seeds
from .info import ANY, ATTACKS, INSTALL_HINT, LIBRARY, LIBRARY_VERSION
from ..core.errors import LayerboundError

__all__ = ["AttacksUnavailable", "library", "build", "perturbation_norms", "robust_flags",
           "robust_accuracy_table", "two_class_cross_entropy", "fab_minimal_points", "fab_pairs",
           "TABLE_COLUMNS", "FAB_PAIR_COLUMNS"]

# A perturbation counts as within eps up to this relative slack (plus NORM_ATOL): float32 rounding
# of x + delta clamped to the box.
NORM_RTOL = 1e-4
NORM_ATOL = 1e-5
BOX = (0.0, 1.0)

TABLE_COLUMNS = ["dataset", "model", "attack", "label", "norm", "eps", "examples", "clean_accuracy",
                 "robust_accuracy", "robust_examples", "invalid", "settings", "library"]
FAB_PAIR_COLUMNS = ["example", "label", "dataset_index", "found", "norm", "ce_clean", "ce_fab",
                    "ce_all_clean", "ce_all_fab", "prediction_clean", "prediction_fab"]


class AttacksUnavailable(LayerboundError, RuntimeError):
    """torchattacks is not installed."""


def library():
    """The torchattacks module; a one-line error saying how to install it when it is missing."""
    try:
        import torchattacks
    except ImportError:
        raise AttacksUnavailable(INSTALL_HINT) from None
    return torchattacks


def library_label() -> str:
    version = getattr(library(), "__version__", "?")
    return f"{LIBRARY} {version}" + ("" if version == LIBRARY_VERSION else f" (tested with {LIBRARY_VERSION})")


# --- building one attack ---------------------------------------------------------------------------

def _norm_name(norm: str) -> str:
    return {"l2": "L2", "linf": "Linf"}[norm]


def box_diameter(input_numel: int) -> float:
    """The l2 diameter of [0, 1]^n: a FAB budget that no point of the box exceeds."""
    return math.sqrt(input_numel) * (BOX[1] - BOX[0])


def settings_text(name: str, options: Mapping[str, Any]) -> str:
    """The settings an attack runs with, as the table's `settings` column says them."""
    o = options
    if name == "fgsm":
        return "one signed-gradient step of eps"
    if name in ("bim", "pgd_linf", "pgd_l2"):
        family = o["bim"] if name == "bim" else o["pgd"]
        start = "no random start" if name == "bim" else "random start"
        return f"{family['steps']} steps of {family['step_factor']:g} eps / steps, {start}"
    if name == "cw_l2":
        c = o["cw"]
        return f"{c['steps']} Adam steps (lr {c['lr']:g}), c = {c['c']:g}, kappa = {c['kappa']:g}, no binary search"
    if name == "fab_l2":
        f = o["fab"]
        return (f"minimum norm: {f['steps']} steps, {f['restarts']} restart(s), alpha_max {f['alpha_max']:g}, "
                f"eta {f['eta']:g}, beta {f['beta']:g}")
    if name.startswith("autoattack"):
        a = o["autoattack"]
        return (f"APGD-CE, APGD-T, FAB-T ({a['steps']} iterations each, {a['targets']} target classes), "
                f"Square ({a['square_queries']} queries)")
    raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")


def build(name: str, model: torch.nn.Module, eps: float, options: Mapping[str, Any], num_classes: int,
          input_numel: int, seed: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One torchattacks attack as a function (x, y) -> x_adv; minimum-norm attacks ignore eps.

    `options` holds the config's blocks `pgd`, `bim`, `cw`, `fab`, `autoattack`.
    """
    ta = library()
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    eps = float(eps)
    if name == "fgsm":
        return ta.FGSM(model, eps=eps)
    if name == "bim":
        b = options["bim"]
        return ta.BIM(model, eps=eps, alpha=b["step_factor"] * eps / b["steps"], steps=b["steps"])
    if name == "pgd_linf":
        p = options["pgd"]
        return ta.PGD(model, eps=eps, alpha=p["step_factor"] * eps / p["steps"], steps=p["steps"], random_start=True)
    if name == "pgd_l2":
        p = options["pgd"]
        return ta.PGDL2(model, eps=eps, alpha=p["step_factor"] * eps / p["steps"], steps=p["steps"], random_start=True)
    if name == "cw_l2":
        c = options["cw"]
        return ta.CW(model, c=c["c"], kappa=c["kappa"], steps=c["steps"], lr=c["lr"])
    if name == "fab_l2":
        f = options["fab"]
        return ta.FAB(model, norm="L2", eps=box_diameter(input_numel), steps=f["steps"], n_restarts=f["restarts"],
                      alpha_max=f["alpha_max"], eta=f["eta"], beta=f["beta"], seed=seed, n_classes=num_classes)
    a = options["autoattack"]
    if num_classes < 4:
        # APGD-T's targeted DLR loss reads the 3rd and 4th largest logits (as the original's does).
        raise ValueError(f"AutoAttack needs at least 4 classes (APGD-T's DLR loss), the model has {num_classes}")
    norm = _norm_name(ATTACKS[name].norm)
    # The targeted components attack the `targets` most likely other classes (n_classes - 1 of them).
    targeted_classes = min(int(a["targets"]), num_classes - 1) + 1
    components = [
        ta.APGD(model, norm=norm, eps=eps, steps=a["steps"], n_restarts=1, seed=seed, loss="ce"),
        ta.APGDT(model, norm=norm, eps=eps, steps=a["steps"], n_restarts=1, seed=seed + 1, n_classes=targeted_classes),
        ta.FAB(model, norm=norm, eps=eps, steps=a["steps"], n_restarts=1, seed=seed + 2, multi_targeted=True,
               n_classes=targeted_classes),
        ta.Square(model, norm=norm, eps=eps, n_queries=a["square_queries"], n_restarts=1, seed=seed + 3),
    ]
    return ta.MultiAttack(components)


# --- checking what an attack returned ----------------------------------------------------------------

def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example ||x_adv - x|| in `norm` (l2 or linf), in float64."""
    delta = (x_adv.double() - x.double()).flatten(1)
    return delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)


def within(norms: torch.Tensor, eps: float) -> torch.Tensor:
    return norms <= eps * (1 + NORM_RTOL) + NORM_ATOL


def in_box(x_adv: torch.Tensor) -> torch.Tensor:
    flat = x_adv.flatten(1)
    return torch.isfinite(flat).all(1) & (flat >= BOX[0] - NORM_ATOL).all(1) & (flat <= BOX[1] + NORM_ATOL).all(1)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The model's predicted classes, in batches."""
    if not len(x):
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def _seeded(key: str) -> int:
    return seeds.derive(f"layerbound-attack-v1|{key}")


def _run(attack, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    """Run an attack with torch's global generator seeded, restoring it afterwards (torchattacks
    draws random starts from it and reseeds it)."""
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return attack(x, y).detach()


# --- robust accuracy ---------------------------------------------------------------------------------

def robust_flags(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Sequence[tuple[str, Sequence[float]]],
                 options: Mapping[str, Any], num_classes: int, seed: int, batch_size: int = 250,
                 progress: bool = True, key: str = "") -> tuple[torch.Tensor, dict, dict]:
    """Which examples survive each attack at each eps.

    `plan`: (attack name, its budgets) pairs. Returns (clean-correct flags (N,), robust flags
    {(attack, eps): bool (N,)}, invalid counts {(attack, eps): int}). An example is robust at eps
    when the model classifies it correctly and no checked output of the attack within eps (at
    this eps or a smaller one) is misclassified.
    """
    model.eval()
    input_numel = int(x[0].numel())
    correct = predict(model, x) == y
    robust: dict[tuple[str, float], torch.Tensor] = {}
    invalid: dict[tuple[str, float], int] = {}
    total = sum(1 if ATTACKS[name].minimum_norm else len(eps_list) for name, eps_list in plan)
    bar = tqdm(total=total, desc=f"attacks {key}".strip(), unit="run", disable=not progress, mininterval=2.0,
               dynamic_ncols=True)
    for name, eps_list in plan:
        info = ATTACKS[name]
        eps_sorted = sorted(float(e) for e in eps_list)
        if info.minimum_norm:
            # One unbounded run: the smallest perturbation found, then each eps reads it.
            norms = torch.full((len(x),), math.inf, dtype=torch.float64, device=x.device)
            bad = torch.zeros(len(x), dtype=torch.bool, device=x.device)
            idx = torch.nonzero(correct).flatten()
            for start in range(0, len(idx), batch_size):
                b = idx[start:start + batch_size]
                attack = build(name, model, 0.0, options, num_classes, input_numel, _seeded(f"{key}|{name}|{start}"))
                x_adv = _run(attack, x[b], y[b], _seeded(f"{key}|{name}|{start}|torch"))
                valid = in_box(x_adv)
                fooled = predict(model, x_adv) != y[b]
                norms[b] = torch.where(valid & fooled, perturbation_norms(x_adv, x[b], info.norm),
                                       torch.full_like(norms[b], math.inf))
                bad[b] = ~valid
            for eps in eps_sorted:
                robust[(name, eps)] = correct & ~within(norms, eps)
                invalid[(name, eps)] = int(bad.sum())
            bar.update(1)
            continue
        alive = correct.clone()
        for eps in eps_sorted:
            bad_count = 0
            idx = torch.nonzero(alive).flatten()
            for start in range(0, len(idx), batch_size):
                b = idx[start:start + batch_size]
                attack = build(name, model, eps, options, num_classes, input_numel, _seeded(f"{key}|{name}|{eps!r}|{start}"))
                x_adv = _run(attack, x[b], y[b], _seeded(f"{key}|{name}|{eps!r}|{start}|torch"))
                valid = in_box(x_adv) & within(perturbation_norms(x_adv, x[b], info.norm), eps)
                broken = valid & (predict(model, x_adv) != y[b])
                alive[b[broken]] = False
                bad_count += int((~valid).sum())
            robust[(name, eps)] = alive.clone()
            invalid[(name, eps)] = bad_count
            bar.update(1)
    bar.close()
    return correct, robust, invalid


def robust_eps(robust: Mapping[tuple[str, float], torch.Tensor], name: str, eps: float) -> list[float]:
    """The budgets at most eps at which attack `name` was evaluated."""
    return [e for (n, e) in robust if n == name and e <= eps]


def any_attack(robust: Mapping[tuple[str, float], torch.Tensor], norm: str) -> dict[float, torch.Tensor]:
    """Per eps, robust to every attack of `norm` evaluated at that eps or a smaller one (logical
    and): an image within a smaller budget is within this one, even from an attack that was not
    run at this eps (the headline AutoAttack when it runs at the training budget only)."""
    budgets = sorted({eps for (name, eps) in robust if ATTACKS[name].norm == norm})
    out: dict[float, torch.Tensor] = {}
    for eps in budgets:
        members = [flags for (name, e), flags in robust.items() if ATTACKS[name].norm == norm and e <= eps]
        out[eps] = torch.stack(members).all(0)
    return out


def robust_accuracy_table(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, job: Mapping[str, Any],
                          num_classes: int, progress: bool = True) -> pd.DataFrame:
    """The robust-accuracy table of one model (TABLE_COLUMNS), rows: each attack at each of its
    budgets, then "any" attack per norm and budget.

    `job` is config.attack_job(...): dataset, model, seed, batch_size, the attacks with their eps
    and the option blocks. `x`, `y`: the test examples to attack.
    """
    plan = [(a["name"], a["eps"]) for a in job["attacks"]]
    correct, robust, invalid = robust_flags(model, x, y, plan, job["options"], num_classes, int(job["seed"]),
                                            int(job["batch_size"]), progress, f"{job['dataset']}|{job['model']}")
    n = len(x)
    lib = library_label()
    clean = float(correct.double().mean()) if n else float("nan")
    rows = []

    def row(attack: str, label: str, norm: str, eps: float, flags: torch.Tensor, bad: int, settings: str) -> dict:
        return {"dataset": job["dataset"], "model": job["model"], "attack": attack, "label": label, "norm": norm,
                "eps": float(eps), "examples": n, "clean_accuracy": clean, "robust_accuracy": float(flags.double().mean()),
                "robust_examples": int(flags.sum()), "invalid": int(bad), "settings": settings, "library": lib}
    for (name, eps), flags in robust.items():
        rows.append(row(name, ATTACKS[name].label, ATTACKS[name].norm, eps, flags, invalid[(name, eps)],
                        settings_text(name, job["options"])))
    for norm in ("l2", "linf"):
        members = sorted({name for name, _ in robust if ATTACKS[name].norm == norm})
        for eps, flags in any_attack(robust, norm).items():
            at_eps = [name for name in members if any((name, e) in robust for e in robust_eps(robust, name, eps))]
            rows.append(row(ANY, f"any {norm} attack", norm, eps, flags, 0,
                            "robust only if none of " + ", ".join(at_eps) + " broke it at this or a smaller eps"))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


# --- paper 001, Section 6.1: FAB on the pair set -------------------------------------------------------

def two_class_cross_entropy(logits: torch.Tensor, classes: tuple[int, int], labels: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy of the two-class classifier the model induces on a pair set:
    the logits of the pair set's two classes only, softmax over those two."""
    a, b = (int(c) for c in classes)
    pair_logits = logits[:, [a, b]].double()
    target = (labels == b).long()
    if not ((labels == a) | (labels == b)).all():
        raise ValueError(f"two-class cross-entropy: labels must be {a} or {b}")
    return F.cross_entropy(pair_logits, target, reduction="none")


def fab_minimal_points(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, fab_options: Mapping[str, Any],
                       num_classes: int, seed: int, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """FAB-l2 minimum-norm points on the full model: (x_fab, norms), norms inf where FAB found no
    misclassified point in the box (x_fab is then x). Examples the model already misclassifies
    have norm 0 (x_fab = x)."""
    model.eval()
    input_numel = int(x[0].numel())
    x_fab, norms = x.clone(), torch.full((len(x),), math.inf, dtype=torch.float64, device=x.device)
    wrong = predict(model, x) != y
    norms[wrong] = 0.0
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        attack = build("fab_l2", model, 0.0, {"fab": fab_options}, num_classes, input_numel, _seeded(f"{seed}|fab|{start}"))
        x_adv = _run(attack, x[sl], y[sl], _seeded(f"{seed}|fab|{start}|torch"))
        found = in_box(x_adv) & (predict(model, x_adv) != y[sl]) & ~wrong[sl]
        rows = torch.nonzero(found).flatten() + start
        x_fab[rows] = x_adv[found]
        norms[rows] = perturbation_norms(x_adv[found], x[rows], "l2")
    return x_fab, norms


def fab_pairs(model: torch.nn.Module, pair_set, fab_options: Mapping[str, Any], num_classes: int, seed: int,
              batch_size: int = 250) -> pd.DataFrame:
    """FAB-l2 on the pair set's 2S examples (class a first, then class b): per example, whether
    FAB found a misclassified point, its l2 norm, and the two-class cross-entropy at the clean and
    at the FAB point (FAB_PAIR_COLUMNS); ce_all_*: the model's cross-entropy over all its classes at
    the same points, for reference (the paper's curve may be that one)."""
    device = next(model.parameters()).device
    x = torch.cat([pair_set.x_a, pair_set.x_b]).to(device)
    y = torch.cat([pair_set.y_a, pair_set.y_b]).to(device)
    x_fab, norms = fab_minimal_points(model, x, y, fab_options, num_classes, seed, batch_size)
    with torch.no_grad():
        logits_clean, logits_fab = model(x), model(x_fab)
    ce_clean = two_class_cross_entropy(logits_clean, pair_set.classes, y)
    ce_fab = two_class_cross_entropy(logits_fab, pair_set.classes, y)
    return pd.DataFrame({
        "example": np.arange(len(x)), "label": y.cpu().numpy(),
        "dataset_index": torch.cat([pair_set.index_a, pair_set.index_b]).numpy(),
        "found": np.isfinite(norms.cpu().numpy()), "norm": norms.cpu().numpy(),
        "ce_clean": ce_clean.cpu().numpy(), "ce_fab": ce_fab.cpu().numpy(),
        "ce_all_clean": F.cross_entropy(logits_clean.double(), y, reduction="none").cpu().numpy(),
        "ce_all_fab": F.cross_entropy(logits_fab.double(), y, reduction="none").cpu().numpy(),
        "prediction_clean": logits_clean.argmax(1).cpu().numpy(), "prediction_fab": logits_fab.argmax(1).cpu().numpy(),
    }, columns=FAB_PAIR_COLUMNS)

