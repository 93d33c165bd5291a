# Stage 2: collision distances (paper 001, Algorithm 1). A pair set per dataset, one job per shard
# (model, layer, m, projection, pair chunk), one merge per (model, layer, m). The grid is
# layerbound.plan.units: every configured model and tap, plus the pseudo-model `input`.


localrules:
    collide_merge,


rule pairs_sample:
    output:
        PLAN.pattern("pairs"),
    params:
        args=pairs_sample_args,
    log:
        PLAN.pattern("pairs", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("pairs", under="benchmarks", suffix=".tsv")
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound sample-pairs --dataset {wildcards.dataset:q} {params.args} --out {output:q} > {log:q} 2>&1"


rule collide_shard:
    input:
        unpack(collide_shard_inputs),
    output:
        PLAN.pattern("shard"),
    params:
        options=collide_options_json,
        revision=collide_revision,
        model_args=collide_model_args,
        seed=config["seed"],
    log:
        PLAN.pattern("shard", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("shard", under="benchmarks", suffix=".tsv")
    # One thread per shard: many shards run side by side (layerbound.core.threads; a profile may raise it).
    threads: lb_threads.JOB_THREADS["collide_shard"]
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound collide-shard --pairs {input.pairs:q} {params.model_args}"
        " --model {wildcards.model:q} --layer {wildcards.layer:q} --m {wildcards.m} --projection {wildcards.p}"
        " --chunk {wildcards.chunk} --collision-method {wildcards.collision_method:q} --seed {params.seed}"
        " --options-json {params.options:q} --threads {threads} --out {output:q} > {log:q} 2>&1"


rule collide_merge:
    input:
        collide_merge_inputs,
    output:
        PLAN.pattern("distances"),
    params:
        projections=collide_projections,
    log:
        PLAN.pattern("distances", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("distances", under="benchmarks", suffix=".tsv")
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound merge --projections {params.projections} --out {output:q} {input:q} > {log:q} 2>&1"
