# Stage 4: figures and the report's summary (SPEC 7; paper 001 Figures 3, 6, 8-15). Figures read
# the loss tables and the metrics sidecars (Figure 3: the merged distance files and the pair set),
# so a new eps grid re-runs the loss tables and these rules only, never a shard. Every target list
# is derived from the collision plan: a config with a single m has no m-sweep figure, one with
# keep_points = 0 no colliding-examples figure, an architecture with one model no method comparison.
# The plan builders, input functions and figures_targets are in common.smk.

FIGURES_DEFAULTS = {"compare_eps": [1.0, 2.0, 3.0], "collision_pair": 0, "collision_projection": 0}
FIGURES_CFG = {**FIGURES_DEFAULTS, **(config.get("figures") or {})}
FIGURES_DIR = "results/figures/{dataset}/{pairset}/{method}"
TRAINING_ORDER = {"benign": 0, "pgd": 1, "trades": 2}

FIGURE_PLAN = _figure_plan()
METHOD_GROUPS = _method_groups()
COLLISION_FIGURES = _collision_figures_enabled()

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
