"""Paper 003's semirobust studies as jobs: the pair of models, the attacks that train and test,
and paper 003's iteration rule."""

from __future__ import annotations

import json
import math
from typing import Any

from ..attacks import info as attack_info
from ..core.errors import ConfigError
from ..models import architectures, sources
from ..models.specs import LoadedSpec, TrainConfig, model_specs, source_of

ATTACK_KEYS = ("method", "norm", "eps", "steps", "step_size")
RETRAIN_KEYS = ("trials", "epochs", "tolerance", "lr", "momentum", "weight_decay", "batch_size")


def semirobust_study(config: dict[str, Any], study: str) -> dict[str, Any]:
    """A study's robust and regular model specs, checked against each other; one line naming the key
    when the models are unknown, differ in dataset or architecture, are trained the wrong way, or
    an f_b size does not start at a stage boundary."""
    where = f"semirobust.studies.{study}"
    entry = config["semirobust"]["studies"].get(study)
    if entry is None:
        raise ConfigError(f"{where}: no such study; studies: {', '.join(config['semirobust']['studies']) or 'none'}")
    specs = model_specs(config)
    for role in ("robust", "regular"):
        if entry[role] not in specs:
            raise ConfigError(f"{where}.{role} names {entry[role]!r}, which is not a key of models: "
                              f"({', '.join(specs)})")
    robust, regular = specs[entry["robust"]], specs[entry["regular"]]
    for role, spec in (("robust", robust), ("regular", regular)):
        if isinstance(spec, LoadedSpec):
            # The study needs to know how each network was trained: robust, or benign.
            raise ConfigError(f"{where}.{role}: model {spec.name!r} is loaded from weights (source "
                              f"{config['models'][spec.name]['source']}); the study takes models the workflow "
                              "trains (a registry arch, or a torchvision / python source with a train block)")
    for key in ("dataset", "arch", "padding", "source"):
        if getattr(robust, key) != getattr(regular, key):
            raise ConfigError(f"{where}: robust model {robust.name!r} and regular model {regular.name!r} differ in "
                              f"{key} ({getattr(robust, key)} vs {getattr(regular, key)}); f_b moves between them")
    if robust.train.method == "benign":
        raise ConfigError(f"{where}.robust: model {robust.name!r} is trained benign; the robust network (f_a*, f_b*) "
                          "is adversarially trained (pgd or trades)")
    if regular.train.method != "benign":
        raise ConfigError(f"{where}.regular: model {regular.name!r} is trained with {regular.train.method}; the "
                          "regular network (f_a, f_b) is trained benign")
    if robust.source is None:
        choices, rule = architectures.fb_layer_choices(robust.arch), "f_b starts at a layer boundary and f_a keeps one layer"
    else:
        # Any conv or linear module, counted from the output in execution order (the reference code's rule).
        count = len(sources.weight_layers(config["models"][robust.name]))
        choices, rule = list(range(1, count)), f"it has {count} conv and linear layers and f_a keeps one"
    for k in entry["fb_layers"]:
        if k not in choices:
            shown = f"1..{choices[-1]}" if robust.source is not None and choices else str(choices)
            raise ConfigError(f"{where}.fb_layers: {robust.arch} cannot have f_b = its last {k} weight layers "
                              f"({rule}); allowed {shown}")
    attacks = {role: study_attack(*study_attack_keys(config, study, role), robust.train, config["attacks"])
               for role in ("train_attack", "eval_attack")}
    return {"robust": robust, "regular": regular, "fb_layers": list(entry["fb_layers"]), **attacks}


def study_attack_keys(config: dict[str, Any], study: str, role: str) -> tuple[dict[str, Any], str]:
    """A study's attack keys: the block's `role` with the study's own keys over them, and where the
    keys that decide it come from (for error messages)."""
    own = config["semirobust"]["studies"][study].get(role, {})
    where = f"semirobust.studies.{study}.{role}" if own else f"semirobust.{role}"
    return {**config["semirobust"][role], **own}, where


# Paper 003, Section 3.1: iterative attacks take "an eps-step of 1/255 and a number of iterations
# equal to min(4 + eps, 1.25 * eps)" (eps in 255ths: 10, 20 and 36 iterations at 8, 16 and 32 / 255).
PAPER003_STEP = 1.0 / 255.0
# The study's attacks: `pgd` is adversary.py's Madry PGD (the training attack of the workflow's
# models, any norm); the others are the attack module's (torchattacks), their norm fixed.
STUDY_ITERATIVE = ("pgd", "bim", "pgd_linf", "pgd_l2")


def paper003_iterations(eps: float) -> int:
    """Paper 003's iterations for an l_inf budget eps in pixels: min(4 + e, 1.25 e), e = 255 eps."""
    e = float(eps) * 255.0
    return int(math.floor(min(4.0 + e, 1.25 * e) + 1e-9))


def study_attack(spec: dict[str, Any], where: str, robust: TrainConfig, attacks_block: dict[str, Any]) -> dict[str, Any]:
    """A study attack with every null key resolved: norm (the method's own for the attack module's
    attacks, else the robust model's), eps (the robust model's, when the norm is its own), and for
    iterative attacks steps and step size (`schedule: paper003`: paper 003's rule; else the robust
    model's own when eps and steps are, else 2.5 eps / steps). C&W and AutoAttack take their settings
    from the `attacks:` block (`options`), the one place they are set."""
    method = spec["method"]
    own_norm = None if method == "pgd" else attack_info.ATTACKS[method].norm
    norm = spec["norm"] if spec["norm"] is not None else (own_norm or robust.norm)
    if own_norm is not None and norm != own_norm:
        raise ConfigError(f"{where}.norm: {method} attacks in {own_norm}, not {norm} (leave norm null)")
    if spec["eps"] is not None:
        eps = float(spec["eps"])
    elif norm == robust.norm and robust.eps > 0:
        eps = float(robust.eps)
    else:
        raise ConfigError(f"{where}.eps: the robust model is trained in {robust.norm}; a {norm} attack needs its own eps")
    if not eps > 0:
        raise ConfigError(f"{where}.eps: the attack needs a budget > 0")
    out = {"method": method, "norm": norm, "eps": eps, "schedule": spec["schedule"], "options": {}}
    given = [key for key in ("steps", "step_size") if spec[key] is not None]
    if method not in STUDY_ITERATIVE:
        if given or spec["schedule"] != "given":
            key = given[0] if given else "schedule"
            where_set = "it takes one step of eps" if method == "fgsm" else f"set them in attacks.{method.split('_')[0]}"
            raise ConfigError(f"{where}.{key}: {method} has no steps or step size of its own here ({where_set})")
        if method == "fgsm":
            out.update(steps=1, step_size=eps)
        else:
            block = "cw" if method == "cw_l2" else "autoattack"
            out.update(steps=int(attacks_block[block]["steps"]), step_size=None, options={block: dict(attacks_block[block])})
        return out
    if spec["schedule"] == "paper003":
        if given:
            raise ConfigError(f"{where}.{given[0]}: schedule paper003 sets steps and step size (leave them null)")
        if norm != "linf":
            raise ConfigError(f"{where}.schedule: paper003's rule (steps of 1/255) is for linf attacks, not {norm}")
        out.update(steps=paper003_iterations(eps), step_size=PAPER003_STEP)
        if out["steps"] < 1:
            raise ConfigError(f"{where}.eps: {eps} is below 1/255, where paper003's rule gives no iteration")
        return out
    steps = int(spec["steps"]) if spec["steps"] is not None else int(robust.steps)
    if spec["step_size"] is not None:
        step_size = float(spec["step_size"])
    elif spec["eps"] is None and spec["steps"] is None and norm == robust.norm and robust.step_size is not None:
        step_size = float(robust.step_size)
    else:
        step_size = 2.5 * eps / steps
    out.update(steps=steps, step_size=step_size)
    return out


def semirobust_job(config: dict[str, Any], study: str, fb_layers: int | str) -> dict[str, Any]:
    """Everything that decides one Algorithm 1 run (a study at one f_b size), and nothing else: the
    workflow passes it as the rule's parameter, so a change to the study block re-runs only these."""
    resolved = semirobust_study(config, study)
    block = config["semirobust"]
    k = int(fb_layers)
    if k not in resolved["fb_layers"]:
        raise ConfigError(f"semirobust.studies.{study}.fb_layers is {resolved['fb_layers']}, not {k}")
    robust, regular = resolved["robust"], resolved["regular"]
    return {"seed": int(config["seed"]), "study": study, "dataset": robust.dataset, "arch": robust.arch,
            "robust": robust.name, "regular": regular.name, "fb_layers": k,
            "retrain": {key: block[key] for key in RETRAIN_KEYS},
            "train_examples": block["train_examples"], "test_examples": block["test_examples"],
            "train_attack": resolved["train_attack"], "eval_attack": resolved["eval_attack"],
            "estimators": list(block["estimators"]), "edge": dict(block["edge"]), **source_of(robust)}


def semirobust_job_json(config: dict[str, Any], study: str, fb_layers: int | str) -> str:
    return json.dumps(semirobust_job(config, study, fb_layers), sort_keys=True)
