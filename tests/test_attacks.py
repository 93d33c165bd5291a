"""The evaluation attacks (torchattacks behind layerbound.attacks.evaluate): closed forms on a linear
classifier, eps = 0, the "any attack" rows, the FAB comparison's curve, and how the attack stage is
installed and configured."""

import json
import math
import re
import subprocess
import sys
import tomllib

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from layerbound import config
from layerbound.attacks import info as attack_info, evaluate as attacks
from layerbound.bounds.fab_curve import fab_loss_curve
from workflow_helpers import ROOT, default_config

pytestmark = pytest.mark.usefixtures("one_thread")

# Cheap settings: the attacks' code paths, not their full strength.
OPTIONS = {"pgd": {"steps": 20, "step_factor": 2.5}, "bim": {"steps": 10, "step_factor": 1.25},
           "cw": {"steps": 30, "c": 10.0, "kappa": 0.0, "lr": 0.1},
           "fab": {"steps": 100, "restarts": 1, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9},
           "autoattack": {"steps": 5, "targets": 3, "square_queries": 20}}


def two_class_linear(n: int, seed: int = 0):
    """A 2-class linear classifier on 1 x 8 x 8 images whose boundary is the hyperplane
    w.(x - 1/2) = 0 through the middle of the box (w a unit vector): class 0 where w.(x - 1/2) > 0."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g)
    w /= w.norm()
    net = nn.Sequential(nn.Flatten(), nn.Linear(n, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.stack([w, -w]))
        net[1].bias.copy_(torch.stack([-(w * 0.5).sum(), (w * 0.5).sum()]))
    return net.eval(), w


def points_near_the_middle(count: int, w: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Pixels in [0.45, 0.55]: the closest boundary point x - (w.(x - 1/2)) w stays in the box, so
    the l2 distance to the boundary in the box is |w.(x - 1/2)|; at least 0.01 (float32 resolves 2% of it)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.45 + 0.1 * torch.rand(4 * count, 1, 8, 8, generator=g)
    return x[((x.flatten(1) - 0.5) @ w).abs() > 0.01][:count]


def test_fab_minimal_norm_is_the_distance_to_the_hyperplane_and_pgd_just_beyond_it_flips_every_example():
    net, w = two_class_linear(64)
    x = points_near_the_middle(24, w)
    y = net(x).argmax(1)
    distance = ((x.flatten(1) - 0.5) @ w).abs().double()
    x_fab, norms = attacks.fab_minimal_points(net, x, y, OPTIONS["fab"], 2, seed=0)
    assert torch.isfinite(norms).all()
    assert (net(x_fab).argmax(1) != y).all()
    assert ((norms - distance).abs() / distance).max() < 0.01
    # PGD's random start leaves a component along the boundary that each projection onto the ball
    # only shrinks: 5% beyond the distance is enough for 20 steps; 2% short of it nothing flips.
    for margin, flips in ((1.05, True), (0.98, False)):
        for i in range(len(x)):
            eps = float(distance[i]) * margin
            attack = attacks.build("pgd_l2", net, eps, OPTIONS, 2, 64, seed=i)
            x_adv = attack(x[i:i + 1], y[i:i + 1])
            assert attacks.within(attacks.perturbation_norms(x_adv, x[i:i + 1], "l2"), eps).all()
            assert bool(net(x_adv).argmax(1) != y[i]) == flips, (i, margin)


def test_fab_robust_accuracy_at_each_eps_counts_the_examples_farther_than_eps():
    net, w = two_class_linear(64)
    x = points_near_the_middle(24, w)
    y = net(x).argmax(1)
    distance = ((x.flatten(1) - 0.5) @ w).abs().double()
    grid = [0.01, 0.05, 0.1, 0.2]
    assert all((distance - e).abs().min() / e > 0.02 for e in grid)   # no example within 2% of a budget
    correct, robust, invalid = attacks.robust_flags(net, x, y, [("fab_l2", grid)], OPTIONS, 2, seed=0, progress=False)
    assert correct.all()
    for eps in grid:
        assert torch.equal(robust[("fab_l2", eps)], distance > eps)
        assert invalid[("fab_l2", eps)] == 0


@pytest.fixture(scope="module")
def ten_class():
    """A 10-class linear model on 1 x 28 x 28 images (Square needs images this size), with a third
    of the labels wrong so that clean accuracy is not 1."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x = torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = net(x).argmax(1)
    y[::3] = (y[::3] + 1) % 10
    return net, x, y


def test_at_eps_zero_every_attack_leaves_the_clean_accuracy(ten_class):
    net, x, y = ten_class
    plan = [(name, [0.0]) for name in attack_info.ATTACKS]
    correct, robust, _ = attacks.robust_flags(net, x, y, plan, OPTIONS, 10, seed=0, progress=False)
    assert 0 < correct.double().mean() < 1
    for name in attack_info.ATTACKS:
        assert torch.equal(robust[(name, 0.0)], correct), name


def test_any_attack_is_robust_only_where_no_attack_broke_the_example():
    # Attack a breaks examples 0 and 1, attack b example 2, at eps 1: robust to "any" are 3 and 4
    # only, fewer than for either attack alone (a minimum over attacks would say 3 of 5).
    t, f = True, False
    robust = {("pgd_l2", 1.0): torch.tensor([f, f, t, t, t]), ("fab_l2", 1.0): torch.tensor([t, t, f, t, t]),
              ("pgd_linf", 1.0): torch.tensor([f, f, f, f, f])}
    assert attacks.any_attack(robust, "l2")[1.0].tolist() == [f, f, f, t, t]
    assert attacks.any_attack(robust, "linf")[1.0].tolist() == [f] * 5
    # An attack run at a smaller budget only (the headline AutoAttack) still counts at larger ones.
    robust[("autoattack_l2", 0.5)] = torch.tensor([t, t, t, f, t])
    robust[("pgd_l2", 2.0)] = torch.tensor([t, t, t, t, t])
    any_l2 = attacks.any_attack(robust, "l2")
    assert any_l2[0.5].tolist() == [t, t, t, f, t]
    assert any_l2[1.0].tolist() == [f, f, f, f, t]
    assert any_l2[2.0].tolist() == [f, f, f, f, t]           # pgd_l2 at 2 alone broke nothing


def test_robust_accuracy_table_any_rows_are_at_most_every_attack_and_fall_with_eps(ten_class):
    net, x, y = ten_class
    job = {"dataset": "toy", "model": "linear", "seed": 0, "batch_size": 10, "options": OPTIONS,
           "attacks": [{"name": name, "eps": [0.0, 0.02, 0.5]} for name in ("pgd_l2", "fab_l2", "cw_l2")]
           + [{"name": name, "eps": [0.0, 0.01, 0.05]} for name in ("fgsm", "pgd_linf")]}
    table = attacks.robust_accuracy_table(net, x, y, job, 10, progress=False)
    assert list(table.columns) == attacks.TABLE_COLUMNS
    for (norm, eps), block in table.groupby(["norm", "eps"]):
        single = block.loc[block["attack"] != attack_info.ANY, "robust_accuracy"]
        any_row = block.loc[block["attack"] == attack_info.ANY, "robust_accuracy"]
        assert len(any_row) == 1 and any_row.iloc[0] <= single.min() + 1e-12
    for _, curve in table.groupby("attack"):
        for _, per_norm in curve.groupby("norm"):
            values = per_norm.sort_values("eps")["robust_accuracy"].to_numpy()
            assert (np.diff(values) <= 1e-12).all()
    # At eps = 0 every row is the clean accuracy; at the largest l2 budget the attacks break some.
    zero = table.loc[table["eps"] == 0.0, "robust_accuracy"]
    assert np.allclose(zero, table["clean_accuracy"].iloc[0])
    assert table.loc[(table["attack"] == "any") & (table["eps"] == 0.5), "robust_accuracy"].iloc[0] < zero.iloc[0]


def test_two_class_cross_entropy_is_the_softmax_over_the_pair_classes_only():
    logits = torch.tensor([[2.0, 9.0, 0.0, -1.0], [0.0, 5.0, 3.0, 1.0]])
    labels = torch.tensor([0, 3])
    ce = attacks.two_class_cross_entropy(logits, (0, 3), labels)
    expected = [math.log(1 + math.exp(-1.0 - 2.0)), math.log(1 + math.exp(0.0 - 1.0))]
    assert np.allclose(ce.numpy(), expected)
    with pytest.raises(ValueError):
        attacks.two_class_cross_entropy(logits, (0, 2), labels)


def test_fab_curve_uses_the_fab_point_once_its_norm_is_within_eps():
    points = pd.DataFrame({"norm": [0.5, 2.0, math.inf], "ce_clean": [0.1, 0.2, 0.3], "ce_fab": [1.0, 2.0, 9.0],
                           "ce_all_clean": [0.0] * 3, "ce_all_fab": [0.0] * 3})
    curve = fab_loss_curve(points, [0.0, 0.5, 1.0, 2.0, 100.0])
    assert np.allclose(curve, [0.6 / 3, 1.5 / 3, 1.5 / 3, 3.3 / 3, 3.3 / 3])


def test_fab_pairs_on_a_pair_set(ten_class):
    from layerbound.data.pairs import PairSet

    net, x, _ = ten_class
    with torch.no_grad():
        pred = net(x).argmax(1)
    a, b = int(pred[0]), int(pred[1]) if int(pred[1]) != int(pred[0]) else (int(pred[0]) + 1) % 10
    xa, xb = x[pred == a][:2], x[:2]
    pair_set = PairSet("c", "toy", "train", (a, b), 2, 0, xa, xb, torch.full((2,), a), torch.full((2,), b),
                       torch.arange(2), torch.arange(2))
    points = attacks.fab_pairs(net, pair_set, OPTIONS["fab"], 10, seed=0)
    assert list(points.columns) == attacks.FAB_PAIR_COLUMNS and len(points) == 4
    found = points["found"].to_numpy()
    assert (points.loc[found, "prediction_fab"] != points.loc[found, "label"]).all()
    assert (points.loc[~found, "norm"] == np.inf).all() or found.all()
    # Examples the model already misclassifies need no perturbation.
    wrong = (points["prediction_clean"] != points["label"]).to_numpy()
    assert (points.loc[wrong, "norm"] == 0).all()


# --- the job, the headline, the installation -------------------------------------------------------

def test_the_headline_is_autoattack_at_the_training_budget_and_is_in_the_grid():
    raw = default_config()
    raw["attacks"]["run"] = ["pgd_l2", "fgsm"]
    raw["models"]["medium_pgd2"]["train"]["eps"] = 1.25
    cfg = config.validate(raw)
    job = config.attack_job(cfg, "medium_pgd2")
    assert job["headline"] == {"attack": "autoattack_l2", "norm": "l2", "eps": 1.25}
    by_name = {a["name"]: a["eps"] for a in job["attacks"]}
    assert by_name["autoattack_l2"] == [1.25]          # not in attacks.run: the headline budget only
    assert 1.25 in by_name["pgd_l2"] and by_name["fgsm"] == cfg["attacks"]["eps"]["linf"]
    benign = config.attack_job(cfg, "medium_benign")
    assert benign["headline"]["eps"] == cfg["evaluation"]["eps"]


def test_the_schema_lists_exactly_the_registered_attacks():
    run = config.schema()["properties"]["attacks"]["properties"]["run"]
    assert run["items"]["enum"] == run["default"] == list(attack_info.ATTACKS)
    assert {a.norm for a in attack_info.ATTACKS.values()} == set(attack_info.NORMS)
    assert all(attack_info.autoattack_of(norm) in attack_info.ATTACKS for norm in attack_info.NORMS)


@pytest.mark.parametrize("mutate,needle", [
    (lambda c: c["attacks"].update(models=["nope"]), "attacks.models names 'nope'"),
    (lambda c: c["attacks"].update(run=["pgd_l3"]), "attacks.run[0]: 'pgd_l3' is not one of"),
    (lambda c: c["attacks"]["eps"].update(linf=[]), "attacks.eps.linf is empty, but attacks.run asks for fgsm"),
    (lambda c: c["attacks"]["autoattack"].update(steps=0), "attacks.autoattack.steps: 0 is less than the minimum"),
    (lambda c: c["attacks"]["eps"].update(l2=[-1.0]), "attacks.eps.l2[0]: -1.0 is less than the minimum of 0"),
])
def test_bad_attack_config_fails_in_one_line_naming_the_key(mutate, needle):
    raw = default_config()
    mutate(raw)
    with pytest.raises(config.ConfigError) as err:
        config.validate(raw)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_attack_stage_refuses_a_checkpoint_of_other_classes_in_one_line(tmp_path, capsys):
    # The workflow's job JSON names no architecture; the job's dataset still fixes the input shape
    # and the class count, so a 5-class network is not attacked on the 10 digits.
    from layerbound import cli
    from layerbound.models import checkpoint, registry as models

    checkpoint.save(tmp_path / "five.pt", models.build("fcnn_small", (1, 28, 28), 5), {})
    job = {"seed": 0, "dataset": "mnist5k", "model": "net", "examples": 20, "batch_size": 20,
           "headline": {"attack": "pgd_l2", "norm": "l2", "eps": 2.0},
           "attacks": [{"name": "pgd_l2", "norm": "l2", "eps": [2.0]}], "options": {"pgd": {"steps": 2, "step_factor": 2.5}}}
    with pytest.raises(SystemExit):
        cli.main(["attack", "--checkpoint", str(tmp_path / "five.pt"), "--job-json", json.dumps(job), "--device", "cpu",
                  "--out", str(tmp_path / "a.csv"), "--summary", str(tmp_path / "a.json")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "num_classes: checkpoint has 5, config asks for 10" in errors[0]
    assert not (tmp_path / "a.csv").exists()


def test_missing_torchattacks_is_one_line_saying_how_to_install_it(tmp_path):
    # A module named torchattacks that fails to import stands for a missing one.
    (tmp_path / "torchattacks.py").write_text("raise ImportError('missing')\n")
    code = ("import sys; from layerbound import cli; "
            "cli.main(['attack', '--checkpoint', 'x.pt', '--job-json', '{\"model\": \"m\", \"dataset\": \"mnist5k\"}'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1
    assert out.stderr.strip() == f"layerbound attack: error: {attack_info.INSTALL_HINT}"
    assert attack_info.INSTALL_HINT == "install torchattacks: pip install --no-deps torchattacks==3.5.1"


def test_torchattacks_is_installed_without_its_dependencies_everywhere_and_never_a_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.match(r"[A-Za-z0-9_.\-]+", d).group(0).lower() for d in project["dependencies"]]
    assert "torchattacks" not in names and "requests" not in names
    install = "pip install --no-deps"
    makefile = (ROOT / "Makefile").read_text()
    assert f"TORCHATTACKS := {attack_info.PIN}" in makefile and f"{install} '$(TORCHATTACKS)'" in makefile
    post_deploy = (ROOT / "envs" / "layerbound.post-deploy.sh").read_text()
    assert f'{install} "{attack_info.PIN}"' in post_deploy
    # The modules of the installed version import none of the dependencies it pins but we skip.
    import torchattacks

    assert torchattacks.__version__ == attack_info.LIBRARY_VERSION
    from pathlib import Path

    sources = "\n".join(p.read_text() for p in Path(torchattacks.__file__).parent.rglob("*.py"))
    assert not re.search(r"^\s*(import|from)\s+requests\b", sources, re.MULTILINE)
