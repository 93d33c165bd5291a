import json
import os
import subprocess
import sys

import pytest
import torch

from layerbound import api
from layerbound.models import checkpoint, registry as models
from layerbound.core import store


def _model():
    torch.manual_seed(0)
    return models.build("cnn4", (1, 28, 28), 10).eval()


def test_roundtrip_loads_with_weights_only_and_reproduces_outputs(tmp_path):
    net = _model()
    path = tmp_path / "m.pt"
    checkpoint.save(path, net, {"clean_test_accuracy": 0.5})
    payload = torch.load(path, weights_only=True)  # must not need pickled classes
    assert payload["arch"] == "cnn4"
    loaded = checkpoint.load(path, expect={"arch": "cnn4", "input_shape": (1, 28, 28), "num_classes": 10})
    assert not loaded.training
    x = torch.rand(5, 1, 28, 28)
    assert torch.equal(loaded(x), net(x))
    assert json.loads((tmp_path / "m.json").read_text()) == {"clean_test_accuracy": 0.5}
    assert checkpoint.load_metrics(path)["clean_test_accuracy"] == 0.5


def test_architecture_mismatch_fails_naming_file_and_fields(tmp_path):
    path = tmp_path / "m.pt"
    checkpoint.save(path, _model(), {})
    with pytest.raises(checkpoint.CheckpointMismatch) as err:
        checkpoint.load(path, expect={"arch": "medium", "input_shape": (3, 32, 32)})
    message = str(err.value)
    assert str(path) in message
    assert "arch: checkpoint has 'cnn4', config asks for 'medium'" in message
    assert "input_shape" in message


def test_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(checkpoint.CheckpointMismatch, match="not a layerbound checkpoint"):
        checkpoint.load(path)


class _Shell:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_plain_pickle_that_would_run_a_command_is_refused_in_one_line_without_a_warning(tmp_path, monkeypatch):
    import pickle
    import warnings

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"state_dict": _Shell()}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")   # torch warns about protocol 4 unless the loader silences it
        with pytest.raises(checkpoint.CheckpointMismatch, match=r"plain.pt is not a loadable checkpoint"):
            checkpoint.load(path)
        from layerbound.core.errors import ModelLoadError
        from layerbound.models.weights import read_weights
        with pytest.raises(ModelLoadError, match="cannot be read with torch.load"):
            read_weights(path, torch.nn.Linear(2, 2), "a linear layer")
    assert [str(w.message) for w in caught] == []
    assert not (tmp_path / "PWNED").exists()


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "out.bin"

    def failing_write(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.atomic_write(target, failing_write)
    assert list(tmp_path.iterdir()) == []


def test_non_finite_weights_are_neither_written_nor_loaded(tmp_path):
    net = _model()
    with torch.no_grad():
        net.state_dict()[next(iter(net.state_dict()))].view(-1)[0] = float("nan")
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"not writing .*m\.pt: its weights are not finite \(nan or inf in "):
        checkpoint.save(tmp_path / "m.pt", net, {})
    assert list(tmp_path.iterdir()) == []
    # A file written by other means: refused on loading, in one line naming it.
    good = _model()
    payload = {"format": checkpoint.FORMAT, "arch": "cnn4", "input_shape": [1, 28, 28], "num_classes": 10,
               "padding": "same", "state_dict": {k: v.clone() for k, v in good.state_dict().items()}}
    payload["state_dict"][next(iter(payload["state_dict"]))].view(-1)[0] = float("inf")
    torch.save(payload, tmp_path / "inf.pt")
    with pytest.raises(checkpoint.CheckpointMismatch) as err:
        checkpoint.load(tmp_path / "inf.pt")
    assert "holds weights that are not finite" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("header, needle", [
    ({"input_shape": [1, 30000, 30000]}, "does not match the 'cnn4' network it records: shapes differ"),
    ({"num_classes": 10 ** 9}, "does not match the 'cnn4' network it records: shapes differ"),
    ({"input_shape": [1, -28, 28]}, "is malformed"),
    ({"num_classes": "10"}, "is malformed"),
    ({"arch": "no_such_net"}, "records a network layerbound cannot build"),
])
def test_a_crafted_header_is_refused_in_one_line_without_building_the_network_it_asks_for(tmp_path, header, needle):
    # Built on the meta device first: a header asking for a 270 GB network allocates nothing (the
    # child process may use 6 GB at most).
    payload = {"format": checkpoint.FORMAT, "arch": "cnn4", "input_shape": [1, 28, 28], "num_classes": 10,
               "padding": "same", "state_dict": dict(_model().state_dict()), **header}
    torch.save(payload, tmp_path / "crafted.pt")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
            "from layerbound.models import checkpoint\n"
            f"try:\n    checkpoint.load({str(tmp_path / 'crafted.pt')!r})\n"
            "except checkpoint.CheckpointMismatch as err:\n    print(err); sys.exit(3)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 3, out.stderr[-2000:]
    assert needle in out.stdout and out.stdout.count("\n") == 1


def test_a_checkpoint_whose_sidecar_cannot_be_written_is_removed(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    checkpoint.save(path, _model(), {"run": 1})
    real = store.atomic_write

    def full_disk_for_json(target, write):
        if str(target).endswith(".json"):
            raise store.WriteError(f"cannot write {target}: No space left on device; nothing was written")
        return real(target, write)

    monkeypatch.setattr(store, "atomic_write", full_disk_for_json)
    with pytest.raises(store.WriteError) as err:
        checkpoint.save(path, _model(), {"run": 2})
    assert "m.pt was removed with it" in str(err.value)
    # Never a new checkpoint beside the old sidecar: the checkpoint is gone (Snakemake retrains it).
    assert not path.exists() and json.loads((tmp_path / "m.json").read_text()) == {"run": 1}


# --- a checkpoint never chooses code -----------------------------------------------------------------

def _crafted(path, spec, state_dict=None):
    """A loaded-model checkpoint as an attacker would write it: any recorded source spec."""
    torch.save({"format": checkpoint.LOADED_FORMAT, "arch": "net", "input_shape": [1, 28, 28], "num_classes": 10,
                "source": json.dumps(spec), "state_dict": state_dict or {}}, path)
    return path


def _side_effect_module(folder, marker):
    """A module that writes `marker` when imported, with a factory that does too."""
    (folder / "evil_nets.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('imported')\n"
        "def make():\n"
        f"    pathlib.Path({str(marker)!r}).write_text('called')\n")


def test_a_checkpoint_naming_a_stdlib_function_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = _crafted(tmp_path / "m.pt", {"dataset": "mnist5k", "source": "python", "factory": "subprocess:getoutput",
                                         "kwargs": {"cmd": f"touch {marker}"}})
    with pytest.raises(checkpoint.CheckpointMismatch) as err:
        api.load_model(path)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "'subprocess:getoutput'" in message and "never chooses" in message
    assert not marker.exists()


def test_a_checkpoint_naming_a_module_with_import_side_effects_imports_nothing(tmp_path, tiny_factory):
    marker = tmp_path / "imported"
    _side_effect_module(tmp_path, marker)
    path = _crafted(tmp_path / "m.pt", {"dataset": "mnist5k", "source": "python", "factory": "evil_nets:make",
                                         "kwargs": {}, "normalization": None})
    with pytest.raises(checkpoint.CheckpointMismatch, match="never chooses"):
        api.load_model(path)
    # With the caller's own entry the network comes from the entry's factory, which must be the
    # recorded one: the difference is named, and neither module is imported.
    with pytest.raises(checkpoint.CheckpointMismatch) as err:
        api.load_model(path, dataset="mnist5k", entry={"source": "python", "factory": tiny_factory})
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert f"factory: the checkpoint has 'evil_nets:make', the model entry '{tiny_factory}'" in message
    assert not marker.exists() and "evil_nets" not in sys.modules
    assert tiny_factory.split(":")[0] not in sys.modules


def test_a_checkpoint_naming_code_outside_the_checkout_fails_in_one_line_on_the_command_line(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    marker = tmp_path / "imported"
    _side_effect_module(outside, marker)
    path = _crafted(tmp_path / "m.pt", {"dataset": "mnist5k", "source": "python", "factory": "evil_nets:make",
                                         "kwargs": {}, "normalization": None})
    result = subprocess.run([sys.executable, "-m", "layerbound", "attack", "--checkpoint", str(path),
                             "--job-json", json.dumps({"model": "m"}), "--out", "a.csv", "--summary", "a.json"],
                            cwd=outside, env={**os.environ, "PYTHONPATH": str(outside)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("device: cpu")   # the device line, then the error
    assert lines[1].startswith("layerbound attack: error: checkpoint") and "'evil_nets:make'" in lines[1]
    assert not marker.exists() and not (outside / "a.csv").exists()


def test_a_recorded_registry_spec_is_validated_like_a_config_entry(tmp_path):
    # `pretrained` would make torchvision download weights; the config refuses it, so does a checkpoint.
    path = _crafted(tmp_path / "m.pt", {"dataset": "mnist5k", "source": "torchvision", "arch": "resnet18",
                                         "kwargs": {"pretrained": True}, "small_inputs": True, "normalization": None})
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"kwargs\.pretrained: not allowed"):
        checkpoint.load(path)


def test_a_python_checkpoint_loads_with_the_entry_that_names_its_factory(tmp_path, tiny_factory):
    entry = {"source": "python", "factory": tiny_factory, "kwargs": {"width": 7}}
    model = api.load_model(entry, dataset="mnist5k")
    checkpoint.save(tmp_path / "m.pt", model, {})
    again = api.load_model(tmp_path / "m.pt", dataset="mnist5k", entry=entry)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(again(x), model(x))
    with pytest.raises(checkpoint.CheckpointMismatch, match="kwargs: the checkpoint has {'width': 7}, the model entry {'width': 8}"):
        api.load_model(tmp_path / "m.pt", dataset="mnist5k", entry={**entry, "kwargs": {"width": 8}})


def test_a_network_that_needs_real_tensors_to_build_still_loads(tmp_path, monkeypatch):
    # A factory that reads a tensor's value while building (as torchvision's RegNets and timm-style
    # drop-path schedules do) cannot run on the meta device; the entry's own code builds it for real.
    (tmp_path / "real_nets.py").write_text(
        "import torch\n"
        "def make():\n"
        "    width = int(torch.linspace(4, 8, 2)[1].item())\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, width), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(width, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = {"source": "python", "factory": "real_nets:make"}
    model = api.load_model(entry, dataset="mnist5k")
    checkpoint.save(tmp_path / "m.pt", model, {})
    again = api.load_model(tmp_path / "m.pt", dataset="mnist5k", entry=entry)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(again(x), model(x))


def test_a_loaded_checkpoint_whose_header_is_not_its_datasets_is_refused_before_building(tmp_path):
    # The header's class count would size the network: it must be the recorded dataset's.
    spec = {"source": "torchvision", "arch": "resnet18", "small_inputs": True, "dataset": "mnist5k"}
    torch.save({"format": checkpoint.LOADED_FORMAT, "arch": "resnet18", "input_shape": [1, 28, 28],
                "num_classes": 10 ** 6, "source": json.dumps(spec), "state_dict": {}}, tmp_path / "big.pt")
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"big\.pt records input shape \(1, 28, 28\) and 1000000 "
                                                            r"classes, not mnist5k's \(1, 28, 28\) and 10$"):
        checkpoint.load(tmp_path / "big.pt")


def test_only_registry_networks_of_piecewise_linear_modules_skip_the_certificates_reach_test():
    from layerbound.collide import features
    from layerbound.models import architectures

    for arch in architectures.ARCHITECTURES:
        assert features.piecewise_linear(models.build(arch, (1, 28, 28), 10)), arch
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Tanh())
    assert not features.piecewise_linear(api.wrap(net, (1, 28, 28), 10))
