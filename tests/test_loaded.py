"""Loaded models: torchvision architectures, user factories and RobustBench entries, taps by layer
name, weights checked against the architecture, checkpoints that rebuild them, the Python API."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from layerbound import api, config
from layerbound.collide import features, projection
from layerbound import plan
from layerbound.models import checkpoint, loaded, sources
from layerbound.collide.linear_step import jacobian_rows
from layerbound.core.errors import ConfigError, ModelLoadError
from workflow_helpers import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

RESNET = {"dataset": "mnist5k", "source": "torchvision", "arch": "resnet18", "small_inputs": True,
          "normalization": {"mean": [0.1307], "std": [0.3081]}}
MNIST = ((1, 28, 28), 10)


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    """A small-input ResNet-18's random weights in a local file, as a user's checkpoint would be."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(loaded.network(RESNET, *MNIST, weights=False).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def resnet(resnet_weights):
    return loaded.build({**RESNET, "weights": str(resnet_weights)}, *MNIST)


def _x(count=3, shape=(1, 28, 28), seed=1):
    return torch.rand(count, *shape, generator=torch.Generator().manual_seed(seed))


def test_taps_by_name_equal_what_a_forward_hook_records_at_the_module(resnet):
    inner = resnet.net
    modules = {"bn1": inner.bn1, "maxpool": inner.maxpool, "layer1": inner.layer1, "layer2.0.bn1": inner.layer2[0].bn1,
               "layer3.1": inner.layer3[1], "avgpool": inner.avgpool, "fc": inner.fc}
    x = _x()
    with torch.no_grad():
        tapped = {name: resnet.features(x, name) for name in modules}   # traced before the hooks exist
    recorded = {}
    handles = [m.register_forward_hook(lambda mod, i, o, name=name: recorded.__setitem__(name, o.detach().clone()))
               for name, m in modules.items()]
    with torch.no_grad():
        logits = resnet(x)
    for h in handles:
        h.remove()
    for name in modules:
        assert torch.equal(tapped[name], recorded[name].flatten(1)), name
    # bn1 is followed by an in-place ReLU in torchvision: the tap keeps the pre-activation values.
    assert (tapped["bn1"] < 0).any()
    assert torch.equal(tapped["fc"], logits)


def test_small_inputs_changes_the_stem_as_paper_003s_reference_code():
    widths = sources._tap_table(json.dumps(RESNET), *MNIST)
    widths = {name: n for name, n, _ in widths}
    # conv1 3x3/1 keeps 28x28 (64 channels), the kept 3x3/2 max pool halves it, layer4 ends at 2x2.
    assert (widths["conv1"], widths["maxpool"], widths["layer4"], widths["fc"]) == (64 * 28 * 28, 64 * 14 * 14, 512 * 2 * 2, 10)
    net = loaded.network(RESNET, *MNIST, weights=False)
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding, net.conv1.in_channels) == ((3, 3), (1, 1), (1, 1), 1)
    assert isinstance(net.maxpool, torch.nn.MaxPool2d)
    vgg = loaded.network({"source": "torchvision", "arch": "vgg11", "small_inputs": True}, (3, 32, 32), 10, weights=False)
    assert vgg.classifier[0].in_features == 512 and vgg.avgpool.output_size == (1, 1)
    alex = loaded.tap_table({"source": "torchvision", "arch": "alexnet", "small_inputs": True}, (3, 32, 32), 10)
    assert {n: w for n, w, top in alex if top} == {"features": 256, "avgpool": 256, "classifier": 10}


def test_planned_widths_built_on_the_meta_device_equal_the_network_s(resnet):
    planned = dict((n, w) for n, w, _ in loaded.tap_table(RESNET, *MNIST))
    assert planned == resnet.tap_widths()
    assert list(planned) == resnet.taps


def test_imagenet_stem_on_one_channel_images_fails_in_one_line_suggesting_small_inputs():
    with pytest.raises(ModelLoadError, match=r"cannot take inputs of shape \(1, 28, 28\).*small_inputs: true"):
        loaded.tap_table({**RESNET, "small_inputs": False}, *MNIST)


def test_weights_that_do_not_match_the_architecture_fail_naming_file_and_mismatch(tmp_path, resnet_weights):
    state = torch.load(resnet_weights, weights_only=True)
    state["conv1.weight"] = torch.zeros(64, 3, 7, 7)   # an ImageNet stem in a small-input file
    del state["fc.bias"]
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(ModelLoadError) as err:
        loaded.build({**RESNET, "weights": str(bad)}, *MNIST)
    message = str(err.value)
    assert str(bad) in message and "\n" not in message
    assert "missing keys fc.bias" in message
    assert "conv1.weight (64, 3, 7, 7) in the file, (64, 1, 3, 3) in the model" in message


def test_import_model_with_mismatched_weights_fails_in_one_line_on_the_command_line(tmp_path, resnet_weights):
    state = torch.load(resnet_weights, weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "extra.pt"
    torch.save(state, bad)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"models": {"r": {**RESNET, "weights": str(bad)}}, "pairs": {"per_class": 2}}))
    result = subprocess.run([sys.executable, "-m", "layerbound", "import-model", "--configfile", str(cfg), "--model", "r",
                             "--out", str(tmp_path / "r.pt")], capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerbound import-model: error: weights file")
    assert str(bad) in lines[0] and "unexpected keys extra.weight" in lines[0]


def test_robustbench_entry_without_package_or_weights_fails_saying_what_to_install_or_fetch(tmp_path):
    cfg = tmp_path / "rb.yaml"
    cfg.write_text(yaml.safe_dump({"models": {"rb": {"dataset": "cifar10", "source": "robustbench", "arch": "Standard",
                                                     "threat_model": "Linf", "model_dir": str(tmp_path / "zoo")}}}))
    result = subprocess.run([sys.executable, "-m", "layerbound", "collide-plan", "--configfile", str(cfg)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerbound collide-plan: error: models.rb:")
    weights = f"{tmp_path / 'zoo'}/cifar10/Linf/Standard.pt"
    assert weights in lines[0] and "load_model(model_name='Standard'" in lines[0]
    if importlib.util.find_spec("robustbench") is None:
        assert "pip install robustbench" in lines[0]


def test_robustbench_network_without_package_or_weights_raises_the_one_line_error(tmp_path):
    # The builder itself (the API and checkpoints reach it without a config's check): a missing
    # package or weights file is a ModelLoadError saying what to fetch, never a Python error.
    from layerbound.core.errors import ModelLoadError
    from layerbound.models import loaded

    spec = {"source": "robustbench", "dataset": "cifar10", "arch": "Standard", "threat_model": "Linf",
            "model_dir": str(tmp_path / "zoo")}
    with pytest.raises(ModelLoadError, match="robustbench|RobustBench"):
        loaded.network(spec, (3, 32, 32), 10)


def test_python_factory_source_builds_the_user_s_module(tiny_factory):
    model = api.load_model({"source": "python", "factory": tiny_factory, "kwargs": {"width": 7}}, dataset="mnist5k")
    assert api.taps(model) == {"0": 784, "1": 7, "2": 7, "3": 10}
    x = _x()
    with torch.no_grad():
        assert torch.equal(model.features(x, "2"), torch.relu(model.net[1](x.flatten(1))))


def test_untraceable_factory_fails_in_one_line_naming_torch_fx(tmp_path, monkeypatch):
    (tmp_path / "branchy.py").write_text(
        "import torch\n"
        "class Branchy(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(784, 10)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x.flatten(1)) if x.sum() > 0 else -self.fc(x.flatten(1))\n"
        "def make():\n"
        "    return Branchy()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelLoadError, match="python branchy:make cannot be traced by torch.fx"):
        loaded.tap_table({"source": "python", "factory": "branchy:make"}, *MNIST)


def test_loaded_checkpoint_rebuilds_the_model_and_loads_with_weights_only(tmp_path, resnet):
    path = tmp_path / "r.pt"
    checkpoint.save(path, resnet, {"model": "r"})
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == checkpoint.LOADED_FORMAT and json.loads(payload["source"])["arch"] == "resnet18"
    again = checkpoint.load(path, expect={"arch": "resnet18", "input_shape": (1, 28, 28), "num_classes": 10})
    x = _x()
    with torch.no_grad():
        assert torch.equal(again(x), resnet(x))   # normalization included: it is in the source spec
    with pytest.raises(checkpoint.CheckpointMismatch, match="num_classes"):
        checkpoint.load(path, expect={"num_classes": 100})


def test_eval_mode_taps_are_independent_of_the_batch(resnet):
    """Eval-mode BatchNorm uses its running statistics, so an example's features do not depend on
    the other examples of its batch. The check changes the other examples and keeps the batch's
    shape: the kernels then do the same operations in the same order on the first example (their
    order follows the shapes and the thread count, never the values), so its features must be
    bitwise equal. (A batch of another size may sum in another order and differ by rounding.)
    The control: with batch statistics (train mode) they change."""
    x, others = _x(4), _x(4, seed=2)
    others[0] = x[0]
    with torch.no_grad():
        assert torch.equal(resnet.features(x, "layer2")[0], resnet.features(others, "layer2")[0])
        resnet.train()
        try:
            assert not torch.equal(resnet.features(x, "layer2")[0], resnet.features(others, "layer2")[0])
        finally:
            resnet.eval()


def test_vector_jacobian_products_through_the_traced_tap_equal_the_eager_network(resnet_weights):
    model = loaded.build({**RESNET, "weights": str(resnet_weights)}, *MNIST)
    net = features.prepare_model(model, torch.float64, torch.device("cpu"))
    f = features.feature_map(net, "layer1", torch.device("cpu"))   # FX extractor, channels-last on the CPU
    inner = net.net

    def eager(u):
        h = inner.maxpool(inner.relu(inner.bn1(inner.conv1(net.normalize(u.contiguous())))))
        return inner.layer1(h).flatten(1)
    A = projection.matrix(5, 3, 64 * 14 * 14, dtype=torch.float64)
    x = _x(2).double()
    value, rows = jacobian_rows(lambda u: f(u) @ A.T, x)
    reference = torch.stack([torch.autograd.functional.jacobian(lambda u: eager(u[None]) @ A.T, x[i])[0].reshape(3, -1)
                             for i in range(2)])
    torch.testing.assert_close(value, eager(x) @ A.T)
    torch.testing.assert_close(rows, reference)


def test_collision_search_through_a_loaded_model_finds_verified_collisions(resnet, pairs_of):
    class Pairs:   # a pair set of 2 x 2 random images (the API takes any object with these fields)
        per_class, num_pairs, input_shape = 2, 4, (1, 28, 28)
        x_a, x_b = (t.float() for t in pairs_of((1, 28, 28), 2, 3))

        def gather(self, k):
            k = np.asarray(k)
            return self.x_a[torch.from_numpy(k // 2)], self.x_b[torch.from_numpy(k % 2)]
    found = api.collisions(resnet, "layer2.0.bn1", Pairs(), m=4, max_iter=4, name="r")
    assert found.distances.shape == (1, 2, 2) and found.n_j == 128 * 7 * 7 and found.projected
    assert (found.distances <= found.midpoint_bounds * (1 + 1e-5)).all()
    # Every distance is a verified collision's (else the midpoint's): random features projected to
    # 4 dimensions collide far closer than the midpoint.
    assert (found.distances < 0.5 * found.midpoint_bounds).all()
    curve = api.loss_curve(found, [0.0, float(found.midpoint_bounds.max())], bootstrap=0)
    assert curve["ce_mean"].iloc[0] == 0 and curve["ce_mean"].iloc[1] == pytest.approx(np.log(2))


def _config_with(entry, **collision):
    return {"models": {"r": entry}, "pairs": {"per_class": 2}, "collision": {"m": [10], **collision}}


def test_plan_uses_the_loaded_model_s_taps_and_widths(resnet_weights):
    cfg = config.validate(_config_with({**RESNET, "weights": str(resnet_weights), "taps": ["layer1", "layer4"]}))
    units = {u.layer: u for u in plan.units(cfg) if u.model == "r"}
    assert {layer: u.n_j for layer, u in units.items()} == {"layer1": 64 * 14 * 14, "layer4": 2048}
    assert all(u.arch == "resnet18" and u.projections == 3 for u in units.values())
    the_plan = plan.Plan(cfg)
    assert the_plan.loaded_models == ["r"] and the_plan.trained_models == [] and not the_plan.training_groups
    cfg = config.validate(_config_with({**RESNET, "weights": str(resnet_weights)}))
    assert [u.layer for u in plan.units(cfg) if u.model == "r"] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                                                     "layer3", "layer4", "avgpool", "fc"]


@pytest.mark.parametrize("change,needle", [
    (lambda e, c: c["collision"].update(layers=["layer9"]), r"collision.layers: model 'r' \(resnet18\) has no tap 'layer9'"),
    (lambda e, c: c["collision"].update(methods=["polytope"]), "method polytope needs a registry network"),
    (lambda e, c: e.update(normalization={"mean": [0.5] * 3, "std": [0.2] * 3}), "normalization.mean has 3 values, but mnist5k"),
    (lambda e, c: e.update(kwargs={"weights": "IMAGENET1K_V1"}), r"models.r.kwargs.weights: not allowed"),
    (lambda e, c: e.update(weights="nowhere.pt"), "models.r.weights: file nowhere.pt does not exist"),
    (lambda e, c: e.update(source="python", factory="m:f"), "models.r.small_inputs adapts torchvision architectures only"),
    (lambda e, c: e.pop("weights"), "a torchvision model needs weights \\(a local state_dict file\\) or a train block"),
    (lambda e, c: e.update(taps=["layer1", "nope"]), r"models.r.taps: resnet18 has no layer 'nope'"),
])
def test_bad_loaded_entries_fail_in_one_line_naming_the_key(resnet_weights, change, needle):
    entry = {**RESNET, "weights": str(resnet_weights)}
    cfg = _config_with(entry)
    change(entry, cfg)
    with pytest.raises(ConfigError, match=needle) as err:
        plan.units(config.validate(cfg))
    assert "\n" not in str(err.value)


def test_taps_command_lists_a_loaded_model_s_layer_names_and_widths(tmp_path, resnet_weights):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_config_with({**RESNET, "weights": str(resnet_weights)})))
    out = subprocess.run([sys.executable, "-m", "layerbound", "taps", "r", "--configfile", str(cfg)],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert ["layer1", str(64 * 14 * 14), "*"] in rows and ["layer2.0.add", str(128 * 7 * 7)] in rows
    assert [r[0] for r in rows if len(r) == 3] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                                   "layer4", "avgpool", "fc"]


def test_example_script_runs_and_its_loss_at_eps_zero_is_zero(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "analyze_any_model.py"), "--out", str(tmp_path / "fig")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = dict(re.findall(r"eps = ([0-9.]+): optimal cross-entropy loss ([0-9.]+)", result.stdout))
    assert float(losses["0"]) == 0.0 and float(losses["4"]) <= np.log(2) + 1e-9
    assert (tmp_path / "fig.png").stat().st_size > 1000


def test_wrapped_module_has_taps_by_name_and_its_normalization_inside():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(inplace=True), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 30 * 30, 10))
    model = api.wrap(module, (3, 32, 32), 10, normalization={"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.5]})
    assert api.taps(model) == {"0": 4 * 30 * 30, "1": 4 * 30 * 30, "2": 4 * 30 * 30, "3": 10}
    x = _x(2, (3, 32, 32))
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1)
    with torch.no_grad():
        pre = model.features(x, "0")
        torch.testing.assert_close(pre, module[0]((x - mean) / std).flatten(1))
        assert (pre < 0).any() and torch.equal(model.features(x, "1"), pre.clamp_min(0))


def test_a_weights_file_with_non_finite_values_is_refused_in_one_line(tmp_path):
    from layerbound.core.errors import ModelLoadError
    from layerbound.models.weights import read_weights

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["1.bias"][1] = float("nan")
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ModelLoadError, match=r"w\.pt holds weights that are not finite \(nan or inf in 1\.bias\)$"):
        read_weights(tmp_path / "w.pt", net, "the test network")
    torch.save(net.state_dict(), tmp_path / "ok.pt")
    assert set(read_weights(tmp_path / "ok.pt", net, "the test network")) == {"1.weight", "1.bias"}


def test_a_robustbench_package_that_cannot_be_imported_is_one_line(tmp_path):
    # Installed but broken (the helper's venv: robustbench needs pkg_resources, which is gone): a
    # fake package whose model zoo fails to import stands for it.
    package = tmp_path / "site" / "robustbench"
    (package / "model_zoo").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model_zoo" / "__init__.py").write_text("import pkg_resources_that_is_gone\n")
    weights = tmp_path / "zoo" / "cifar10" / "Linf" / "Standard.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    code = ("import sys; from layerbound.models import loaded; from layerbound.core.errors import ModelLoadError\n"
            f"spec = {{'source': 'robustbench', 'dataset': 'cifar10', 'arch': 'Standard', 'threat_model': 'Linf', "
            f"'model_dir': {str(tmp_path / 'zoo')!r}}}\n"
            "try:\n    loaded.network(spec, (3, 32, 32), 10)\n"
            "except ModelLoadError as err:\n    print(err); sys.exit(3)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert out.returncode == 3, out.stderr[-2000:]
    assert out.stdout.startswith("robustbench is installed but cannot be imported (ModuleNotFoundError: No module "
                                 "named 'pkg_resources_that_is_gone')") and out.stdout.count("\n") == 1
