# Stage 3: conflict graphs and optimal losses (SPEC 6). One loss table per merged distance file,
# then results/summary.csv. The eps grid is a rule parameter: changing it re-runs only this stage
# (and what reads its tables), never a collision shard. Helpers (loss_table_path, losses_targets,
# eps_grid_json) are in common.smk.


localrules: losses_summary


rule losses_table:
    input:
        "results/distances/{dataset}/{pairset}/{method}/{model}/{layer}/m{m}.h5",
    output:
        "results/losses/{dataset}/{pairset}/{method}/{model}/{layer}/m{m}.csv",
    params:
        eps=eps_grid_json,
    log:
        "results/logs/losses/{dataset}/{pairset}/{method}/{model}/{layer}/m{m}.log",
    benchmark:
        "results/benchmarks/losses/{dataset}/{pairset}/{method}/{model}/{layer}/m{m}.tsv"
    wildcard_constraints:
        **{k: v for k, v in COLLIDE_CONSTRAINTS.items() if k not in ("p", "chunk")},
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "{LAYERBOUND} losses --distances {input:q} --eps-json {params.eps:q} --out {output:q} > {log:q} 2>&1"


rule losses_summary:
    input:
        losses_targets(),
    output:
        "results/summary.csv",
    log:
        "results/logs/losses/summary.log",
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "{LAYERBOUND} summarize --out {output:q} {input:q} > {log:q} 2>&1"
