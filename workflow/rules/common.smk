# Helpers of the rules: paths derived from the config, input functions, target lists, wildcard
# limits, grouped by stage below. The stage files (train, collide, losses, figures.smk) hold the
# rules and the plan tables these functions read (COLLIDE_UNITS, FIGURE_PLAN, ...); a function
# looks those up when called, so it may be defined here before its stage file builds them.
import json
import re
import shlex
from functools import lru_cache
from pathlib import Path

from layerbound import config as lb_config
from layerbound import data as lb_data
from layerbound import figures as lb_figures
from layerbound import losses as lb_losses
from layerbound import models as lb_models
from layerbound import shards as lb_shards

# Fails at start-up, naming the model, if a model's training block is inconsistent.
MODEL_SPECS = lb_config.model_specs(config)
# Rules call the package's CLI through `python -m`, with the checkout's src/ first on the path, so
# the same command works in the project venv and in the rules' conda environment (envs/).
PACKAGE_SRC = shlex.quote(str(Path(workflow.basedir) / "src"))
LAYERBOUND = f"PYTHONPATH={PACKAGE_SRC}${{PYTHONPATH:+:$PYTHONPATH}} python -m layerbound"
DOWNLOAD_FLAG = "--download" if config["download"] else ""
DATASETS = sorted({spec.dataset for spec in MODEL_SPECS.values()})


def _one_of(values):
    return "|".join(re.escape(v) for v in sorted(values))


wildcard_constraints:
    dataset=_one_of(DATASETS),
    model=_one_of(MODEL_SPECS),


# --- Stage 1: training (train.smk) ---


def checkpoint_path(model):
    return f"results/models/{MODEL_SPECS[model].dataset}/{model}.pt"


def all_checkpoints():
    return [checkpoint_path(name) for name in MODEL_SPECS]


def training_job_json(wildcards):
    if MODEL_SPECS[wildcards.model].dataset != wildcards.dataset:
        raise ValueError(
            f"model {wildcards.model!r} is trained on {MODEL_SPECS[wildcards.model].dataset!r}, "
            f"not {wildcards.dataset!r}"
        )
    return json.dumps(lb_config.training_job(config, wildcards.model), sort_keys=True)


# --- Stage 2: collision distances (collide.smk) ---


def collide_targets():
    """Every merged distance file the config asks for."""
    return [str(u.merged_path("results")) for u in COLLIDE_UNITS.values()]


def collide_unit(wildcards):
    key = (wildcards.dataset, wildcards.pairset, wildcards.method, wildcards.model, wildcards.layer, wildcards.m)
    if key not in COLLIDE_UNITS:
        raise ValueError(f"the config asks for no collision distances of {'/'.join(key)}")
    return COLLIDE_UNITS[key]


def pairs_sample_args(wildcards):
    pairs_cfg, _ = lb_shards.settings(config)
    a, b = pairs_cfg["classes"]
    return f"--classes {int(a)} {int(b)} --per-class {int(pairs_cfg['per_class'])} --seed {int(config['seed'])}"


def collide_shard_inputs(wildcards):
    unit = collide_unit(wildcards)
    if int(wildcards.p) >= unit.projections or int(wildcards.chunk) >= unit.chunks:
        raise ValueError(f"{wildcards.model}/{wildcards.layer}/m{wildcards.m} has projections 0..{unit.projections - 1} "
                         f"and chunks 0..{unit.chunks - 1}; there is no shard p{wildcards.p}/c{wildcards.chunk}")
    inputs = {"pairs": f"results/pairs/{unit.dataset}/{unit.pairset}.h5"}
    if unit.model != lb_shards.INPUT_MODEL:
        inputs["checkpoint"] = checkpoint_path(unit.model)
    return inputs


def collide_options_json(wildcards):
    """The options that decide a shard's numbers (a change re-runs the shards, nothing else does)."""
    return lb_shards.options(config, wildcards.method).to_json()


def collide_model_args(wildcards, input):
    unit = collide_unit(wildcards)
    if unit.model == lb_shards.INPUT_MODEL:
        return ""
    return f"--checkpoint {shlex.quote(str(input.checkpoint))} --arch {shlex.quote(unit.arch)}"


def collide_merge_inputs(wildcards):
    return [str(p) for p in collide_unit(wildcards).shard_paths("results")]


def collide_projections(wildcards):
    return collide_unit(wildcards).projections


# --- Stage 3: losses (losses.smk) ---


def loss_table_path(unit):
    return (f"results/losses/{unit.dataset}/{unit.pairset}/{unit.method}/{unit.model}/"
            f"{unit.layer}/m{unit.m}.csv")


def losses_targets():
    return [loss_table_path(u) for u in COLLIDE_UNITS.values()]


def eps_grid_json(wildcards):
    return json.dumps(lb_losses.eps_grid(config["losses"]["eps"]).tolist())


# --- Stage 4: figures (figures.smk) ---


@lru_cache(maxsize=None)
def _figure_taps(model):
    spec = MODEL_SPECS[model]
    meta = lb_data.info(spec.dataset)
    return tuple(lb_models.build(spec.arch, meta.input_shape, meta.num_classes, spec.padding).taps)


def _figure_plan():
    """(dataset, pairset, method, model) -> {m: layers in network order}, for the trained models."""
    plan = {}
    for u in COLLIDE_UNITS.values():
        if u.model != lb_shards.INPUT_MODEL:
            plan.setdefault((u.dataset, u.pairset, u.method, u.model), {}).setdefault(u.m, []).append(u.layer)
    return {key: {m: lb_figures.network_order(layers, _figure_taps(key[3])) for m, layers in sorted(per_m.items())}
            for key, per_m in plan.items()}


def _arch_group(model):
    # Models are compared when they share dataset and architecture (and padding, hence layers).
    spec = MODEL_SPECS[model]
    return spec.arch if spec.padding == "same" else f"{spec.arch}_{spec.padding}"


def _method_groups():
    """(dataset, pairset, method, arch group, m) -> models (benign, PGD, TRADES order), when >= 2."""
    groups = {}
    for (dataset, pairset, method, model), per_m in FIGURE_PLAN.items():
        for m in per_m:
            groups.setdefault((dataset, pairset, method, _arch_group(model), m), []).append(model)
    return {key: sorted(models, key=_training_order) for key, models in groups.items() if len(models) >= 2}


def _training_order(model):
    train = MODEL_SPECS[model].train
    return TRAINING_ORDER[train.method], train.eps, model


def _collision_figures_enabled():
    """Whether the merged files store colliding points, and the configured pair is among them."""
    if not COLLIDE_UNITS:
        return False
    method = next(iter(COLLIDE_UNITS.values())).method
    keep = lb_shards.options(config, method).keep_points
    if keep == 0:
        return False
    pairs_cfg, _ = lb_shards.settings(config)
    pair, limit = int(FIGURES_CFG["collision_pair"]), min(keep, int(pairs_cfg["per_class"]) ** 2)
    if not 0 <= pair < limit:
        raise ValueError(f"figures.collision_pair = {pair}, but the merged files store the colliding points of pairs "
                         f"0..{limit - 1} only (collision.keep_points = {keep}, pairs.per_class = {pairs_cfg['per_class']})")
    return True


def _figure_key(wildcards):
    key = (wildcards.dataset, wildcards.pairset, wildcards.method, wildcards.model)
    if key not in FIGURE_PLAN:
        raise ValueError(f"the config asks for no distances of {'/'.join(key)}")
    return key


def _figure_layers(wildcards):
    per_m = FIGURE_PLAN[_figure_key(wildcards)]
    if int(wildcards.m) not in per_m:
        raise ValueError(f"the config asks for no distances of {wildcards.model} at m={wildcards.m}")
    return per_m[int(wildcards.m)]


def _loss_table(dataset, pairset, method, model, layer, m):
    return loss_table_path(COLLIDE_UNITS[(dataset, pairset, method, model, layer, str(m))])


def _baseline_units(dataset, pairset, method, m):
    return [u for u in COLLIDE_UNITS.values()
            if (u.dataset, u.pairset, u.method, u.model, u.m) == (dataset, pairset, method, lb_shards.INPUT_MODEL, int(m))]


def metrics_path(model):
    return f"results/models/{MODEL_SPECS[model].dataset}/{model}.json"


def figures_model_inputs(wildcards):
    """Every layer of the model at m, the input baselines at m, and the model's metrics sidecar."""
    key = _figure_key(wildcards)
    tables = [_loss_table(*key, layer, wildcards.m) for layer in _figure_layers(wildcards)]
    tables += [loss_table_path(u) for u in _baseline_units(*key[:3], wildcards.m)]
    return {"tables": tables, "metrics": metrics_path(wildcards.model)}


def m_sweep_layer(wildcards):
    """The first layer (in network order; post-activation taps before `_pre` ones) of the model."""
    per_m = FIGURE_PLAN[_figure_key(wildcards)]
    layers = next(iter(per_m.values()))
    return next((layer for layer in layers if not layer.endswith("_pre")), layers[0])


def figures_m_sweep_inputs(wildcards):
    key = _figure_key(wildcards)
    layer, ms = m_sweep_layer(wildcards), sorted(FIGURE_PLAN[key])
    tables = [_loss_table(*key, layer, m) for m in ms]
    tables += [loss_table_path(u) for u in _baseline_units(*key[:3], ms[0]) if u.layer == "input"]
    return {"tables": tables, "metrics": metrics_path(wildcards.model)}


def figures_collisions_inputs(wildcards):
    key = _figure_key(wildcards)
    units = [COLLIDE_UNITS[(*key, layer, wildcards.m)] for layer in _figure_layers(wildcards)]
    units = _baseline_units(*key[:3], wildcards.m) + units
    return {"merged": [str(u.merged_path("results")) for u in units],
            "pairs": f"results/pairs/{wildcards.dataset}/{wildcards.pairset}.h5",
            "metrics": metrics_path(wildcards.model)}


def _method_group(wildcards):
    key = (wildcards.dataset, wildcards.pairset, wildcards.method, wildcards.arch, int(wildcards.m))
    if key not in METHOD_GROUPS:
        raise ValueError(f"no two models of architecture {wildcards.arch} on {wildcards.dataset} to compare at m={wildcards.m}")
    return METHOD_GROUPS[key]


def figures_methods_inputs(wildcards):
    models = _method_group(wildcards)
    tables = [_loss_table(wildcards.dataset, wildcards.pairset, wildcards.method, model, layer, wildcards.m)
              for model in models
              for layer in FIGURE_PLAN[(wildcards.dataset, wildcards.pairset, wildcards.method, model)][int(wildcards.m)]]
    tables += [loss_table_path(u) for u in _baseline_units(wildcards.dataset, wildcards.pairset, wildcards.method, wildcards.m)]
    return {"tables": tables, "metrics": [metrics_path(model) for model in models]}


def figures_compare_eps(wildcards):
    return json.dumps([float(e) for e in FIGURES_CFG["compare_eps"]])


def figures_summary_inputs(wildcards):
    models = sorted({key[3] for key in FIGURE_PLAN})
    return {"summary": "results/summary.csv", "metrics": [metrics_path(model) for model in models]}


def figures_targets():
    """Every figure (PNG and PDF) and the summary the config asks for."""
    targets = []

    def both(path):
        targets.extend([f"{path}.png", f"{path}.pdf"])

    for (dataset, pairset, method, model), per_m in FIGURE_PLAN.items():
        base = FIGURES_DIR.format(dataset=dataset, pairset=pairset, method=method)
        for m in per_m:
            both(f"{base}/layers/{model}/m{m}")
            both(f"{base}/zero_one/{model}/m{m}")
            if COLLISION_FIGURES:
                both(f"{base}/collisions/{model}/m{m}")
        if len(per_m) > 1:
            both(f"{base}/m_sweep/{model}")
    for dataset, pairset, method, arch, m in METHOD_GROUPS:
        both(f"{FIGURES_DIR.format(dataset=dataset, pairset=pairset, method=method)}/methods/{arch}/m{m}")
    if FIGURE_PLAN:
        targets += ["results/report/layer_summary.html", "results/report/layer_summary.csv"]
    return targets


# --- rule all (Snakefile) ---


def all_shards():
    return [str(p) for unit in COLLIDE_UNITS.values() for p in unit.shard_paths("results")]


def all_targets():
    # The stages' target lists are above; rule all asks for the last product of each stage, and
    # for every shard too: Snakemake does not redo a missing intermediate file whose products are
    # present, and a deleted (say, corrupt) shard must be recomputed, and its merge redone.
    return all_checkpoints() + all_shards() + ["results/summary.csv"] + figures_targets()
