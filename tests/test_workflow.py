"""The Snakemake workflow: planning (dry runs) and, once, a real end-to-end run of a tiny config."""

import math

import pytest
import yaml

from workflow_helpers import ROOT, default_config, job_counts, run_snakemake, write_config


def test_default_config_plans_one_training_job_per_model(tmp_path):
    result = run_snakemake(tmp_path, "-n", configfile=ROOT / "config.yaml")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    models = default_config()["models"]
    assert counts["train_model"] == len(models)
    # The attack stage: a robust-accuracy table and FAB points per model, a FAB figure per model's logits.
    assert counts["attacks_model"] == counts["attacks_fab_pairs"] == counts["figures_fab"] == len(models)
    for name in models:
        assert f"results/attacks/mnist5k/{name}.csv" in result.stdout
        assert f"results/figures/mnist5k/c3v7-S8-seed0/jacobian/fab/{name}/m10.png" in result.stdout


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda c: c.update(modles={}), "'modles' was unexpected"),
        (lambda c: c["models"]["medium_pgd2"]["train"].update(eps="two"), "'two' is not of type 'number'"),
        (lambda c: c["models"]["medium_benign"].update(arch="resnet9"), "'resnet9' is not one of"),
        (lambda c: c["models"]["medium_benign"]["train"].update(method="fgsm"), "'fgsm' is not one of"),
    ],
)
def test_bad_config_fails_at_start_naming_the_key(tmp_path, mutate, needle):
    config = default_config()
    mutate(config)
    result = run_snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "bad.yaml", config))
    assert result.returncode != 0
    assert needle in result.stdout + result.stderr


def test_adversarial_model_without_budget_fails_naming_the_model(tmp_path):
    config = default_config()
    del config["models"]["medium_pgd2"]["train"]["eps"]
    result = run_snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "bad.yaml", config))
    assert result.returncode != 0
    assert "models.medium_pgd2" in result.stdout + result.stderr


@pytest.mark.parametrize("name,dataset", [("paper_mnist", "mnist"), ("paper_cifar10", "cifar10")])
def test_paper_config_replaces_the_default_and_plans_the_paper_grid(tmp_path, name, dataset):
    configfile = ROOT / "config" / f"{name}.yaml"
    paper = yaml.safe_load(configfile.read_text())
    result = run_snakemake(tmp_path, "-n", configfile=configfile)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    # 3 architectures x 3 training methods, none of the default experiment's mnist5k models.
    assert counts["train_model"] == len(paper["models"]) == 9
    assert "mnist5k" not in result.stdout
    assert f"results/{name}/models/{dataset}/medium_benign.pt" in result.stdout   # the config's own folder
    # Every layer of every model plus the two input baselines, each with its own merged file.
    taps = {"small": 4, "medium": 7, "large": 7}
    # The m sweep (MNIST: Medium PGD-2's first layer at 5 more m) adds one merged file per new m.
    sweep_units = sum(len(set(s["m"]) - {10}) for s in paper["collision"].get("sweeps", []))
    assert counts["collide_merge"] == 3 * sum(taps.values()) + 2 + sweep_units
    assert counts.get("figures_m_sweep", 0) == (1 if sweep_units else 0)
    assert counts["losses_table"] == counts["collide_merge"]


@pytest.mark.parametrize("configfile", ["config.yaml", "config/paper002_fcnn.yaml", "config/paper_mnist.yaml",
                                        "config/paper_cifar10.yaml", "config/paper001_fig7.yaml",
                                        "config/repro_mnist5k.yaml"])
def test_claims_table_is_planned_after_every_merged_file_it_reads(tmp_path, configfile):
    from layerbound.plan import claims as claim_plan
    from layerbound import config
    from layerbound import plan

    planned = plan.Plan(config.load(ROOT / configfile))
    # The table lives under the config's own results folder, like every output of its run.
    result = run_snakemake(tmp_path, "-n", planned.path("claims"), configfile=ROOT / configfile)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["claims_table"] == counts["claims_job"] == 1
    job = claim_plan.job(planned)
    # Nothing exists yet: the dry run plans every merged file the table reads (and only those).
    assert counts["collide_merge"] == len(job["units"])
    # One FAB point table per attacked model, read by both of its FAB rows (claims.FAB_LOSSES).
    assert counts.get("attacks_fab_pairs", 0) == len({inst["fab"] for inst in job["instances"] if inst["fab"]})


def tiny_config() -> dict:
    """The default experiment shrunk to a couple of minutes: two small FCNNs, S = 4, m = 5."""
    return {
        "seed": 0,
        "training": {"epochs": 1, "batch_size": 128, "lr": 0.05},
        "evaluation": {"norm": "l2", "eps": 1.5, "steps": 5, "examples": 200},
        "models": {
            "fcnn_benign": {"dataset": "mnist5k", "arch": "fcnn_smaller", "train": {"method": "benign"}},
            "fcnn_pgd": {"dataset": "mnist5k", "arch": "fcnn_smaller",
                         "train": {"method": "pgd", "norm": "l2", "eps": 1.5, "steps": 3}},
        },
        "pairs": {"classes": [3, 7], "per_class": 4},
        "collision": {"m": [5], "projections": 2, "chunk_size": 8, "batch_size": 16, "keep_points": 2},
        "losses": {"eps": {"start": 0.0, "stop": 4.0, "num": 9}},
        "figures": {"compare_eps": [1.0, 2.0]},
        "attacks": {"examples": 20, "batch_size": 20, "eps": {"l2": [0.5, 1.5], "linf": [0.1]},
                    "run": ["fgsm", "pgd_l2", "fab_l2", "autoattack_l2"], "pgd": {"steps": 5}, "fab": {"steps": 5},
                    "autoattack": {"steps": 3, "targets": 3, "square_queries": 10}, "fab_comparison": {"steps": 10}},
        # Paper 003's study on the two FCNNs: f_b = the logits, then fc2 and the logits.
        "semirobust": {"studies": {"fcnn": {"robust": "fcnn_pgd", "regular": "fcnn_benign", "fb_layers": [1, 2]}},
                       "trials": 2, "epochs": 1, "train_examples": 500, "test_examples": 200,
                       "train_attack": {"steps": 2}},
    }


SHARD_GLOB = "results/shards/**/*.h5"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real run of the tiny config, first interrupted after some shards, then resumed."""
    workdir = tmp_path_factory.mktemp("workflow")
    configfile = write_config(workdir / "tiny.yaml", tiny_config())
    plan = run_snakemake(workdir, "-n", configfile=configfile)
    total_shards = job_counts(plan.stdout)["collide_shard"]

    # "Interrupted": only the first model has been trained and searched when the run stops.
    first_targets = [f"results/distances/mnist5k/c3v7-S4-seed0/jacobian/fcnn_benign/{layer}/m5.h5"
                     for layer in ("fc1", "fc2", "logits")]
    first = run_snakemake(workdir, "--cores", "2", *first_targets, configfile=configfile)
    assert first.returncode == 0, first.stderr[-5000:]
    done = sorted(str(p.relative_to(workdir)) for p in workdir.glob(SHARD_GLOB))
    assert 0 < len(done) < total_shards
    mtimes = {p: (workdir / p).stat().st_mtime_ns for p in done}

    resumed_plan = run_snakemake(workdir, "-n", configfile=configfile)
    resumed = run_snakemake(workdir, "--cores", "2", configfile=configfile)
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    return {"workdir": workdir, "configfile": configfile, "total_shards": total_shards, "done_first": done,
            "mtimes": mtimes, "resumed_plan": resumed_plan.stdout}


@pytest.mark.slow
def test_end_to_end_run_trains_searches_and_writes_losses_and_figures(finished_run):
    workdir = finished_run["workdir"]
    from layerbound.models import checkpoint
    from layerbound.bounds import losses

    for name in ("fcnn_benign", "fcnn_pgd"):
        path = workdir / "results" / "models" / "mnist5k" / f"{name}.pt"
        model = checkpoint.load(path, expect={"arch": "fcnn_smaller", "input_shape": (1, 28, 28)})
        assert model.taps == ["fc1", "fc2", "logits"]
    # One epoch: the benign model learns; the PGD one (no warm-up here) need only beat chance.
    assert checkpoint.load_metrics(workdir / "results/models/mnist5k/fcnn_benign.pt")["clean_test_accuracy"] > 0.5
    assert checkpoint.load_metrics(workdir / "results/models/mnist5k/fcnn_pgd.pt")["clean_test_accuracy"] > 0.12
    summary = losses.read_table(workdir / "results" / "summary.csv")
    # 2 models x 3 layers + 2 baselines, 9 budgets each; losses within [0, log 2] and [0, 1/2].
    assert len(summary) == (2 * 3 + 2) * 9
    assert summary["ce_mean"].between(0, math.log(2) + 1e-12).all()
    assert summary["zero_one_mean"].between(0, 0.5).all()
    figures = list((workdir / "results" / "figures").rglob("*.png"))
    assert len(figures) >= 6 and all(f.stat().st_size > 1000 for f in figures)
    assert len(list(workdir.glob(SHARD_GLOB))) == finished_run["total_shards"]
    # The claims table: paper 001's layer claims on both FCNNs (every layer projected at m = 5), the
    # training-method claim at the logits, the FAB claim per model; the rest not tested.
    import pandas as pd

    from layerbound.bounds import claim_statistics, claims

    table = pd.read_csv(workdir / "results" / "claims.csv")
    assert list(table.columns) == claim_statistics.CLAIM_COLUMNS
    tested = table.loc[table["verdict"] != "not tested"]
    assert sorted(tested.loc[tested["claim"] == "001_loss_falls_with_depth", "models"]) == ["fcnn_benign", "fcnn_pgd"]
    assert list(tested.loc[tested["claim"] == "001_benign_least_robust", "models"]) == ["fcnn_benign, fcnn_pgd"]
    fab = tested.loc[tested["claim"] == "001_fab_above_collision"]
    assert len(fab) == 4   # two attacked models, each with both FAB losses (claims.FAB_LOSSES)
    assert sorted(fab["note"].str.split(";").str[0]) == sorted(2 * list(claims.FAB_LOSSES.values()))
    assert set(tested["verdict"]) <= {"holds", "contradicted", "undecided"}
    assert (tested["lo"] <= tested["value"]).all() and (tested["value"] <= tested["hi"]).all()
    assert "001_distance_grows_with_depth" in (workdir / "results" / "report" / "claims.html").read_text()


@pytest.mark.slow
def test_interrupted_run_resumes_without_redoing_finished_shards(finished_run):
    workdir = finished_run["workdir"]
    counts = job_counts(finished_run["resumed_plan"])
    assert counts["train_model"] == 1  # the model the interrupted run had not reached
    assert counts["collide_shard"] == finished_run["total_shards"] - len(finished_run["done_first"])
    for path, mtime in finished_run["mtimes"].items():
        assert (workdir / path).stat().st_mtime_ns == mtime  # untouched by the resumed run


@pytest.mark.slow
def test_finished_run_has_nothing_left_to_do(finished_run):
    again = run_snakemake(finished_run["workdir"], "-n", configfile=finished_run["configfile"])
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def dry_run_with(finished_run, mutate) -> dict[str, int]:
    """The jobs an edit of the run's config file would re-run (the file is restored after)."""
    config = tiny_config()
    mutate(config)
    configfile = finished_run["configfile"]
    saved = configfile.read_text()
    try:
        write_config(configfile, config)
        result = run_snakemake(finished_run["workdir"], "-n", configfile=configfile)
    finally:
        configfile.write_text(saved)
    assert result.returncode == 0, result.stderr[-3000:]
    return job_counts(result.stdout)


@pytest.mark.slow
def test_new_eps_grid_reruns_only_losses_and_figures(finished_run):
    counts = dry_run_with(finished_run, lambda c: c["losses"].update(eps=[0.0, 0.5, 1.0, 3.0]))
    assert counts["losses_table"] == 2 * 3 + 2
    assert counts["claims_job"] == counts["claims_table"] == 1   # the claims' statistics use the grid
    assert {rule for rule in counts if rule != "all"} <= {"losses_table", "losses_summary", "claims_job",
                                                          "claims_table"} | {
        rule for rule in counts if rule.startswith("figures_")}
    assert not {"train_model", "pairs_sample", "collide_shard", "collide_merge"} & set(counts)


@pytest.mark.slow
def test_attack_stage_writes_tables_headlines_and_the_fab_comparison(finished_run):
    import json

    import pandas as pd

    results = finished_run["workdir"] / "results"
    for name, eps in (("fcnn_benign", 1.5), ("fcnn_pgd", 1.5)):
        table = pd.read_csv(results / "attacks" / "mnist5k" / f"{name}.csv")
        assert set(table["attack"]) == {"fgsm", "pgd_l2", "fab_l2", "autoattack_l2", "any"}
        assert (table["examples"] == 20).all()
        summary = json.loads((results / "attacks" / "mnist5k" / f"{name}.json").read_text())
        head = table.loc[(table["attack"] == "autoattack_l2") & (table["eps"] == eps), "robust_accuracy"].iloc[0]
        assert summary["headline"]["eps"] == eps and summary["headline"]["robust_accuracy"] == head
        curves = pd.read_csv(results / "attacks/mnist5k/c3v7-S4-seed0/jacobian/fab_vs_collision" / name / "m5.csv")
        assert len(curves) == 9 and curves["examples"].eq(8).all()
        assert (results / "figures/mnist5k/c3v7-S4-seed0/jacobian/fab" / name / "m5.png").stat().st_size > 1000
    summary = pd.read_csv(results / "report" / "layer_summary.csv")
    assert summary["headline_robust_acc"].notna().all()
    assert "AutoAttack-l2" in (results / "report" / "layer_summary.html").read_text()


@pytest.mark.slow
def test_new_attack_settings_rerun_only_what_reads_them(finished_run):
    # The robust-accuracy tables (and the summary, which shows their headline), nothing else.
    counts = dry_run_with(finished_run, lambda c: c["attacks"]["pgd"].update(steps=6))
    assert {rule for rule in counts if rule != "all"} == {"attacks_model", "figures_summary"}
    assert counts["attacks_model"] == 2
    # The FAB points on the pair set, their figures and the claims table (its FAB claim), nothing else.
    counts = dry_run_with(finished_run, lambda c: c["attacks"]["fab_comparison"].update(steps=11))
    assert {rule for rule in counts if rule != "all"} == {"attacks_fab_pairs", "figures_fab", "claims_table"}
    assert counts["attacks_fab_pairs"] == counts["figures_fab"] == 2


@pytest.mark.slow
def test_new_projection_schedules_only_its_shards(finished_run):
    counts = dry_run_with(finished_run, lambda c: c["collision"].update(projections=3))
    # One more projection for each projected unit (6 layers + input_rp), two pair chunks each.
    assert counts["collide_shard"] == 7 * 2
    assert counts["collide_merge"] == 7
    assert "train_model" not in counts and "pairs_sample" not in counts


@pytest.mark.slow
def test_new_model_schedules_only_its_training_and_shards(finished_run):
    def add_model(config):
        config["models"]["fcnn_trades"] = {"dataset": "mnist5k", "arch": "fcnn_smaller",
                                           "train": {"method": "trades", "norm": "l2", "eps": 1.5, "steps": 3}}
    counts = dry_run_with(finished_run, add_model)
    assert counts["train_model"] == 1
    assert counts["collide_shard"] == 3 * 2 * 2  # its 3 layers x 2 projections x 2 chunks
    assert counts["collide_merge"] == 3


@pytest.mark.slow
def test_study_writes_table1_and_its_figures(finished_run):
    import pandas as pd

    results = finished_run["workdir"] / "results"
    table = pd.read_csv(results / "semirobust" / "table1.csv")
    assert sorted(table["fb_layers"].unique()) == [1, 2] and set(table["estimator"]) == {"edge_paper003", "ksg"}
    assert (table["difference"] - (table["acc_best"] - table["acc_star"])).abs().max() < 1e-5
    for name in ("rho_by_study", "rho_by_fb/fcnn"):
        assert (results / "figures" / "semirobust" / f"{name}.png").stat().st_size > 1000


@pytest.mark.slow
def test_study_block_change_reruns_only_the_study(finished_run):
    counts = dry_run_with(finished_run, lambda c: c["semirobust"].update(trials=3))
    assert counts["semirobust_run"] == 2
    assert set(counts) - {"all"} == {"semirobust_run", "semirobust_table", "semirobust_figure_studies",
                                     "semirobust_figure_fb"}


@pytest.mark.slow
def test_deleted_shard_is_the_only_shard_recomputed(finished_run):
    workdir = finished_run["workdir"]
    victim = sorted(workdir.glob(SHARD_GLOB))[-1]
    saved = victim.read_bytes()
    victim.unlink()
    try:
        result = run_snakemake(workdir, "-n", configfile=finished_run["configfile"])
        counts = job_counts(result.stdout)
        assert counts["collide_shard"] == 1
        assert counts["collide_merge"] == 1
        assert "train_model" not in counts
    finally:
        victim.write_bytes(saved)


@pytest.mark.slow
def test_report_is_built_with_every_figure(finished_run):
    workdir = finished_run["workdir"]
    report = workdir / "report.html"
    result = run_snakemake(workdir, "--report", str(report), configfile=finished_run["configfile"])
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text(errors="replace")
    for model in ("fcnn_benign", "fcnn_pgd"):
        assert model in html
    assert "layer_summary" in html
    assert "table1" in html and "rho_by_study" in html
