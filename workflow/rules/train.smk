# Stage 1: train every registry model named in the config, or import every loaded one (a `models:`
# entry with `source`); both write the same checkpoint + metrics sidecar.


rule train_model:
    wildcard_constraints:
        model=trained_models_regex(),
    output:
        checkpoint=PLAN.pattern("checkpoint"),
        metrics=PLAN.pattern("metrics"),
    params:
        # The resolved training job: a change to it (and only to it) retrains this model.
        job=training_job_json,
    log:
        PLAN.pattern("checkpoint", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("checkpoint", under="benchmarks", suffix=".tsv")
    # Snakemake lowers this to --cores on a smaller machine; a fixed number (not workflow.cores)
    # keeps `snakemake --report` and other core-less invocations working.
    threads: lb_threads.JOB_THREADS["train_model"]
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound train --model {wildcards.model:q} --job-json {params.job:q} --out {output.checkpoint:q}"
        " --threads {threads} > {log:q} 2>&1"


rule import_model:
    wildcard_constraints:
        model=loaded_models_regex(),
    input:
        # The weights file (when the entry names one): new weights re-import the model.
        import_model_inputs,
    output:
        checkpoint=PLAN.pattern("checkpoint"),
        metrics=PLAN.pattern("metrics"),
    params:
        # The resolved import job: the source spec, seed and evaluation settings.
        job=import_job_json,
    log:
        PLAN.pattern("checkpoint", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("checkpoint", under="benchmarks", suffix=".tsv")
    threads: lb_threads.JOB_THREADS["import_model"]
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound import-model --model {wildcards.model:q} --job-json {params.job:q} --out {output.checkpoint:q}"
        " --threads {threads} > {log:q} 2>&1"
