# Stage 3: conflict graphs and optimal losses (SPEC 6). One loss table per merged distance file,
# then results/summary.csv. The eps grid is a rule parameter: changing it re-runs only this stage
# (and what reads its tables), never a collision shard.


def loss_table_path(unit):
    return (f"results/losses/{unit.dataset}/{unit.pairset}/{unit.method}/{unit.model}/"
            f"{unit.layer}/m{unit.m}.csv")


def losses_targets():
    return [loss_table_path(u) for u in COLLIDE_UNITS.values()]


def eps_grid_json(wildcards):
    return json.dumps(lb_losses.eps_grid(config["losses"]["eps"]).tolist())


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
