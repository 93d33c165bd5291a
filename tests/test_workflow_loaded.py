"""The workflow on a loaded model: a torchvision ResNet-18 with random weights from a local file."""

import math

import numpy as np
import pytest
import torch

from layerbound.collide import shards
from layerbound.models import checkpoint, loaded
from layerbound.bounds import losses
from workflow_helpers import default_config, job_counts, run_snakemake, write_config

# mnist5k is the offline dataset, so the ResNet-18 takes 1x28x28 inputs: small_inputs gives it
# paper 003's 3x3/1 stem on one channel (the reference code's CIFAR stem, on MNIST's channel).
RESNET = {"dataset": "mnist5k", "source": "torchvision", "arch": "resnet18", "small_inputs": True,
          "normalization": {"mean": [0.1307], "std": [0.3081]}}
LAYERS = ["layer1", "layer2.0.bn1"]   # a submodule and an operation inside a block
EPS = 9


def tiny_loaded_config(weights: str) -> dict:
    return {
        "seed": 0,
        "evaluation": {"norm": "l2", "eps": 1.0, "steps": 2, "examples": 16},
        "models": {"resnet_random": {**RESNET, "weights": weights}},
        "pairs": {"classes": [3, 7], "per_class": 2},
        "collision": {"layers": LAYERS, "m": [10], "projections": 1, "chunk_size": 4, "batch_size": 4,
                      "keep_points": 2, "baselines": ["input"], "search": {"step": "merit", "max_iter": 15}},
        "losses": {"eps": {"start": 0.0, "stop": 4.0, "num": EPS}, "bootstrap": 20},
        # A light attack stage (the schema's full-strength defaults would take a quarter hour here).
        "attacks": {"examples": 16, "batch_size": 16, "eps": {"l2": [1.0], "linf": [0.1]}, "run": ["fgsm"],
                    "autoattack": {"steps": 1, "targets": 1, "square_queries": 1}},
    }


def _random_resnet_weights(path):
    torch.manual_seed(0)
    torch.save(loaded.network(RESNET, (1, 28, 28), 10, weights=False).state_dict(), path)


def test_config_mixing_trained_and_loaded_models_plans_one_import_job(tmp_path):
    _random_resnet_weights(tmp_path / "r18.pt")
    config = default_config()
    config["models"]["resnet_random"] = {**RESNET, "weights": "r18.pt"}
    config["collision"]["sweeps"] = []
    config["collision"]["layers"] = "all"
    result = run_snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "mixed.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["import_model"] == 1 and counts["train_model"] == 3
    # The ResNet's 10 top-level layers plus the Medium CNNs' 7 taps each, and the two baselines.
    assert counts["collide_merge"] == 10 + 3 * 7 + 2
    assert "results/models/mnist5k/resnet_random.pt" in result.stdout
    assert counts["figures_training_methods"] == 1   # the three Medium CNNs only


@pytest.fixture(scope="module")
def loaded_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("loaded_workflow")
    _random_resnet_weights(workdir / "resnet18_random.pt")
    configfile = write_config(workdir / "tiny_loaded.yaml", tiny_loaded_config("resnet18_random.pt"))
    result = run_snakemake(workdir, "--cores", "2", configfile=configfile)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, configfile


@pytest.mark.slow
def test_loaded_resnet_goes_through_the_workflow_and_its_shards_verify(loaded_run):
    workdir, configfile = loaded_run
    results = workdir / "results"
    # The checkpoint rebuilds the network: the same function as the weights file's.
    model = checkpoint.load(results / "models/mnist5k/resnet_random.pt", expect={"arch": "resnet18", "num_classes": 10})
    reference = loaded.build({**RESNET, "weights": str(workdir / "resnet18_random.pt")}, (1, 28, 28), 10)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    metrics = checkpoint.load_metrics(results / "models/mnist5k/resnet_random.pt")
    assert 0 <= metrics["robust_test_accuracy"] <= 1 and metrics["test_examples"] == 1000
    assert metrics["tap_widths"]["layer1"] == 64 * 14 * 14 and metrics["source"]["arch"] == "resnet18"

    pairset = "c3v7-S2-seed0"
    for layer in LAYERS:
        shard = results / f"shards/mnist5k/{pairset}/jacobian/resnet_random/{layer}/m10/p0/c0.h5"
        columns, attrs = shards.read(shard)
        assert attrs["model"] == "resnet_random" and attrs["layer"] == layer and attrs["projected"] == 1
        # Merging the shard again applies every check a merge makes (bounds, pairs, attributes).
        merged = shards.merge([shard], workdir / f"remerged_{layer}.h5", projections=1)
        arrays, _ = shards.read_merged(merged)
        d, bound = arrays["distances"][0], arrays["midpoint_bounds"]
        assert d.shape == (2, 2) and (d <= bound * (1 + shards.BOUND_RTOL)).all()
        assert (d < bound).all()   # collisions found: random features projected to m = 10 collide
        stored, _ = shards.read_merged(results / f"distances/mnist5k/{pairset}/jacobian/resnet_random/{layer}/m10.h5")
        np.testing.assert_array_equal(stored["distances"], arrays["distances"])

    summary = losses.read_table(results / "summary.csv")
    assert len(summary) == (len(LAYERS) + 1) * EPS
    assert (summary.loc[summary["eps"] == 0, "ce_mean"] == 0).all()
    assert summary["ce_mean"].between(0, math.log(2) + 1e-12).all()
    figures = list((results / "figures").rglob("*.png"))
    assert {f.parent.name for f in figures} == {"resnet_random"} and len(figures) == 3
    again = run_snakemake(workdir, "-n", configfile=configfile)
    assert "Nothing to be done" in again.stdout + again.stderr
