# Paper 003, subnetwork robustness: Algorithm 1 on the trained checkpoints of a study (the robust
# model and the benign one of the same architecture and dataset), one job per (study, f_b size),
# then Table 1 and Figures 1-2 from their JSON results. The plan (layerbound.plan.Plan.semirobust_*)
# decides which runs exist; a change to the `semirobust` block re-runs these jobs only.


localrules:
    semirobust_table,


rule semirobust_run:
    input:
        unpack(semirobust_inputs),
    output:
        PLAN.pattern("semirobust"),
    params:
        job=semirobust_job_json,
        revision=semirobust_revision,
    log:
        PLAN.pattern("semirobust", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("semirobust", under="benchmarks", suffix=".tsv")
    # Retraining f_b beside other jobs (layerbound.core.threads; a profile lowers or raises it).
    threads: lb_threads.JOB_THREADS["semirobust_run"]
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound semirobust run --job-json {params.job:q} --robust {input.robust:q}"
        " --regular {input.regular:q} --out {output:q} --threads {threads} > {log:q} 2>&1"


rule semirobust_table:
    input:
        PLAN.semirobust_results(),
    output:
        csv=report(
            PLAN.pattern("semirobust_table_csv"),
            caption="../report/semirobust_table.rst",
            category="8. Subnetwork robustness",
            labels={"table": "Table 1 (CSV)"},
        ),
        html=report(
            PLAN.pattern("semirobust_table_html"),
            caption="../report/semirobust_table.rst",
            category="8. Subnetwork robustness",
            labels={"table": "Table 1"},
        ),
    log:
        PLAN.pattern("semirobust_table_csv", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("semirobust_table_csv", under="benchmarks", suffix=".tsv")
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound semirobust table --csv {output.csv:q} --html {output.html:q} {input:q} > {log:q} 2>&1"


rule semirobust_figure_studies:
    input:
        PLAN.semirobust_results(),
    output:
        png=report(
            PLAN.pattern("figure_rho_studies", suffix=".png"),
            caption="../report/rho_studies.rst",
            category="8. Subnetwork robustness",
            labels={"figure": "rho against depth, every study (Fig. 1)"},
        ),
        pdf=PLAN.pattern("figure_rho_studies", suffix=".pdf"),
    log:
        PLAN.pattern("figure_rho_studies", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("figure_rho_studies", under="benchmarks", suffix=".tsv")
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound semirobust figure studies --png {output.png:q} --pdf {output.pdf:q} {input:q} > {log:q} 2>&1"


rule semirobust_figure_fb:
    input:
        semirobust_study_results,
    output:
        png=report(
            PLAN.pattern("figure_rho_fb", suffix=".png"),
            caption="../report/rho_fb.rst",
            category="8. Subnetwork robustness",
            labels={"study": "{study}", "figure": "rho against depth by f_b size (Fig. 2)"},
        ),
        pdf=PLAN.pattern("figure_rho_fb", suffix=".pdf"),
    log:
        PLAN.pattern("figure_rho_fb", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("figure_rho_fb", under="benchmarks", suffix=".tsv")
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound semirobust figure fb --png {output.png:q} --pdf {output.pdf:q} {input:q} > {log:q} 2>&1"
