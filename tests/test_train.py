import json
import math
import os
import subprocess
import sys

import pytest
import torch

from layerbound.core.errors import TrainingDiverged
from layerbound.models import checkpoint
from layerbound.config import EvalConfig, ModelSpec, TrainConfig
from layerbound.models.train import cosine_lr, model_seed, train_model

EVAL = EvalConfig(norm="l2", eps=1.5, steps=10, examples=300)
# A small FCNN, two epochs at a higher rate than the paper's 0.01: enough to learn, seconds to run.
FAST = dict(epochs=2, batch_size=64, lr=0.05)


def test_cosine_schedule_starts_at_base_and_decays_to_zero():
    assert cosine_lr(0.01, 0, 100) == 0.01
    assert math.isclose(cosine_lr(0.01, 50, 100), 0.005)
    assert cosine_lr(0.01, 100, 100) == pytest.approx(0.0, abs=1e-15)


def test_model_seeds_are_fixed_and_distinct():
    # Pinned values: a checkpoint retrained from the same config must get the same initialization,
    # on any machine and Python version (a hash() or a changed key would move them).
    assert model_seed(0, "a") == 317076776270910307
    assert model_seed(0, "medium_pgd2") == 4064925194142943705
    assert len({model_seed(s, n) for s in (0, 1) for n in ("a", "b")}) == 4
    assert 0 <= model_seed(7, "b") < 2 ** 63


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="needs a budget eps"):
        TrainConfig(method="pgd", eps=0.0)
    with pytest.raises(ValueError, match="training method"):
        TrainConfig(method="fgsm")
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})
    assert TrainConfig(method="pgd", eps=2.0, steps=10).step_size == 0.5


def test_budget_ramps_linearly_during_warmup_then_stays():
    cfg = TrainConfig(method="pgd", eps=2.0, steps=10, epochs=6, warmup_epochs=2)
    assert [cfg.budget_at(e) for e in (0, 0.5, 1, 2, 5.5)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert TrainConfig(method="pgd", eps=2.0).budget_at(0) == 2.0
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(method="pgd", eps=2.0, epochs=3, warmup_epochs=4)


@pytest.fixture(scope="module")
def benign_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "fcnn.pt"
    spec = ModelSpec("fcnn_benign", "mnist5k", "fcnn_small", train=TrainConfig(**FAST))
    metrics = train_model(spec, EVAL, seed=3, out=out, device="cpu", progress=False)
    return out, metrics


def test_benign_training_learns_and_writes_checkpoint_and_sidecar(benign_run):
    out, metrics = benign_run
    assert metrics["clean_test_accuracy"] > 0.85
    assert 0.0 <= metrics["robust_test_accuracy"] < metrics["clean_test_accuracy"]
    assert metrics["robust_eval"] == {"attack": "pgd", "norm": "l2", "eps": 1.5, "steps": 10, "step_size": 0.375,
                                      "random_start": True, "examples": 300}
    assert metrics["wall_time_s"] > 0 and metrics["train"]["method"] == "benign"
    # The settings the weights' last digits depend on (docs/outputs.md), as this process ran it.
    assert metrics["compute"] == {"threads": torch.get_num_threads(),
                                  "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    assert checkpoint.load_metrics(out) == metrics
    model = checkpoint.load(out, expect={"arch": "fcnn_small"})
    assert model.arch == "fcnn_small"


def test_a_diverging_training_stops_in_one_line_and_writes_nothing(tmp_path):
    spec = ModelSpec("fcnn_benign", "mnist5k", "fcnn_small", train=TrainConfig(epochs=2, batch_size=64, lr=1e4))
    with pytest.raises(TrainingDiverged, match=r"^training fcnn_benign diverged: its loss is (nan|inf) in epoch 1 "
                                               r"\(lr 10000.0\); lower the learning rate \(no checkpoint written\)$"):
        train_model(spec, EVAL, seed=3, out=tmp_path / "m.pt", device="cpu", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_recorded_compute_settings_are_the_ones_in_force():
    # Another process with one thread and the portable kernels must record exactly those, whatever
    # this machine's own defaults are.
    code = ("import torch; torch.set_num_threads(1); from layerbound.core.provenance import compute; "
            "print(json.dumps(compute()))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", "import json; " + code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == {"threads": 1, "cpu_capability": "DEFAULT"}


def test_training_is_reproducible_from_the_seed(benign_run, tmp_path):
    out, metrics = benign_run
    spec = ModelSpec("fcnn_benign", "mnist5k", "fcnn_small", train=TrainConfig(**FAST))
    again = train_model(spec, EVAL, seed=3, out=tmp_path / "again.pt", device="cpu", progress=False)
    first = torch.load(out, weights_only=True)["state_dict"]
    second = torch.load(tmp_path / "again.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert again["clean_test_accuracy"] == metrics["clean_test_accuracy"]


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_adversarial_training_is_more_robust_than_benign(benign_run, tmp_path, method):
    # Same model, budget and seed: PGD-l2 / TRADES-l2 training at eps 1.5 must beat benign
    # training under the PGD evaluation attack at eps 1.5 (measured: benign ~0.22, pgd ~0.42, trades ~0.47).
    _, benign = benign_run
    spec = ModelSpec(f"fcnn_{method}", "mnist5k", "fcnn_small",
                     train=TrainConfig(method=method, norm="l2", eps=1.5, steps=5, **FAST))
    robust = train_model(spec, EVAL, seed=3, out=tmp_path / "adv.pt", device="cpu", progress=False)
    assert robust["robust_test_accuracy"] > benign["robust_test_accuracy"] + 0.1
