# Stage 5: evaluation attacks (torchattacks 3.5.1, see docs/attacks.md). Per model:
# the robust test accuracy under every configured attack and budget, with the headline
# (AutoAttack at the training budget) in a sidecar; and the FAB-l2 points of paper 001's
# Section 6.1 on the pair set's 2S examples (drawn against the optimal collision loss of layer
# logits by figures.smk's figures_fab). Each job's parameter is its resolved settings, so a change
# re-runs only the jobs it touches; none reads a collision file.


rule attacks_model:
    input:
        checkpoint=PLAN.pattern("checkpoint"),
    output:
        table=PLAN.pattern("attacks"),
        summary=PLAN.pattern("attacks_summary"),
    params:
        job=attack_job_json,
    log:
        PLAN.pattern("attacks", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("attacks", under="benchmarks", suffix=".tsv")
    # One thread: the attack jobs run beside the collision shards on a small machine.
    threads: lb_threads.JOB_THREADS["attacks_model"]
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound attack --checkpoint {input.checkpoint:q} --job-json {params.job:q}"
        " --out {output.table:q} --summary {output.summary:q} --threads {threads} > {log:q} 2>&1"


rule attacks_fab_pairs:
    input:
        checkpoint=PLAN.pattern("checkpoint"),
        pairs=PLAN.pattern("pairs"),
    output:
        PLAN.pattern("fab_pairs"),
    params:
        job=fab_pairs_job_json,
    log:
        PLAN.pattern("fab_pairs", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("fab_pairs", under="benchmarks", suffix=".tsv")
    threads: lb_threads.JOB_THREADS["attacks_fab_pairs"]
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound fab-pairs --checkpoint {input.checkpoint:q} --pairs {input.pairs:q}"
        " --job-json {params.job:q} --out {output:q} --threads {threads} > {log:q} 2>&1"

