# Input functions of the rules: each asks the package's plan (layerbound.plan.Plan, made in the
# Snakefile as PLAN), which holds every path pattern, unit and figure of the validated config.
# Nothing is planned here.
import json
import os
import re
import shlex

from layerbound.plan import claims as lb_claims
from layerbound import config as lb_config
from layerbound.semirobust import mutual_info as lb_mutual_info
from layerbound.core import names as lb_names
from layerbound import plan as lb_plan
from layerbound.plan import startup as lb_startup
from layerbound.core import threads as lb_threads

# Where data lives and which device runs a job reach the `layerbound` command through the
# environment, not as parameters of a job: changing them re-runs nothing.
os.environ.update(lb_config.job_environment(config, workflow.basedir))


def _one_of(values):
    return "|".join(re.escape(str(v)) for v in values) or "(?!)"


wildcard_constraints:
    **{name: _one_of(values) for name, values in PLAN.wildcard_values().items()},
    p=r"\d+",
    chunk=r"\d+",


def _unit_of(wildcards):
    return PLAN.unit(wildcards.dataset, wildcards.pairset, wildcards.collision_method, wildcards.model,
                     wildcards.layer, wildcards.m)


def _figure_of(wildcards):
    return wildcards.dataset, wildcards.pairset, wildcards.collision_method


# --- train.smk ---


def trained_models_regex():
    return _one_of(PLAN.trained_models)


def loaded_models_regex():
    return _one_of(PLAN.loaded_models)


def import_model_inputs(wildcards):
    weights = config["models"][wildcards.model].get("weights")
    return [weights] if weights else []


def import_job_json(wildcards):
    if PLAN.specs[wildcards.model].dataset != wildcards.dataset:
        raise ValueError(f"model {wildcards.model!r} is loaded for {PLAN.specs[wildcards.model].dataset!r}")
    return json.dumps(lb_config.import_job(config, wildcards.model), sort_keys=True)


def training_job_json(wildcards):
    if PLAN.specs[wildcards.model].dataset != wildcards.dataset:
        raise ValueError(f"model {wildcards.model!r} is trained on {PLAN.specs[wildcards.model].dataset!r}")
    return lb_config.training_job_json(config, wildcards.model)


# --- collide.smk ---


def pairs_sample_args(wildcards):
    return lb_config.pairs_args(config)


def collide_shard_inputs(wildcards):
    return PLAN.shard_inputs(**wildcards)


def collide_options_json(wildcards):
    """The options that decide a shard's numbers (a change re-runs the shards, nothing else does)."""
    return lb_plan.collision_options(config, wildcards.collision_method).to_json()


def collide_revision(wildcards):
    """The method's algorithm revision and resolved defaults: a change re-runs the shards."""
    return lb_plan.collision_options(config, wildcards.collision_method).revision()


def collide_model_args(wildcards, input):
    unit = _unit_of(wildcards)
    if unit.model == lb_names.INPUT_MODEL:
        return ""
    args = f"--checkpoint {shlex.quote(input.checkpoint)} --arch {shlex.quote(unit.arch)}"
    # A registry network's padding (the shard checks the checkpoint's; "same" when not named).
    if getattr(PLAN.specs[unit.model], "padding", "same") not in ("same", None):
        args += f" --padding {PLAN.specs[unit.model].padding}"
    source = lb_plan.model_source(PLAN.specs, unit.model)   # the config's entry rebuilds the network
    return args + (f" --source-json {shlex.quote(json.dumps(source, sort_keys=True))}" if source else "")


def collide_merge_inputs(wildcards):
    return _unit_of(wildcards).shard_paths(PLAN.root)


def collide_projections(wildcards):
    return _unit_of(wildcards).projections


# --- losses.smk ---


def eps_grid_json(wildcards):
    return json.dumps(lb_plan.eps_grid(config["losses"]["eps"]).tolist())


# --- figures.smk ---


def figures_model_inputs(wildcards):
    return {"tables": PLAN.model_tables(*_figure_of(wildcards), wildcards.model, wildcards.m),
            "metrics": PLAN.model_file("metrics", wildcards.model)}


def figures_collision_methods_inputs(wildcards):
    return {"tables": PLAN.method_comparison_tables(wildcards.dataset, wildcards.pairset, wildcards.model, wildcards.m),
            "metrics": PLAN.model_file("metrics", wildcards.model)}


def figures_m_sweep_inputs(wildcards):
    return {"tables": PLAN.m_sweep_tables(*_figure_of(wildcards), wildcards.model),
            "metrics": PLAN.model_file("metrics", wildcards.model)}


def m_sweep_layer(wildcards):
    return PLAN.m_sweep_layer(*_figure_of(wildcards), wildcards.model)


def figures_collisions_inputs(wildcards):
    return {"merged": PLAN.collision_merged(*_figure_of(wildcards), wildcards.model, wildcards.m),
            "pairs": PLAN.path("pairs", dataset=wildcards.dataset, pairset=wildcards.pairset),
            "metrics": PLAN.model_file("metrics", wildcards.model)}


def figures_training_inputs(wildcards):
    models = PLAN.training_group(*_figure_of(wildcards), wildcards.arch, wildcards.m)
    return {"tables": PLAN.training_group_tables(*_figure_of(wildcards), wildcards.arch, wildcards.m),
            "metrics": [PLAN.model_file("metrics", model) for model in models]}


def figures_compare_eps(wildcards):
    return json.dumps([float(e) for e in config["figures"]["compare_eps"]])


def figures_fab_inputs(wildcards):
    return PLAN.fab_comparison_inputs(*_figure_of(wildcards), wildcards.model, wildcards.m)


def figures_summary_inputs(wildcards):
    return {"summary": PLAN.path("summary"),
            "metrics": [PLAN.model_file("metrics", model) for model in PLAN.figure_models()],
            "attacks": [PLAN.attack_files("attacks_summary", model) for model in PLAN.figure_models()
                        if model in PLAN.attack_models]}


# --- attacks.smk ---


def _attacked(wildcards):
    if PLAN.specs[wildcards.model].dataset != wildcards.dataset:
        raise ValueError(f"model {wildcards.model!r} is trained on {PLAN.specs[wildcards.model].dataset!r}")
    return wildcards.model


def attack_job_json(wildcards):
    return lb_config.attack_job_json(config, _attacked(wildcards))


def fab_pairs_job_json(wildcards):
    return lb_config.fab_pairs_job_json(config, _attacked(wildcards))


# --- semirobust.smk ---


def semirobust_inputs(wildcards):
    return PLAN.semirobust_inputs(wildcards.dataset, wildcards.study, wildcards.fb_layers)


def semirobust_job_json(wildcards):
    """The resolved Algorithm 1 job: a change to the study block (and only to it) re-runs it."""
    return lb_config.semirobust_job_json(config, wildcards.study, wildcards.fb_layers)


def semirobust_revision(wildcards):
    """The estimators' revisions: a change to an estimator's algorithm re-runs the study's jobs."""
    return json.dumps(lb_mutual_info.revisions(config["semirobust"]["estimators"]), sort_keys=True)


def semirobust_study_results(wildcards):
    return PLAN.semirobust_results(wildcards.study)


# --- claims.smk ---


def claims_job_json(wildcards):
    """The claims' rows on the run's files (layerbound.plan.claims): a change to them re-runs the table."""
    return json.dumps(lb_claims.job(PLAN), sort_keys=True)


def claims_inputs(wildcards):
    return lb_claims.input_files(lb_claims.job(PLAN))
