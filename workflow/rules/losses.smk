# Stage 3: conflict graphs and optimal losses (paper 001, Algorithm 2). One loss table per merged
# distance file, then the summary. The eps grid is a rule parameter: changing it re-runs only this
# stage (and what reads its tables), never a collision shard.


localrules:
    losses_summary,


rule losses_table:
    input:
        PLAN.pattern("distances"),
    output:
        PLAN.pattern("losses"),
    params:
        eps=eps_grid_json,
        bootstrap=config["losses"]["bootstrap"],
    log:
        PLAN.pattern("losses", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("losses", under="benchmarks", suffix=".tsv")
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound losses --distances {input:q} --eps-json {params.eps:q} --bootstrap {params.bootstrap} --out {output:q} > {log:q} 2>&1"


rule losses_summary:
    input:
        [u.losses_path(PLAN.root) for u in PLAN.units.values()],
    output:
        PLAN.pattern("summary"),
    log:
        PLAN.pattern("summary", under="logs", suffix=".log"),
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound summarize --out {output:q} {input:q} > {log:q} 2>&1"
