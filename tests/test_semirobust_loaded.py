"""Paper 003's split of torchvision networks (LoadedNet): f_b = the last k conv / linear modules in
execution order, f_a frozen bit for bit (weights and BatchNorm statistics) while f_b retrains, f_b
moved between networks, the layer outputs rho is estimated on, the torch-free count planning uses,
and a torchvision architecture trained from scratch by the workflow's train code."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from layerbound import config
from layerbound import plan
from layerbound.models import checkpoint, loaded, sources, train
from layerbound.data import datasets as data
from layerbound.semirobust.algorithm import RetrainOptions, retrain_semirobust, train_f_b_epoch
from layerbound.semirobust.attacks import PGDAttack
from layerbound.semirobust.layer_mi import layer_mi, module_outputs
from layerbound.semirobust.split import f_a_changes, f_a_state, f_b_parameters, freeze_f_a, load_f_b, split_after, split_last, train_mode
from workflow_helpers import default_config

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = 4


def spec(arch, dataset="cifar10"):
    return {"dataset": dataset, "source": "torchvision", "arch": arch, "kwargs": {}, "small_inputs": True,
            "normalization": None}


def network(arch, shape, seed):
    torch.manual_seed(seed)
    return loaded.build(spec(arch), shape, CLASSES, weights=False)


def random_data(n, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


RESNET_SHAPE = (3, 16, 16)   # resnet18 with the 3x3/1 stem: layer4 sees 1x1


def test_resnet_f_b_is_the_last_k_convs_and_linears_in_execution_order():
    net = network("resnet18", RESNET_SHAPE, 0)
    layers = list(split_last(net, 1).taps)
    assert len(layers) == 21 and layers[0] == "conv1" and layers[-1] == "fc"   # 20 convs (3 downsample) + fc
    assert layers.index("layer2.0.downsample.0") == layers.index("layer2.0.conv2") + 1   # runs after the block's convs
    split = split_last(net, 4)   # fc, layer4.1.conv2, layer4.1.conv1, layer4.0.downsample.0
    assert split.f_b_taps == ("layer4.0.downsample.0", "layer4.1.conv1", "layer4.1.conv2", "fc")
    # A cut inside a block: the block's convolutions before the cut and their BatchNorm are f_a's.
    assert {"net.layer4.0.conv2", "net.layer4.0.bn2"} <= set(split.f_a_modules)
    assert {"net.layer4.0.downsample.1", "net.layer4.1.bn1", "net.fc"} <= set(split.f_b_modules)
    assert not set(split.f_a_modules) & set(split.f_b_modules)
    assert split_after(net, "layer4.0.conv2") == split
    with pytest.raises(ValueError, match="choose k in 1..20"):
        split_last(net, 21)


@pytest.mark.parametrize("arch,shape,count", [("resnet18", RESNET_SHAPE, 21), ("alexnet", (3, 32, 32), 6),
                                              ("vgg11_bn", (3, 32, 32), 11)])
def test_planning_counts_the_weight_layers_the_split_cuts(arch, shape, count):
    # The meta-device count (sources.weight_layers, used by the config check of fb_layers) and the
    # split of the built network agree, name by name.
    entry = spec(arch)
    net = network(arch, (3, 32, 32), 0)
    assert sources.weight_layers(entry) == list(split_last(net, 1).taps)
    assert len(sources.weight_layers(entry)) == count


def test_retraining_f_b_leaves_f_a_bit_identical_and_changes_f_b():
    net = network("resnet18", RESNET_SHAPE, 0)
    x, y = random_data(48, RESNET_SHAPE, 1)
    # Non-trivial BatchNorm statistics everywhere first (a few benign training steps of everything).
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    net.train()
    for i in range(0, 48, 16):
        opt.zero_grad()
        F.cross_entropy(net(x[i:i + 16]), y[i:i + 16]).backward()
        opt.step()
    net.eval()
    split = split_last(net, 7)   # cuts inside layer3.1 (after its conv1)
    assert split.f_b_taps[0] == "layer3.1.conv2"
    before = copy.deepcopy(net.state_dict())
    frozen = f_a_state(net, split)
    assert any("running_mean" in k for k in frozen) and any("num_batches_tracked" in k for k in frozen)
    freeze_f_a(net, split)
    optimizer = torch.optim.SGD(f_b_parameters(net, split), lr=0.05, momentum=0.9, weight_decay=5e-4)
    train_f_b_epoch(net, split, optimizer, x, y, PGDAttack("linf", 0.03, 1), 16, torch.Generator().manual_seed(0))
    assert f_a_changes(net, split, frozen) == []
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "net.layer3.1.bn2.running_mean" in changed and "net.fc.weight" in changed and "net.layer3.1.conv2.weight" in changed
    assert not any(k in frozen for k in changed)
    # f_b's parameters are exactly those of f_b's modules: every parameter is in one part.
    named = dict(net.named_parameters())
    trainable = {n for n, p in named.items() if any(p is q for q in f_b_parameters(net, split))}
    assert trainable == {n for n in named if n.rpartition(".")[0] in split.f_b_modules}
    assert trainable | {n for n in named if n.rpartition(".")[0] in split.f_a_modules} == set(named)


def test_train_mode_puts_f_a_alone_in_eval_mode():
    net = network("resnet18", RESNET_SHAPE, 0)
    split = split_last(net, 8)
    train_mode(net, split)
    f_a, f_b = set(split.f_a_modules), set(split.f_b_modules)
    for name, module in net.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.training == (name in f_b) and (name in f_a) != (name in f_b)


def test_f_b_moves_between_two_networks_of_one_architecture():
    robust, regular = network("resnet18", RESNET_SHAPE, 0), network("resnet18", RESNET_SHAPE, 1)
    split = split_last(robust, 4)
    mixed = copy.deepcopy(robust)
    load_f_b(mixed, regular, split)
    state, r, g = mixed.state_dict(), robust.state_dict(), regular.state_dict()
    for key in state:
        owner = key.rpartition(".")[0]
        expected = g if owner in split.f_b_modules else r
        assert torch.equal(state[key], expected[key]), key
    with pytest.raises(Exception, match="cannot take f_b"):
        load_f_b(mixed, network("resnet34", RESNET_SHAPE, 0), split)


def test_layer_outputs_are_the_weight_layers_outputs_and_rho_covers_f_b():
    net = network("alexnet", (3, 32, 32), 0)
    x, y = random_data(40, (3, 32, 32), 2)
    split = split_last(net, 4)
    assert split.f_b_taps == ("features.6", "features.8", "features.10", "classifier")
    outputs = module_outputs(net, x, ["features.3", "classifier"], batch_size=16)
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(outputs["classifier"]).float(), net(x), atol=1e-5)
        conv2 = net.net.features[:4](x).flatten(1)
    assert torch.allclose(torch.from_numpy(outputs["features.3"]).float(), conv2, atol=1e-5)
    rho = layer_mi(net, split, x, y, estimator="ksg")
    assert list(rho) == list(split.f_b_taps) and all(v == v for v in rho.values())


def test_algorithm1_on_a_torchvision_network():
    x, y = random_data(64, (3, 32, 32), 3)
    robust, regular = network("alexnet", (3, 32, 32), 0), network("alexnet", (3, 32, 32), 1)
    split = split_last(robust, 2)
    attack = PGDAttack("linf", 0.03, 1)
    result = retrain_semirobust(robust, regular, split, (x, y), (x[:32], y[:32]), attack, attack,
                        RetrainOptions(trials=2, epochs=1, k=0.0, batch_size=32), mi=None, progress=False)
    assert len(result.trials) == 2 and all(len(t.accuracies) == 1 for t in result.trials)
    # The best trial's network: f_a from the robust network, f_b retrained (no longer the regular one).
    best = result.best_state
    assert all(torch.equal(best[k], robust.state_dict()[k]) for k in f_a_state(robust, split))
    assert not torch.equal(best["net.classifier.weight"], regular.state_dict()["net.classifier.weight"])


# --- a torchvision architecture trained by the workflow ------------------------------------------

def torchvision_config(**models):
    raw = default_config()
    raw["models"].update(models)
    return raw


def test_a_torchvision_model_with_a_train_block_is_trained_not_imported():
    raw = torchvision_config(rn_benign={"dataset": "mnist5k", "source": "torchvision", "arch": "resnet18",
                                        "small_inputs": True, "train": {"method": "benign"}},
                             rn_pgd={"dataset": "mnist5k", "source": "torchvision", "arch": "resnet18",
                                     "small_inputs": True, "train": {"method": "pgd", "norm": "l2", "eps": 1.0}})
    raw["semirobust"]["studies"]["rn"] = {"robust": "rn_pgd", "regular": "rn_benign", "fb_layers": [4, 16]}
    cfg = config.validate(raw)
    p = plan.Plan(cfg)
    assert {"rn_benign", "rn_pgd"} <= set(p.trained_models) and not {"rn_benign", "rn_pgd"} & set(p.loaded_models)
    job = config.training_job(cfg, "rn_pgd")
    assert job["model"]["source"]["arch"] == "resnet18" and job["model"]["train"]["method"] == "pgd"
    assert config.semirobust_job(cfg, "rn", 16)["arch"] == "resnet18"
    raw["semirobust"]["studies"]["rn"]["fb_layers"] = [21]
    with pytest.raises(config.ConfigError) as err:
        config.validate(raw)
    assert str(err.value) == ("semirobust.studies.rn.fb_layers: resnet18 cannot have f_b = its last 21 weight layers "
                              "(it has 21 conv and linear layers and f_a keeps one); allowed 1..20")


@pytest.mark.parametrize("entry,needle", [
    ({"arch": "resnet18", "weights": "w.pt", "train": {"method": "benign"}}, "models.rn: weights and train exclude each other"),
    ({"arch": "resnet18"}, "models.rn: a torchvision model needs weights (a local state_dict file) or a train block"),
])
def test_bad_torchvision_entries_are_one_line(entry, needle):
    raw = torchvision_config(rn={"dataset": "mnist5k", "source": "torchvision", "small_inputs": True, **entry})
    with pytest.raises(config.ConfigError) as err:
        config.validate(raw)
    assert str(err.value).startswith(needle) and "\n" not in str(err.value)


def test_training_a_torchvision_architecture_writes_a_checkpoint_the_workflow_loads(tmp_path, monkeypatch):
    real_load = data.load

    def few(dataset, split, *args, **kwargs):   # 64 training and 32 test images of mnist5k
        x, y = real_load(dataset, split, *args, **kwargs)
        return x[:64 if split == "train" else 32], y[:64 if split == "train" else 32]
    monkeypatch.setattr(train.data, "load", few)
    raw = torchvision_config(rn={"dataset": "mnist5k", "source": "torchvision", "arch": "resnet18", "small_inputs": True,
                                 "train": {"method": "pgd", "norm": "l2", "eps": 1.0, "steps": 1, "epochs": 1,
                                           "batch_size": 32, "warmup_epochs": 0}})
    raw["evaluation"] = {"examples": 8, "steps": 1}
    seed, model_spec, evaluation = config.job_from_dict(config.training_job(config.validate(raw), "rn"))
    out = tmp_path / "rn.pt"
    metrics = train.train_model(model_spec, evaluation, seed, out, device="cpu", progress=False)
    net = checkpoint.load(out, expect={"arch": "resnet18", "input_shape": (1, 28, 28), "num_classes": 10})
    assert isinstance(net, loaded.LoadedNet) and net.spec == model_spec.source
    sidecar = checkpoint.load_metrics(out)
    assert sidecar["train"]["method"] == "pgd" and sidecar["source"]["arch"] == "resnet18"
    assert sidecar["tap_order"][-1] == "fc" and len(sidecar["history"]) == 1
    assert 0 <= metrics["clean_test_accuracy"] <= 1 and metrics["test_examples"] == 32
    # Trained: not the seeded initialization any more, and the same seed gives the same weights.
    torch.manual_seed(train.model_seed(seed, "rn"))
    init = loaded.build(model_spec.source, (1, 28, 28), 10, weights=False)
    assert not torch.equal(init.net.fc.weight, net.net.fc.weight)
    again = tmp_path / "again.pt"
    train.train_model(model_spec, evaluation, seed, again, device="cpu", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), checkpoint.load(again).state_dict().values()))


def test_the_study_cli_runs_on_torchvision_checkpoints(tmp_path):
    # Two random-weight resnet18 checkpoints as robust and regular; the study's JSON names the
    # weight layers of f_b and rho for each of its layer pairs.
    from layerbound import cli
    from workflow_helpers import write_config

    entry = {"dataset": "mnist5k", "source": "torchvision", "arch": "resnet18", "small_inputs": True}
    raw = {"models": {"rn_benign": {**entry, "train": {"method": "benign"}},
                      "rn_pgd": {**entry, "train": {"method": "pgd", "norm": "l2", "eps": 1.0, "steps": 1}}},
           "semirobust": {"studies": {"rn": {"robust": "rn_pgd", "regular": "rn_benign", "fb_layers": [2]}},
                          "trials": 1, "epochs": 1, "train_examples": 32, "test_examples": 100, "batch_size": 32,
                          "eval_attack": {"method": "fgsm", "eps": 0.1}, "estimators": ["ksg"]}}
    configfile = write_config(tmp_path / "rn.yaml", raw)
    cfg = config.validate(raw)
    for i, name in enumerate(("rn_pgd", "rn_benign")):
        torch.manual_seed(i)
        source = config.model_specs(cfg)[name].source
        checkpoint.save(tmp_path / f"{name}.pt", loaded.build(source, (1, 28, 28), 10, weights=False), {"model": name})
    out = tmp_path / "fb2.json"
    cli.main(["semirobust", "run", "--configfile", str(configfile), "--study", "rn", "--fb-layers", "2",
              "--robust", str(tmp_path / "rn_pgd.pt"), "--regular", str(tmp_path / "rn_benign.pt"),
              "--out", str(out), "--device", "cpu", "--no-progress"])
    import json
    record = json.loads(out.read_text())
    assert record["f_b"] == ["layer4.1.conv2", "fc"] and record["f_a"][-1] == "layer4.1.conv1"
    assert record["layer_pairs"] == [["layer4.1.conv1", "layer4.1.conv2"], ["layer4.1.conv2", "fc"]]
    assert set(record["rho_best"]["ksg"]) == {"layer4.1.conv2", "fc"}
    assert record["eval_attack"]["label"].startswith("FGSM (linf) (torchattacks) eps 0.1")
