"""Paper 003's study in the workflow: the config block, its one-line failures, the plan, and the
study's CLI end to end on tiny networks (Table 1 checked against the JSON it is made from).
The real Snakemake run of the study (and what a change to its block re-runs) is in test_workflow.py."""

import json
import math

import pandas as pd
import pytest
import torch

from layerbound import cli, config
from layerbound import plan
from layerbound.models import architectures, checkpoint, registry as models
from layerbound.data import datasets as data
from layerbound.semirobust import mutual_info
from layerbound.semirobust import attacks as study_attacks
from layerbound.semirobust import split as study_split
from layerbound.core import seeds
from workflow_helpers import ROOT, default_config, job_counts, run_snakemake, write_config


def validated(mutate=None) -> dict:
    raw = default_config()
    if mutate is not None:
        mutate(raw)
    return config.validate(raw)


def study(raw) -> dict:
    return raw["semirobust"]["studies"]["medium"]


# --- the config block ----------------------------------------------------------------------------

@pytest.mark.parametrize("mutate,needle", [
    (lambda c: study(c).update(robust="medium_pgd3"),
     "semirobust.studies.medium.robust names 'medium_pgd3', which is not a key of models:"),
    (lambda c: study(c).update(fb_layers=[7]),
     "semirobust.studies.medium.fb_layers: medium cannot have f_b = its last 7 weight layers"),
    (lambda c: study(c).update(robust="medium_benign"),
     "semirobust.studies.medium.robust: model 'medium_benign' is trained benign"),
    (lambda c: study(c).update(regular="medium_trades2"),
     "semirobust.studies.medium.regular: model 'medium_trades2' is trained with trades"),
    (lambda c: c["models"]["medium_benign"].update(arch="large"),
     "semirobust.studies.medium: robust model 'medium_pgd2' and regular model 'medium_benign' differ in arch"),
    (lambda c: study(c).update(fb_layers=[0]), "semirobust.studies.medium.fb_layers[0]: 0 is less than the minimum of 1"),
    (lambda c: c["semirobust"].update(eval_attack={"method": "fab"}), "semirobust.eval_attack.method: 'fab' is not one of"),
    (lambda c: c["semirobust"].update(tolerance=2), "semirobust.tolerance: 2 is greater than the maximum of 1"),
    (lambda c: c["semirobust"].update(estimators=["kde"]), "semirobust.estimators[0]: 'kde' is not one of"),
])
def test_study_problems_are_one_line_naming_the_key(mutate, needle):
    with pytest.raises(config.ConfigError) as err:
        validated(mutate)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_loaded_model_is_refused_in_one_line(tmp_path):
    weights = tmp_path / "resnet18.pt"
    weights.write_bytes(b"")   # only its presence is checked before planning
    raw = default_config()
    raw["models"]["resnet"] = {"dataset": "mnist5k", "source": "torchvision", "arch": "resnet18",
                               "small_inputs": True, "weights": str(weights)}
    study(raw).update(regular="resnet")
    with pytest.raises(config.ConfigError) as err:
        config.validate(raw)
    assert str(err.value) == ("semirobust.studies.medium.regular: model 'resnet' is loaded from weights (source "
                              "torchvision); the study takes models the workflow trains (a registry arch, or a "
                              "torchvision / python source with a train block)")


def test_a_bad_study_stops_snakemake_before_planning_in_one_line(tmp_path):
    raw = default_config()
    study(raw).update(fb_layers=[3, 9])
    result = run_snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "bad.yaml", raw))
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == ["layerbound: semirobust.studies.medium.fb_layers: medium cannot have f_b = its last 9 weight "
                     "layers (f_b starts at a layer boundary and f_a keeps one layer); allowed [1, 2, 3, 4, 5, 6]"]


@pytest.mark.parametrize("arch", sorted(architectures.ARCHITECTURES))
def test_planned_fb_sizes_are_exactly_those_the_split_accepts(arch):
    # The torch-free check of the config and the split of the built network must agree.
    net = models.build(arch, (1, 28, 28), 10)
    accepted = []
    for k in range(0, 12):
        try:
            study_split.split_last(net, k)
            accepted.append(k)
        except ValueError:
            pass
    assert architectures.fb_layer_choices(arch) == accepted


def test_null_attack_keys_take_the_robust_models_training_attack():
    raw = validated()
    job = config.semirobust_job(raw, "medium", 3)
    train = raw["models"]["medium_pgd2"]["train"]
    own = {"norm": train["norm"], "eps": train["eps"], "steps": train["steps"], "step_size": train["step_size"],
           "schedule": "given", "options": {}}
    # config.yaml: f_b trained with adversary.py's PGD, evaluated with the attack module's PGD-l2.
    assert job["train_attack"] == {"method": "pgd", **own} and job["eval_attack"] == {"method": "pgd_l2", **own}
    raw = validated(lambda c: c["semirobust"].update(eval_attack={"steps": 20}))
    # A budget or step count of its own: the step is 2.5 eps / steps again.
    assert config.semirobust_job(raw, "medium", 3)["eval_attack"]["step_size"] == pytest.approx(2.5 * 2.0 / 20)


def test_a_studys_own_attack_keys_replace_the_blocks():
    def two_budgets(c):
        c["semirobust"]["studies"]["wide"] = {"robust": "medium_pgd2", "regular": "medium_benign", "fb_layers": [2],
                                             "eval_attack": {"eps": 3.0}}
        c["semirobust"]["eval_attack"] = {"method": "pgd_l2", "steps": 5}
    raw = validated(two_budgets)
    own, block = config.semirobust_job(raw, "wide", 2)["eval_attack"], config.semirobust_job(raw, "medium", 2)["eval_attack"]
    assert (own["method"], own["eps"], own["steps"]) == ("pgd_l2", 3.0, 5) and own["step_size"] == pytest.approx(2.5 * 3 / 5)
    assert (block["method"], block["eps"], block["steps"]) == ("pgd_l2", 2.0, 5)
    with pytest.raises(config.ConfigError) as err:
        validated(lambda c: study(c).update(eval_attack={"method": "pgd_linf"}))
    assert str(err.value).startswith("semirobust.studies.medium.eval_attack.eps: the robust model is trained in l2")


def test_the_study_job_depends_on_the_study_block_and_no_other_job_does():
    base = validated()
    changed = validated(lambda c: c["semirobust"].update(trials=5))
    assert config.semirobust_job_json(base, "medium", 2) != config.semirobust_job_json(changed, "medium", 2)
    for model in base["models"]:
        assert config.training_job_json(base, model) == config.training_job_json(changed, model)
    assert plan.Plan(base).all_targets() == plan.Plan(changed).all_targets()


def test_default_config_plans_one_run_per_fb_size_then_table_and_figures(tmp_path):
    result = run_snakemake(tmp_path, "-n", configfile=ROOT / "config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    sizes = default_config()["semirobust"]["studies"]["medium"]["fb_layers"]
    assert counts["semirobust_run"] == len(sizes)
    assert counts["semirobust_table"] == counts["semirobust_figure_studies"] == 1
    assert counts["semirobust_figure_fb"] == (1 if len(sizes) > 1 else 0)
    for k in sizes:
        assert f"results/semirobust/mnist5k/medium/fb{k}.json" in result.stdout
    assert "results/semirobust/table1.csv" in result.stdout


def test_no_study_plans_no_study_job():
    raw = validated(lambda c: c.pop("semirobust"))
    assert plan.Plan(raw).semirobust_targets() == []


# --- the CLI end to end on tiny networks ---------------------------------------------------------

TINY = {"trials": 2, "epochs": 2, "tolerance": 1.0, "train_examples": 200, "test_examples": 120, "batch_size": 100,
        "train_attack": {"steps": 2}, "eval_attack": {"method": "pgd_l2", "steps": 3},
        "estimators": ["ksg", "edge_paper003", "edge"]}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """fcnn_smaller checkpoints (the robust one 'PGD-trained' by its spec, both at random weights:
    the CLI does not care how they were trained) and one Algorithm 1 run through `layerbound`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    workdir = tmp_path_factory.mktemp("semirobust")
    raw = {"models": {"fc_benign": {"dataset": "mnist5k", "arch": "fcnn_smaller", "train": {"method": "benign"}},
                      "fc_pgd": {"dataset": "mnist5k", "arch": "fcnn_smaller",
                                 "train": {"method": "pgd", "norm": "l2", "eps": 1.0, "steps": 3}}},
           "semirobust": {"studies": {"tiny": {"robust": "fc_pgd", "regular": "fc_benign", "fb_layers": [1, 2]}}, **TINY}}
    configfile = write_config(workdir / "tiny.yaml", raw)
    raw = config.validate(raw)
    for i, name in enumerate(("fc_pgd", "fc_benign")):
        torch.manual_seed(i)
        checkpoint.save(workdir / f"{name}.pt", models.build("fcnn_smaller", (1, 28, 28), 10), {"model": name})
    out = {}
    for k in (1, 2):
        out[k] = workdir / f"fb{k}.json"
        cli.main(["semirobust", "run", "--configfile", str(configfile), "--study", "tiny", "--fb-layers", str(k),
                  "--robust", str(workdir / "fc_pgd.pt"), "--regular", str(workdir / "fc_benign.pt"),
                  "--out", str(out[k]), "--device", "cpu", "--no-progress"])
    csv, html = workdir / "table1.csv", workdir / "table1.html"
    cli.main(["semirobust", "table", "--csv", str(csv), "--html", str(html), str(out[1]), str(out[2])])
    cli.main(["semirobust", "figure", "fb", "--png", str(workdir / "fb.png"), str(out[1]), str(out[2])])
    yield {"workdir": workdir, "config": raw, "records": {k: json.loads(p.read_text()) for k, p in out.items()},
           "table": pd.read_csv(csv), "html": html.read_text()}
    torch.set_num_threads(threads)


def test_study_json_holds_algorithm1_as_the_paper_defines_it(tiny_study):
    record = tiny_study["records"][2]
    assert record["f_b"] == ["fc2", "logits"] and record["f_a"] == ["fc1"]
    assert record["layer_pairs"] == [["fc1", "fc2"], ["fc2", "logits"]]
    # tolerance k = 1: every trial meets Acc* - Acc <= k after its first epoch and stops there.
    assert all(t["accuracies"] and len(t["accuracies"]) == 1 and t["reached"] for t in record["trials"])
    finals = [t["accuracies"][-1] for t in record["trials"]]
    assert record["best_accuracy"] == max(finals) and record["best_trial"] == finals.index(max(finals))
    assert record["difference"] == pytest.approx(record["best_accuracy"] - record["acc_star"])
    # "edge" and "edge_paper003" share a prefix: each keeps its own values.
    assert record["estimator_revisions"] == mutual_info.revisions(["ksg", "edge_paper003", "edge"])
    assert record["rho"]["edge"] != record["rho"]["edge_paper003"]
    for estimator in ("ksg", "edge_paper003", "edge"):
        per_trial = [t["mi"][estimator] for t in record["trials"]]
        assert record["rho"][estimator] == {tap: min(m[tap] for m in per_trial) for tap in ("fc2", "logits")}
        assert record["rho_best"][estimator] == per_trial[record["best_trial"]]
    assert record["test_examples"] == 120 and sum(record["test_per_class"].values()) == 120


def test_acc_star_and_acc_sr_are_the_attacked_accuracies_of_the_right_networks(tiny_study):
    # Recomputed here from the checkpoints: Acc* of the robust network, Acc_sr of its f_a with the
    # regular f_b, under the evaluation attack with the same seed.
    record, workdir = tiny_study["records"][1], tiny_study["workdir"]
    robust, regular = checkpoint.load(workdir / "fc_pgd.pt"), checkpoint.load(workdir / "fc_benign.pt")
    x, y = data.load("mnist5k", "test")
    x, y = x[:120], y[:120]
    attack = study_attacks.make_attack(record["eval_attack"])
    mixed = checkpoint.load(workdir / "fc_pgd.pt")
    study_split.load_f_b(mixed, regular, study_split.split_last(mixed, 1))
    accuracies = []
    for net in (robust, mixed):
        torch.manual_seed(seeds.derive(f"{record['job']['seed']}/semirobust/eval"))
        accuracies.append(study_attacks.adversarial_accuracy(net, x, y, attack)[0])
    assert [record["acc_star"], record["acc_sr"]] == accuracies
    assert record["eval_attack"]["steps"] == 3 and record["train_attack"]["steps"] == 2


def test_table1_rows_are_the_json_results(tiny_study):
    table, records = tiny_study["table"], tiny_study["records"]
    assert list(table.columns[:6]) == ["study", "model", "dataset", "robust", "regular", "fb_layers"]
    assert len(table) == 2 * 3   # two f_b sizes x three estimators
    for _, row in table.iterrows():
        record = records[int(row["fb_layers"])]
        assert row["model"] == "fcnn_smaller" and row["dataset"] == "mnist5k"
        assert row["acc_star"] == pytest.approx(record["acc_star"], abs=1e-6)
        assert row["acc_sr"] == pytest.approx(record["acc_sr"], abs=1e-6)
        assert row["acc_best"] == pytest.approx(record["best_accuracy"], abs=1e-6)
        assert row["difference"] == pytest.approx(row["acc_best"] - row["acc_star"], abs=2e-6)
        best = record["rho_best"][row["estimator"]]
        assert row["rho_n"] == pytest.approx(best["logits"], rel=1e-5, abs=1e-6)
        if row["fb_layers"] == 2:
            assert row["rho_n-1"] == pytest.approx(best["fc2"], rel=1e-5, abs=1e-6)
        else:
            assert math.isnan(row["rho_n-1"])   # f_b = the logits alone has one layer pair
    html = tiny_study["html"]
    # Evaluated with the attack module's PGD-l2, f_b trained with adversary.py's.
    assert "PGD-l2 (torchattacks) eps 1 (3 steps of 0.833, random start)" in html and "120" in html
    assert "PGD-l2 eps 1 (2 steps of 1.25, random start, adversary.py)" in html
    assert (table["eval_eps"] == 1.0).all()


def test_a_file_that_is_no_study_result_fails_in_one_line(tiny_study, tmp_path, capsys):
    bogus = tmp_path / "bogus.json"
    bogus.write_text(json.dumps({"study": "x"}))
    with pytest.raises(SystemExit):
        cli.main(["semirobust", "table", "--csv", str(tmp_path / "t.csv"), "--html", str(tmp_path / "t.html"), str(bogus)])
    err = capsys.readouterr().err.strip()
    assert err.startswith("layerbound semirobust: error:") and "is not a semirobust study result" in err
    assert "\n" not in err


def test_paper003_config_plans_its_grid_and_no_collision_search(tmp_path):
    configfile = ROOT / "config" / "paper003.yaml"
    result = run_snakemake(tmp_path, "-n", configfile=configfile)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    paper = config.load(configfile)
    studies = paper["semirobust"]["studies"]
    # Per architecture and dataset: benign + PGD at 8, 16, 32 / 255, all trained (none imported).
    assert counts["train_model"] == len(paper["models"]) == 3 * 3 * 4 and "import_model" not in counts
    assert counts["semirobust_run"] == sum(len(s["fb_layers"]) for s in studies.values()) == 27 + 3
    assert counts["semirobust_figure_fb"] == 1   # Figure 2: ResNet50 on CIFAR-10 at 4, 8, 12, 16
    sizes = {(paper["models"][s["robust"]]["arch"], tuple(s["fb_layers"])) for s in studies.values()}
    assert sizes == {("alexnet", (4,)), ("vgg16_bn", (12,)), ("resnet50", (16,)), ("resnet50", (4, 8, 12, 16))}
    assert all(m["source"] == "torchvision" and m["small_inputs"] and "train" in m for m in paper["models"].values())
    assert not {"collide_shard", "losses_summary", "figures_summary"} & set(counts)
    assert {paper["models"][s["robust"]]["dataset"] for s in studies.values()} == {"cifar10", "cifar100", "imagenette"}
    # One study per dataset and budget: trained, retrained and evaluated at the same eps, with the
    # paper's 10, 20, 36 steps of 1/255, evaluated with AutoAttack-linf.
    budgets = {}
    for name in studies:
        job = config.semirobust_job(paper, name, studies[name]["fb_layers"][0])
        train, evaluate = job["train_attack"], job["eval_attack"]
        assert evaluate["method"] == "autoattack_linf" and evaluate["eps"] == train["eps"]
        assert train["step_size"] == 1 / 255 and paper["models"][job["robust"]]["train"]["eps"] == train["eps"]
        budgets.setdefault(job["dataset"], set()).add((round(train["eps"] * 255), train["steps"]))
    assert all(b == {(8, 10), (16, 20), (32, 36)} for b in budgets.values()) and len(budgets) == 3
