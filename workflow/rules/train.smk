# Stage 1: train every model named in the config (checkpoint + metrics sidecar).


rule train_model:
    output:
        checkpoint="results/models/{dataset}/{model}.pt",
        metrics="results/models/{dataset}/{model}.json",
    params:
        # The resolved training job: a change to it (and only to it) retrains this model.
        job=training_job_json,
    log:
        "results/logs/train/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{model}.tsv"
    # Snakemake lowers this to --cores on a smaller machine; a fixed number (not workflow.cores)
    # keeps `snakemake --report` and other core-less invocations working.
    threads: 8
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "{LAYERBOUND} train --model {wildcards.model:q} --job-json {params.job:q} --out {output.checkpoint:q}"
        # Where data lives and which device runs it are read from the config here, not params,
        # so changing them does not retrain finished models.
        " --data-dir {config[data_dir]:q} {DOWNLOAD_FLAG} --device {config[device]:q} --threads {threads}"
        " > {log:q} 2>&1"
