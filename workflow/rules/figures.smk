# Stage 4: figures and the report's summary (paper 001 Figures 3, 5, 6, 8-15). Figures read the loss
# tables and the metrics sidecars (Figure 3: the merged distance files and the pair set), so a new
# eps grid re-runs the loss tables and these rules only, never a shard. Which figures exist is
# decided by layerbound.plan.Plan.figure_targets.


rule figures_layers:
    input:
        unpack(figures_model_inputs),
    output:
        png=report(
            PLAN.pattern("figure_layers", suffix=".png"),
            caption="../report/layers.rst",
            category="1. Loss by layer",
            subcategory="{dataset} {model}",
            labels={"model": "{model}", "m": "{m}", "figure": "all layers"},
        ),
        pdf=PLAN.pattern("figure_layers", suffix=".pdf"),
    log:
        PLAN.pattern("figure_layers", under="logs", suffix=".log"),
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound figures layers --metrics {input.metrics:q} --png {output.png:q} --pdf {output.pdf:q}"
        " {input.tables:q} > {log:q} 2>&1"


rule figures_zero_one:
    input:
        unpack(figures_model_inputs),
    output:
        png=report(
            PLAN.pattern("figure_zero_one", suffix=".png"),
            caption="../report/zero_one.rst",
            category="5. 0-1 vs cross-entropy",
            subcategory="{dataset} {model}",
            labels={"model": "{model}", "m": "{m}", "figure": "0-1 vs cross-entropy"},
        ),
        pdf=PLAN.pattern("figure_zero_one", suffix=".pdf"),
    log:
        PLAN.pattern("figure_zero_one", under="logs", suffix=".log"),
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound figures zero-one --metrics {input.metrics:q} --png {output.png:q} --pdf {output.pdf:q}"
        " {input.tables:q} > {log:q} 2>&1"


rule figures_collision_methods:
    input:
        unpack(figures_collision_methods_inputs),
    output:
        png=report(
            PLAN.pattern("figure_collision_methods", suffix=".png"),
            caption="../report/collision_methods.rst",
            category="6. Collision methods",
            subcategory="{dataset} {model}",
            labels={"model": "{model}", "m": "{m}", "figure": "collision methods"},
        ),
        pdf=PLAN.pattern("figure_collision_methods", suffix=".pdf"),
    log:
        PLAN.pattern("figure_collision_methods", under="logs", suffix=".log"),
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound figures collision-methods --metrics {input.metrics:q} --png {output.png:q}"
        " --pdf {output.pdf:q} {input.tables:q} > {log:q} 2>&1"


rule figures_m_sweep:
    input:
        unpack(figures_m_sweep_inputs),
    output:
        png=report(
            PLAN.pattern("figure_m_sweep", suffix=".png"),
            caption="../report/m_sweep.rst",
            category="2. First layer vs m",
            subcategory="{dataset} {model}",
            labels={"model": "{model}", "figure": "first layer, several m"},
        ),
        pdf=PLAN.pattern("figure_m_sweep", suffix=".pdf"),
    params:
        layer=m_sweep_layer,
    log:
        PLAN.pattern("figure_m_sweep", under="logs", suffix=".log"),
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound figures m-sweep --metrics {input.metrics:q} --layer {params.layer:q}"
        " --png {output.png:q} --pdf {output.pdf:q} {input.tables:q} > {log:q} 2>&1"


rule figures_collisions:
    input:
        unpack(figures_collisions_inputs),
    output:
        png=report(
            PLAN.pattern("figure_collisions", suffix=".png"),
            caption="../report/collisions.rst",
            category="3. Colliding examples",
            subcategory="{dataset} {model}",
            labels={"model": "{model}", "m": "{m}", "figure": "colliding pair across layers"},
        ),
        pdf=PLAN.pattern("figure_collisions", suffix=".pdf"),
    params:
        pair=config["figures"]["collision_pair"],
        projection=config["figures"]["collision_projection"],
    log:
        PLAN.pattern("figure_collisions", under="logs", suffix=".log"),
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound figures collisions --metrics {input.metrics:q} --pairs {input.pairs:q}"
        " --pair {params.pair} --projection {params.projection}"
        " --png {output.png:q} --pdf {output.pdf:q} {input.merged:q} > {log:q} 2>&1"


rule figures_training_methods:
    input:
        unpack(figures_training_inputs),
    output:
        png=report(
            PLAN.pattern("figure_training_methods", suffix=".png"),
            caption="../report/methods.rst",
            category="4. Training methods",
            subcategory="{dataset} {arch}",
            labels={"architecture": "{arch}", "m": "{m}", "figure": "training methods by layer"},
        ),
        pdf=PLAN.pattern("figure_training_methods", suffix=".pdf"),
    params:
        eps=figures_compare_eps,
    log:
        PLAN.pattern("figure_training_methods", under="logs", suffix=".log"),
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound figures training-methods --metrics {input.metrics:q} --eps-json {params.eps:q}"
        " --png {output.png:q} --pdf {output.pdf:q} {input.tables:q} > {log:q} 2>&1"


rule figures_summary:
    input:
        unpack(figures_summary_inputs),
    output:
        html=report(
            PLAN.pattern("report_html"),
            caption="../report/summary.rst",
            category="0. Summary",
            labels={"table": "layer-by-layer summary"},
        ),
        csv=report(
            PLAN.pattern("report_csv"),
            caption="../report/summary.rst",
            category="0. Summary",
            labels={"table": "layer-by-layer summary (CSV)"},
        ),
    log:
        PLAN.pattern("report_html", under="logs", suffix=".log"),
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound figures summary --summary {input.summary:q} --metrics {input.metrics:q}"
        " --attacks {input.attacks:q} --html {output.html:q} --csv {output.csv:q} > {log:q} 2>&1"


rule figures_fab:
    input:
        unpack(figures_fab_inputs),
    output:
        png=report(
            PLAN.pattern("figure_fab", suffix=".png"),
            caption="../report/fab.rst",
            category="7. FAB vs collision loss",
            subcategory="{dataset} {model}",
            labels={"model": "{model}", "m": "{m}", "figure": "FAB loss vs optimal collision loss (logits)"},
        ),
        pdf=PLAN.pattern("figure_fab", suffix=".pdf"),
        csv=PLAN.pattern("fab_curves"),
    log:
        PLAN.pattern("figure_fab", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("figure_fab", under="benchmarks", suffix=".tsv")
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound figures fab --metrics {input.metrics:q} --points {input.points:q} --table {input.table:q}"
        " --csv {output.csv:q} --png {output.png:q} --pdf {output.pdf:q} > {log:q} 2>&1"
