# Stage 3: conflict graphs and optimal losses (paper 001, Algorithm 2). One loss table per merged
# distance file, then the summary. The eps grid is a rule parameter: changing it re-runs only this
# stage (and what reads its tables), never a collision shard.


localrules:
    losses_summary,


rule losses_table:
    input:
        lb_plan.pattern("distances"),
    output:
        lb_plan.pattern("losses"),
    params:
        eps=eps_grid_json,
        bootstrap=config["losses"]["bootstrap"],
    log:
        lb_plan.pattern("losses", under="logs", suffix=".log"),
    benchmark:
        lb_plan.pattern("losses", under="benchmarks", suffix=".tsv")
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound losses --distances {input:q} --eps-json {params.eps:q} --bootstrap {params.bootstrap} --out {output:q} > {log:q} 2>&1"


rule losses_summary:
    input:
        [u.losses_path() for u in PLAN.units.values()],
    output:
        lb_plan.pattern("summary"),
    log:
        lb_plan.pattern("summary", under="logs", suffix=".log"),
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound summarize --out {output:q} {input:q} > {log:q} 2>&1"
