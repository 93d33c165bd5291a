# Stage 2: collision distances (SPEC 5, 7). A pair set per dataset, one job per shard (model, layer,
# m, projection, pair chunk), one merge per (model, layer, m). The grid is layerbound.shards.plan:
# every configured model and tap, plus the pseudo-model `input` (layers input, input_rp). The input
# functions and target list (collide_targets, collide_unit, ...) are in common.smk.

COLLIDE_UNITS = {(u.dataset, u.pairset, u.method, u.model, u.layer, str(u.m)): u for u in lb_shards.plan(config)}
COLLIDE_PAIRSET = lb_shards.pairset_name(config)
COLLIDE_CONSTRAINTS = {
    "pairset": re.escape(COLLIDE_PAIRSET),
    "method": _one_of({u.method for u in COLLIDE_UNITS.values()}),
    "model": _one_of({u.model for u in COLLIDE_UNITS.values()}),
    "layer": _one_of({u.layer for u in COLLIDE_UNITS.values()}),
    "m": _one_of({str(u.m) for u in COLLIDE_UNITS.values()}),
    "p": r"\d+",
    "chunk": r"\d+",
}


localrules: collide_merge, collide_all


rule collide_all:
    input:
        collide_targets(),


rule pairs_sample:
    output:
        "results/pairs/{dataset}/{pairset}.h5",
    params:
        args=pairs_sample_args,
    log:
        "results/logs/pairs/{dataset}/{pairset}.log",
    benchmark:
        "results/benchmarks/pairs/{dataset}/{pairset}.tsv"
    wildcard_constraints:
        pairset=COLLIDE_CONSTRAINTS["pairset"],
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "{LAYERBOUND} sample-pairs --dataset {wildcards.dataset:q} {params.args}"
        " --data-dir {config[data_dir]:q} {DOWNLOAD_FLAG} --out {output:q} > {log:q} 2>&1"


rule collide_shard:
    input:
        unpack(collide_shard_inputs),
    output:
        "results/shards/{dataset}/{pairset}/{method}/{model}/{layer}/m{m}/p{p}/c{chunk}.h5",
    params:
        options=collide_options_json,
        model_args=collide_model_args,
    log:
        "results/logs/collide/{dataset}/{pairset}/{method}/{model}/{layer}/m{m}/p{p}/c{chunk}.log",
    benchmark:
        "results/benchmarks/collide/{dataset}/{pairset}/{method}/{model}/{layer}/m{m}/p{p}/c{chunk}.tsv"
    wildcard_constraints:
        **COLLIDE_CONSTRAINTS,
    # One thread per shard: many shards run side by side (a profile may raise it for GPU jobs).
    threads: 1
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "{LAYERBOUND} collide-shard --pairs {input.pairs:q} {params.model_args}"
        " --model {wildcards.model:q} --layer {wildcards.layer:q} --m {wildcards.m} --projection {wildcards.p}"
        " --chunk {wildcards.chunk} --method {wildcards.method:q} --seed {config[seed]}"
        " --options-json {params.options:q} --device {config[device]:q} --threads {threads}"
        " --out {output:q} > {log:q} 2>&1"


rule collide_merge:
    input:
        collide_merge_inputs,
    output:
        "results/distances/{dataset}/{pairset}/{method}/{model}/{layer}/m{m}.h5",
    params:
        projections=collide_projections,
    log:
        "results/logs/merge/{dataset}/{pairset}/{method}/{model}/{layer}/m{m}.log",
    benchmark:
        "results/benchmarks/merge/{dataset}/{pairset}/{method}/{model}/{layer}/m{m}.tsv"
    wildcard_constraints:
        **{k: v for k, v in COLLIDE_CONSTRAINTS.items() if k not in ("p", "chunk")},
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "{LAYERBOUND} merge --projections {params.projections} --out {output:q} {input:q} > {log:q} 2>&1"
