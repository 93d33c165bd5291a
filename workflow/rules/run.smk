# The run record: which config file owns this results folder (layerbound.plan.startup). The first job of
# a run writes it; every start reads it, so another config file's run into the folder is refused.


localrules:
    run_record,


rule run_record:
    output:
        PLAN.pattern("run"),
    params:
        configfiles=CONFIG_FILES,
    log:
        PLAN.pattern("run", under="logs", suffix=".log"),
    run:
        lb_startup.write_record(output[0], params.configfiles)
