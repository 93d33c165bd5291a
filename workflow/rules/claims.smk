# Stage 5: the claims table (docs/claims.md). Each finding of papers 001 and 002 the config can test,
# with its statistic on the merged distance files, a paired bootstrap interval and a verdict.
# layerbound.plan.claims decides the rows (claims_job writes them down); only a change to them, to the
# eps grid or to the bootstrap, or new distances, re-runs the table.


localrules:
    claims_job,


rule claims_job:
    output:
        PLAN.pattern("claims_job"),
    params:
        job=claims_job_json,
    log:
        PLAN.pattern("claims_job", under="logs", suffix=".log"),
    run:
        lb_claims.write_job(params.job, output[0], log[0])


rule claims_table:
    input:
        job=PLAN.pattern("claims_job"),
        files=claims_inputs,
    output:
        csv=report(
            PLAN.pattern("claims"),
            caption="../report/claims.rst",
            category="0. Summary",
            labels={"table": "the papers' claims (CSV)"},
        ),
        html=report(
            PLAN.pattern("claims_html"),
            caption="../report/claims.rst",
            category="0. Summary",
            labels={"table": "the papers' claims"},
        ),
    log:
        PLAN.pattern("claims", under="logs", suffix=".log"),
    benchmark:
        PLAN.pattern("claims", under="benchmarks", suffix=".tsv")
    conda:
        "../../envs/layerbound.yaml"
    shell:
        "python -m layerbound claims --job-file {input.job:q} --csv {output.csv:q} --html {output.html:q} > {log:q} 2>&1"
