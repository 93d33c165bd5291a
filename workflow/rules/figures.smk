# Stage 4: figures and the report's summary (SPEC 7; paper 001 Figures 3, 6, 8-15). Figures read
# the loss tables and the metrics sidecars (Figure 3: the merged distance files and the pair set),
# so a new eps grid re-runs the loss tables and these rules only, never a shard. Every target list
# is derived from the collision plan: a config with a single m has no m-sweep figure, one with
# keep_points = 0 no colliding-examples figure, an architecture with one model no method comparison.
from functools import lru_cache

from layerbound import data as lb_data
from layerbound import figures as lb_figures
from layerbound import models as lb_models

FIGURES_DEFAULTS = {"compare_eps": [1.0, 2.0, 3.0], "collision_pair": 0, "collision_projection": 0}
FIGURES_CFG = {**FIGURES_DEFAULTS, **(config.get("figures") or {})}
FIGURES_DIR = "results/figures/{dataset}/{pairset}/{method}"
TRAINING_ORDER = {"benign": 0, "pgd": 1, "trades": 2}


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


FIGURE_PLAN = _figure_plan()
METHOD_GROUPS = _method_groups()
COLLISION_FIGURES = _collision_figures_enabled()


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


FIGURES_CONSTRAINTS = {
    "pairset": COLLIDE_CONSTRAINTS["pairset"],
    "method": COLLIDE_CONSTRAINTS["method"],
    "m": COLLIDE_CONSTRAINTS["m"],
    "model": _one_of({key[3] for key in FIGURE_PLAN}) if FIGURE_PLAN else "(?!)",
    "arch": _one_of({key[3] for key in METHOD_GROUPS}) if METHOD_GROUPS else "(?!)",
}


localrules: figures_all


rule figures_all:
    input:
        figures_targets(),


rule figures_layers:
    input:
        unpack(figures_model_inputs),
    output:
        png=report(
            f"{FIGURES_DIR}/layers/{{model}}/m{{m}}.png",
            caption="../report/layers.rst",
            category="1. Loss by layer",
            subcategory="{dataset} {model}",
            labels={"model": "{model}", "m": "{m}", "figure": "all layers"},
        ),
        pdf=f"{FIGURES_DIR}/layers/{{model}}/m{{m}}.pdf",
    log:
        "results/logs/figures/{dataset}/{pairset}/{method}/layers/{model}/m{m}.log",
    wildcard_constraints:
        **FIGURES_CONSTRAINTS,
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "{LAYERBOUND} figures layers --metrics {input.metrics:q} --png {output.png:q} --pdf {output.pdf:q}"
        " {input.tables:q} > {log:q} 2>&1"


rule figures_zero_one:
    input:
        unpack(figures_model_inputs),
    output:
        png=report(
            f"{FIGURES_DIR}/zero_one/{{model}}/m{{m}}.png",
            caption="../report/zero_one.rst",
            category="5. 0-1 vs cross-entropy",
            subcategory="{dataset} {model}",
            labels={"model": "{model}", "m": "{m}", "figure": "0-1 vs cross-entropy"},
        ),
        pdf=f"{FIGURES_DIR}/zero_one/{{model}}/m{{m}}.pdf",
    log:
        "results/logs/figures/{dataset}/{pairset}/{method}/zero_one/{model}/m{m}.log",
    wildcard_constraints:
        **FIGURES_CONSTRAINTS,
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "{LAYERBOUND} figures zero-one --metrics {input.metrics:q} --png {output.png:q} --pdf {output.pdf:q}"
        " {input.tables:q} > {log:q} 2>&1"


rule figures_m_sweep:
    input:
        unpack(figures_m_sweep_inputs),
    output:
        png=report(
            f"{FIGURES_DIR}/m_sweep/{{model}}.png",
            caption="../report/m_sweep.rst",
            category="2. First layer vs m",
            subcategory="{dataset} {model}",
            labels={"model": "{model}", "figure": "first layer, several m"},
        ),
        pdf=f"{FIGURES_DIR}/m_sweep/{{model}}.pdf",
    params:
        layer=m_sweep_layer,
    log:
        "results/logs/figures/{dataset}/{pairset}/{method}/m_sweep/{model}.log",
    wildcard_constraints:
        **FIGURES_CONSTRAINTS,
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "{LAYERBOUND} figures m-sweep --metrics {input.metrics:q} --layer {params.layer:q}"
        " --png {output.png:q} --pdf {output.pdf:q} {input.tables:q} > {log:q} 2>&1"


rule figures_collisions:
    input:
        unpack(figures_collisions_inputs),
    output:
        png=report(
            f"{FIGURES_DIR}/collisions/{{model}}/m{{m}}.png",
            caption="../report/collisions.rst",
            category="3. Colliding examples",
            subcategory="{dataset} {model}",
            labels={"model": "{model}", "m": "{m}", "figure": "colliding pair across layers"},
        ),
        pdf=f"{FIGURES_DIR}/collisions/{{model}}/m{{m}}.pdf",
    params:
        pair=FIGURES_CFG["collision_pair"],
        projection=FIGURES_CFG["collision_projection"],
    log:
        "results/logs/figures/{dataset}/{pairset}/{method}/collisions/{model}/m{m}.log",
    wildcard_constraints:
        **FIGURES_CONSTRAINTS,
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "{LAYERBOUND} figures collisions --metrics {input.metrics:q} --pairs {input.pairs:q}"
        " --pair {params.pair} --projection {params.projection}"
        " --png {output.png:q} --pdf {output.pdf:q} {input.merged:q} > {log:q} 2>&1"


rule figures_methods:
    input:
        unpack(figures_methods_inputs),
    output:
        png=report(
            f"{FIGURES_DIR}/methods/{{arch}}/m{{m}}.png",
            caption="../report/methods.rst",
            category="4. Training methods",
            subcategory="{dataset} {arch}",
            labels={"architecture": "{arch}", "m": "{m}", "figure": "training methods by layer"},
        ),
        pdf=f"{FIGURES_DIR}/methods/{{arch}}/m{{m}}.pdf",
    params:
        eps=figures_compare_eps,
    log:
        "results/logs/figures/{dataset}/{pairset}/{method}/methods/{arch}/m{m}.log",
    wildcard_constraints:
        **FIGURES_CONSTRAINTS,
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "{LAYERBOUND} figures methods --metrics {input.metrics:q} --eps-json {params.eps:q}"
        " --png {output.png:q} --pdf {output.pdf:q} {input.tables:q} > {log:q} 2>&1"


rule figures_summary:
    input:
        unpack(figures_summary_inputs),
    output:
        html=report(
            "results/report/layer_summary.html",
            caption="../report/summary.rst",
            category="0. Summary",
            labels={"table": "layer-by-layer summary"},
        ),
        csv=report(
            "results/report/layer_summary.csv",
            caption="../report/summary.rst",
            category="0. Summary",
            labels={"table": "layer-by-layer summary (CSV)"},
        ),
    log:
        "results/logs/figures/summary.log",
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "{LAYERBOUND} figures summary --summary {input.summary:q} --metrics {input.metrics:q}"
        " --html {output.html:q} --csv {output.csv:q} > {log:q} 2>&1"
